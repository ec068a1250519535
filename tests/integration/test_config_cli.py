"""
`gatewayd config init|lint` and config errors at `gatewayd run`, as a user runs
them (`python -m gatewayd ...` in a child process), and the shipped etc/ files
serving real PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.support.gateway import ROOT, run_gatewayd
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def test_init_then_lint(tmp_path: Path) -> None:
    target = tmp_path / "gatewayd.yaml"
    done = run_gatewayd("config", "init", "-c", str(target), "--example", "multi-pool")
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"Config file '{target}' was created successfully.\n", "")

    again = run_gatewayd("config", "init", "-c", str(target))
    assert again.returncode == 1
    assert again.stderr == f"Config file '{target}' already exists (use --force to overwrite it)\n"

    forced = run_gatewayd("config", "init", "-c", str(target), "--force")
    assert (forced.returncode, forced.stdout) == (
        0, f"Config file '{target}' was overwritten successfully.\n")

    lint = run_gatewayd("config", "lint", "-c", str(target), cwd=tmp_path)
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, "global config is valid\n", "")


def test_init_and_lint_in_the_working_directory(tmp_path: Path) -> None:
    assert run_gatewayd("config", "init", cwd=tmp_path).returncode == 0
    assert (tmp_path / "gatewayd.yaml").exists()
    lint = run_gatewayd("config", "lint", cwd=tmp_path)
    assert (lint.returncode, lint.stdout) == (0, "global config is valid\n")


def test_lint_shipped_files() -> None:
    lint = run_gatewayd("config", "lint", "-c", "etc/gatewayd.yaml",
                        "-p", "etc/gatewayd_plugins.yaml")
    assert (lint.returncode, lint.stdout, lint.stderr) == (
        0, "global config is valid\nplugins config is valid\n", "")


def test_lint_errors_one_line_each(tmp_path: Path) -> None:
    config = tmp_path / "gatewayd.yaml"
    config.write_text(
        "clients: {default: {writes: {}, reads: {}}}\n"
        "pools: {default: {writes: {size: 0}, reads: {}}}\n"
        "proxies: {default: {writes: {}, reads: {}}}\n"
        "servers:\n"
        "  default:\n"
        "    loadBalancer:\n"
        "      strategy: WEIGHTED_ROUND_ROBIN\n"
        "      loadBalancingRules: [{condition: DEFAULT, distribution: [{proxyName: raeds}]}]\n")
    lint = run_gatewayd("config", "lint", "-c", str(config), cwd=tmp_path)
    assert lint.returncode == 1 and lint.stdout == ""
    assert lint.stderr.splitlines() == [
        f"{config}: pools.default.writes.size: must be >= 1 (got 0)",
        f"{config}: servers.default.loadBalancer.loadBalancingRules[0].distribution[0].proxyName: "
        "unknown block 'raeds' of proxies.default (blocks: writes, reads) (did you mean 'reads'?)",
    ]


def test_run_refuses_a_bad_config_naming_file_key_and_variable(tmp_path: Path) -> None:
    config = tmp_path / "gatewayd.yaml"
    config.write_text("clients: {default: {writes: {dialtimeout: 5s}}}\n")
    plugins = tmp_path / "gatewayd_plugins.yaml"
    plugins.write_text("")
    done = run_gatewayd("run", "-c", str(config), "-p", str(plugins), timeout=60,
                        env={"GATEWAYD_POOLS_DEFAULT_WRITES_SIZ": "3"})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"gatewayd: {config}: clients.default.writes.dialtimeout: unknown key "
        "(did you mean 'dialTimeout'?)",
        "gatewayd: <environment>: GATEWAYD_POOLS_DEFAULT_WRITES_SIZ: pools.default.writes has no "
        "key 'SIZ' (did you mean 'SIZE'?)",
    ]


def _wait_for_port(proc: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gateway exited"
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


def test_shipped_config_serves_postgresql(service_pg: str, tmp_path: Path) -> None:
    """`make run`'s files, moved to free ports with GATEWAYD_* variables, proxy real queries."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               GATEWAYD_SERVERS_DEFAULT_ADDRESS=f"127.0.0.1:{port}",
               GATEWAYD_METRICS_DEFAULT_ADDRESS="127.0.0.1:0",
               GATEWAYD_API_HTTPADDRESS="127.0.0.1:0",
               GATEWAYD_API_GRPCADDRESS="127.0.0.1:0",
               GATEWAYD_POOLS_DEFAULT_WRITES_SIZE="2",
               GATEWAYD_CLIENTS_DEFAULT_WRITES_DIALTIMEOUT="5s")
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatewayd", "run", "-c", "etc/gatewayd.yaml",
             "-p", "etc/gatewayd_plugins.yaml"],
            cwd=str(ROOT), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            _wait_for_port(proc, port)
        except AssertionError:
            raise AssertionError(log.read_text()) from None
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("select 40 + 2").fetchone() == (42,)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
