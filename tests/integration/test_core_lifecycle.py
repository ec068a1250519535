"""
Starting and stopping: SIGTERM drains running sessions (listener closed at
once, exit 0), drainTimeout closes sessions that do not finish (57P01), the
gateway embeds in another Twisted application, and twistd runs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.clients import env, psql
from tests.support.gateway import ROOT, Gateway, base_config
from tests.support.pg import SERVICE_DSN, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("core_lifecycle")]


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _running(application_name: str, query: str) -> bool:
    with psycopg.connect(SERVICE_DSN, autocommit=True) as conn:
        return conn.execute(
            "select 1 from pg_stat_activity where application_name = %s and state = 'active' "
            "and query = %s", (application_name, query)).fetchone() is not None


class Query(threading.Thread):
    def __init__(self, dsn: str, sql: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.sql = dsn, sql
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                self.result = conn.execute(self.sql).fetchone()
        except BaseException as e:  # noqa: BLE001
            self.error = e


def test_sigterm_drains_a_running_query_then_exits_0(service_pg: str) -> None:
    gw = Gateway(base_config({"writes": service_pg}, pool_size=2)).start()
    try:
        sql = "select pg_sleep(1), 'finished'"
        job = Query(gw.dsn(application_name="core-drain"), sql)
        job.start()
        wait_until(lambda: _running("core-drain", sql), what="query running")
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        # The listener closes at once: new clients are refused while the session drains.
        wait_until(lambda: _refused(gw.port), what="listener closed")
        job.join(30)
        assert job.error is None and job.result == ("", "finished")
        assert gw.proc.wait(30) == 0
    finally:
        gw.stop()
    assert "draining 1 client connection" in gw.output()


def test_drain_timeout_closes_a_stuck_session_with_57p01(service_pg: str) -> None:
    gw = Gateway(base_config({"writes": service_pg}, pool_size=2, drainTimeout="1s")).start()
    try:
        sql = "select pg_sleep(30)"
        job = Query(gw.dsn(application_name="core-stuck"), sql)
        job.start()
        wait_until(lambda: _running("core-stuck", sql), what="query running")
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        job.join(20)
        assert not job.is_alive(), "the session outlived drainTimeout"
        assert isinstance(job.error, psycopg.OperationalError), job.error
        # AdminShutdown (57P01) when the gateway could say so, else a closed connection.
        assert (getattr(job.error, "sqlstate", None) == "57P01"
                or "closed" in str(job.error)), job.error
        assert gw.proc.wait(20) == 0
    finally:
        gw.stop()
    # The query was cancelled on PostgreSQL too, not left running as an orphan
    # until it finishes by itself (30 s; PostgreSQL does not notice a closed
    # socket while it computes).
    wait_until(lambda: not _running("core-stuck", sql), timeout=10,
               what="the orphaned query cancelled on PostgreSQL")


def test_embedded_in_a_twisted_application(service_pg: str, tmp_path: Path) -> None:
    gw = Gateway(base_config({"writes": service_pg}, pool_size=2), workdir=tmp_path)
    config, plugins = gw.write_config()
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "embed_app.py"),
                           str(config), str(plugins)], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=60, env=dict(env(), PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {s["step"]: s for s in map(json.loads, proc.stdout.strip().splitlines())}
    assert steps["query"]["code"] == 0, steps["query"]
    assert steps["query"]["out"] == "5432|42"
    stopped = steps["stopped"]
    assert stopped["gateway_running"] is False and stopped["app_running"] is True
    assert stopped["refused"] is True, "the listener must be closed when the service stops"
    assert stopped["pools"] == [[0, 0]], "pooled sockets must be closed when the service stops"
    assert stopped["reactor_alive"] is True


def test_twistd_plugin_serves_a_query(service_pg: str, tmp_path: Path) -> None:
    gw = Gateway(base_config({"writes": service_pg}, pool_size=2), workdir=tmp_path)
    config, plugins = gw.write_config()
    twistd = Path(sys.executable).with_name("twistd")
    log = open(tmp_path / "twistd.log", "wb")
    proc = subprocess.Popen([str(twistd), "-n", "--pidfile=", "gatewayd", "--config", str(config),
                             "--plugin-config", str(plugins)], cwd=str(tmp_path), stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    log.close()
    try:
        wait_until(lambda: proc.poll() is not None or not _refused(gw.port), timeout=30,
                   what="twistd listening")
        assert proc.poll() is None, (tmp_path / "twistd.log").read_text()
        out = psql(gw.dsn(), "select 'through twistd'")
        assert out.stdout.strip() == "through twistd"
        proc.send_signal(signal.SIGTERM)
        # twistd re-raises the stop signal after a clean shutdown (Twisted's
        # convention, which service managers count as success).
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "twistd.log").read_text()
    assert "(TCP Port" in log and "Main loop terminated" in log and "Server Shut Down" in log
    assert "Traceback" not in log and "Unhandled" not in log, log
