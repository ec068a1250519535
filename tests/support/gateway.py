"""
Run the real gateway (`python -m gatewayd run`) as a child process for
integration tests, on a config written to a temp dir and a port chosen free
at run time.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def base_config(blocks: dict[str, str], *, group: str = "default", pool_size: int = 4,
                **server: Any) -> dict[str, Any]:
    """A global config with one server group balancing over C{blocks} {name: address}."""
    return {
        "loggers": {group: {"output": ["console"], "level": "info", "noColor": True}},
        "metrics": {group: {"enabled": False}},
        "clients": {group: {name: {"address": addr, "retries": 1, "backoff": "100ms",
                                   "dialTimeout": "5s"} for name, addr in blocks.items()}},
        "pools": {group: {name: {"size": pool_size} for name in blocks}},
        "proxies": {group: {name: {"healthCheckPeriod": "60s"} for name in blocks}},
        "servers": {group: {"address": "127.0.0.1:0", **server}},
        "api": {"enabled": False},
    }


class Gateway:
    """
    A gateway child process.  C{start()} waits until it accepts TCP connections
    on every server group's port; C{stop()} sends SIGTERM and returns the exit code.
    """

    def __init__(self, config: dict[str, Any], plugins: dict[str, Any] | None = None,
                 workdir: Path | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.config = copy.deepcopy(config)
        self.plugins = plugins or {"plugins": []}
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="gw-"))
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_path = self.workdir / "gateway.log"

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    def dsn(self, user: str = "postgres", dbname: str = "postgres", password: str = "password",
            group: str | None = None, **extra: str) -> str:
        port = self.ports[group] if group else self.port
        parts = {"host": "127.0.0.1", "port": str(port), "user": user, "dbname": dbname,
                 "password": password, "sslmode": "disable", "gssencmode": "disable"}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def write_config(self) -> tuple[Path, Path]:
        for group, server in self.config["servers"].items():
            if server.get("network", "tcp") == "tcp":
                host = server.get("address", "127.0.0.1:0").rsplit(":", 1)[0]
                port = self.ports.get(group) or free_port()
                server["address"] = f"{host}:{port}"
                self.ports[group] = port
        cfg, plugins = self.workdir / "gatewayd.yaml", self.workdir / "gatewayd_plugins.yaml"
        cfg.write_text(yaml.safe_dump(self.config, sort_keys=False))
        plugins.write_text(yaml.safe_dump(self.plugins, sort_keys=False))
        return cfg, plugins

    def start(self, timeout: float = 30.0) -> Gateway:
        for _ in range(3):
            cfg, plugins = self.write_config()
            env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gatewayd", "run", "-c", str(cfg), "-p", str(plugins),
                 *self.extra_args], cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            if self._wait_listening(timeout):
                return self
            code = self.proc.poll()
            if code is None:
                self.stop()
                raise AssertionError(f"gateway did not listen in {timeout}s:\n{self.output()}")
            if "Address already in use" not in self.output():
                raise AssertionError(f"gateway exited with {code}:\n{self.output()}")
            self.ports.clear()  # lost a port race: pick new ones
        raise AssertionError("gateway could not bind a free port three times")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending and time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            for port in list(pending):
                with socket.socket() as s:
                    s.settimeout(0.5)
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        pending.discard(port)
            if pending:
                time.sleep(0.05)
        return not pending

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_gatewayd(*args: str, timeout: float = 60.0, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a one-shot `gatewayd` CLI command (config lint, version...)."""
    return subprocess.run([sys.executable, "-m", "gatewayd", *args], cwd=str(cwd or ROOT),
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
