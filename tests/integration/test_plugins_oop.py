"""
Out-of-process plugins in a real gateway: traffic through a gRPC plugin, the
plugin SIGKILLed under pgbench load (fail-open, reloaded within about one
health-check period with its priority), and plugins that must be refused
(wrong checksum, missing file, no handshake, garbage handshake) while the
gateway keeps serving.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from tests.support.gateway import Gateway, base_config
from tests.support.pg import wait_until
from tests.support.plugins import make_plugin_executable
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

DIRECT = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
#: The echo plugin subscribes to onTrafficFromClient, onTrafficFromServer and onClosed.
ECHO_HOOKS = "['onClosed', 'onTrafficFromClient', 'onTrafficFromServer']"


def workdir(tmp_path: Path) -> Path:
    """The gateway's config and log files, inside the test's temp dir."""
    path = tmp_path / "gateway"
    path.mkdir()
    return path


def psql(gateway: Gateway, sql: str, dbname: str = "test") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", "-X", "-At", "-d", gateway.dsn(dbname=dbname), "-c", sql],
                          capture_output=True, text=True, timeout=60)


def plugin_pids(gateway: Gateway, marker: str) -> list[int]:
    """Live child processes of the gateway whose command line mentions C{marker}."""
    assert gateway.proc is not None
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == gateway.proc.pid and state != "Z" and marker in cmdline:
            pids.append(int(entry))
    return pids


def loaded_lines(gateway: Gateway, name: str) -> list[tuple[int, int]]:
    """(priority, pid) of every 'plugin <name> loaded' log line, in order."""
    pattern = re.compile(rf"plugin {re.escape(name)} loaded: priority (\d+), .* pid=(\d+)")
    return [(int(m[1]), int(m[2])) for m in pattern.finditer(gateway.output())]


@pytest.fixture(scope="module")
def bench_db(service_pg: str) -> Iterator[str]:
    """A fresh database initialised by pgbench on the service PostgreSQL."""
    name = f"gw_oop_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DIRECT, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", "5432",
                        "-U", "postgres", name], check=True, capture_output=True, timeout=120)
        yield name
    finally:
        with psycopg.connect(DIRECT, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def echo(tmp_path: Path) -> tuple[str, str]:
    return make_plugin_executable(tmp_path, "echo-plugin")


def test_plugin_killed_under_load_fails_open_and_is_reloaded_with_its_priority(
        service_pg: str, bench_db: str, echo: tuple[str, str], tmp_path: Path) -> None:
    path, digest = echo
    http = free_port()
    config = base_config({"writes": service_pg}, pool_size=8)
    config["api"] = {"enabled": True, "httpAddress": f"127.0.0.1:{http}",
                     "grpcAddress": f"127.0.0.1:{free_port()}"}
    plugins = {"healthCheckPeriod": "500ms", "reloadOnCrash": True, "plugins": [
        # A disabled entry still takes a priority slot: echo's priority is 1001.
        {"name": "unused", "enabled": False, "localPath": "/nonexistent", "checksum": "0" * 64},
        {"name": "echo", "localPath": path, "checksum": digest},
    ]}
    gateway = Gateway(config, plugins, workdir=workdir(tmp_path)).start()
    try:
        wait_until(lambda: loaded_lines(gateway, "echo"), what="the echo plugin to load")
        [(priority, first_pid)] = loaded_lines(gateway, "echo")
        assert priority == 1001
        assert f"hooks {ECHO_HOOKS}" in gateway.output()
        assert plugin_pids(gateway, path) == [first_pid]
        answer = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{http}/v1/GatewayDPluginService/GetPlugins", timeout=10).read())
        assert [c["id"]["name"] for c in answer["configs"]] == ["echo"]
        assert sorted(answer["configs"][0]["hooks"]) == [14, 16, 18]

        done = psql(gateway, "select 'through the plugin'")
        assert done.returncode == 0 and done.stdout.strip() == "through the plugin", done.stderr

        bench = subprocess.Popen(
            ["pgbench", "-n", "-S", "-c", "4", "-T", "4", "-d", gateway.dsn(dbname=bench_db)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def bench_running() -> bool:
                if bench.poll() is not None:
                    out, err = bench.communicate()
                    raise AssertionError(f"pgbench ended before the plugin was killed:\n{out}{err}")
                with psycopg.connect(DIRECT, autocommit=True) as conn:
                    # Sessions the gateway opened for pgbench on the bench database.
                    return conn.execute("select count(*) from pg_stat_activity where datname = %s",
                                        (bench_db,)).fetchone()[0] >= 4
            wait_until(bench_running, what="pgbench traffic through the gateway")
            os.kill(first_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_until(lambda: len(loaded_lines(gateway, "echo")) == 2, timeout=15,
                       what="the plugin to be reloaded")
            reload_seconds = time.monotonic() - killed_at
            stdout, stderr = bench.communicate(timeout=60)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
        assert bench.returncode == 0, stdout + stderr
        assert re.search(r"number of failed transactions: 0 \(", stdout), stdout
        processed = int(re.search(r"number of transactions actually processed: (\d+)", stdout)[1])
        assert processed > 0

        output = gateway.output()
        assert "plugin echo failed its health check (process ended: signal 9); " \
               "unregistered, reloading" in output, output
        assert "plugin echo reloaded with priority 1001" in output
        # Calls to the dead plugin failed open until the health check noticed.
        assert re.search(r"Plugin echo failed in onTraffic\w+ \(failureMode open\)", output), output
        (_, _), (priority, new_pid) = loaded_lines(gateway, "echo")
        assert priority == 1001 and new_pid != first_pid
        # One health period (0.5 s) to notice, plus a Python process start-up.
        assert reload_seconds < 10, reload_seconds
        assert plugin_pids(gateway, path) == [new_pid]
        answer = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{http}/v1/GatewayDPluginService/GetPlugins", timeout=10).read())
        assert [c["id"]["name"] for c in answer["configs"]] == ["echo"]

        done = psql(gateway, "select 'after the reload'")
        assert done.returncode == 0 and done.stdout.strip() == "after the reload", done.stderr
    finally:
        assert gateway.stop() == 0, gateway.output()
    assert plugin_pids(gateway, path) == []


def test_bad_plugins_are_refused_and_the_gateway_serves(service_pg: str, echo: tuple[str, str],
                                                        tmp_path: Path) -> None:
    path, digest = echo
    entries: list[dict[str, Any]] = [
        {"name": "wrong-checksum", "localPath": path, "checksum": "ab" * 32},
        {"name": "missing-file", "localPath": str(tmp_path / "no-such-plugin"),
         "checksum": digest},
        {"name": "silent", "localPath": path, "checksum": digest, "args": ["--mode", "silent"]},
        {"name": "garbage", "localPath": path, "checksum": digest, "args": ["--mode", "garbage"]},
        {"name": "good", "localPath": path, "checksum": digest},
    ]
    plugins = {"startTimeout": "1s", "healthCheckPeriod": "500ms", "plugins": entries}
    gateway = Gateway(base_config({"writes": service_pg}), plugins,
                      workdir=workdir(tmp_path)).start()
    try:
        expected = {
            "wrong-checksum": f"plugin wrong-checksum not loaded: checksum mismatch: {path} "
                              f"has sha256 {digest}",
            "missing-file": f"plugin missing-file not loaded: localPath "
                            f"'{tmp_path / 'no-such-plugin'}' does not exist",
            "silent": "plugin silent not loaded: no handshake line within 1s (startTimeout); "
                      "killed it",
            "garbage": "plugin garbage not loaded: unrecognized handshake line "
                       "'Hello, I am definitely not a plugin'",
        }
        wait_until(lambda: all(line in gateway.output() for line in expected.values())
                   and loaded_lines(gateway, "good"), what="every refusal to be logged")
        output = gateway.output()
        for name, line in expected.items():
            [logged] = [x for x in output.splitlines() if f"plugin {name} not loaded" in x]
            assert " ERR " in logged, logged
        assert loaded_lines(gateway, "good")[0][0] == 1004
        for name in expected:
            assert f"plugin {name} loaded" not in output
        # Refused processes are gone; only the good plugin runs.
        wait_until(lambda: len(plugin_pids(gateway, path)) == 1, what="refused plugins killed")

        done = psql(gateway, "select 'still serving'")
        assert done.returncode == 0 and done.stdout.strip() == "still serving", done.stderr
    finally:
        assert gateway.stop() == 0, gateway.output()
