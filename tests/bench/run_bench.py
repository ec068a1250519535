#!/usr/bin/env python3
"""
`make bench`: the shared harness (../shared/bench/run.py) with gatewayd beside
PostgreSQL direct, PgBouncer and Pgpool-II, in one run.

The gateway runs on the shipped etc/ config; the harness's placeholders reach
it through GatewayD-style environment overrides (listen address, backend
address, pool size), which is also how a container deployment would set them.

Extra arguments are passed to run.py, e.g. `make bench BENCH_ARGS="-T 5 --rounds 1"`.
Needs: apt-get install pgbouncer pgpool2 (see ../shared/bench/README.md).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT.parent / "shared" / "bench" / "run.py"


def gateway_command(reactor: str = "epoll", pool_size: int = 20) -> str:
    env = {
        "GATEWAYD_SERVERS_DEFAULT_ADDRESS": "127.0.0.1:{port}",
        "GATEWAYD_CLIENTS_DEFAULT_WRITES_ADDRESS": "{pg_host}:{pg_port}",
        "GATEWAYD_POOLS_DEFAULT_WRITES_SIZE": str(pool_size),
        "GATEWAYD_LOGGERS_DEFAULT_LEVEL": "warn",
        "GATEWAYD_METRICS_DEFAULT_ENABLED": "false",
        "GATEWAYD_API_ENABLED": "false",
    }
    assignments = " ".join(f"{k}={v}" for k, v in env.items())
    python = ROOT / ".venv" / "bin" / "python"
    return (f"cd {shlex.quote(str(ROOT))} && env {assignments} {python} -m gatewayd run "
            f"--reactor {reactor} -c etc/gatewayd.yaml -p etc/gatewayd_plugins.yaml")


def main(argv: list[str]) -> int:
    if not HARNESS.exists():
        print(f"bench harness not found at {HARNESS}", file=sys.stderr)
        return 2
    args = [sys.executable, str(HARNESS), "--manage-cluster",
            "--gateway", gateway_command(), "--gateway-name", "gatewayd",
            "--json", "/tmp/gatewayd-bench.json", "--markdown", "/tmp/gatewayd-bench.md", *argv]
    print("+", " ".join(shlex.quote(a) for a in args), flush=True)
    return subprocess.call(args, cwd=str(HARNESS.parent), env=dict(os.environ))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or shlex.split(os.environ.get("BENCH_ARGS", ""))))
