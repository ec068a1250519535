"""
Plugins through a live gateway with real clients: the SQL firewall example
(simple and extended protocol, inside a transaction), request and response
rewrites, and every hook firing with GatewayD's payload keys.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support.gateway import Gateway, base_config
from gatewayd.hooks import names
from tests.support.pg import wait_until

pytestmark = pytest.mark.integration

FIREWALL = {"name": "gatewayd-plugin-sql-firewall",
            "module": "examples.sql_firewall.plugin:SQLFirewall"}


def psql(gateway: Gateway, *commands: str) -> subprocess.CompletedProcess[str]:
    argv = ["psql", "-X", "-At", "-d", gateway.dsn(dbname="test")]
    for command in commands:
        argv += ["-c", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def firewall(service_pg: str):
    with Gateway(base_config({"writes": service_pg}), {"plugins": [FIREWALL]}) as gateway:
        yield gateway


def test_firewall_blocks_drop_from_psql_and_connection_stays_usable(firewall: Gateway) -> None:
    table = f"gw_fw_{uuid.uuid4().hex[:8]}"
    result = psql(firewall, f"create table {table}(x int)", f"drop table {table}",
                  "select 'still usable'")
    assert "statement refused by the SQL firewall" in result.stderr
    assert "still usable" in result.stdout
    with psycopg.connect(firewall.dsn(dbname="test"), autocommit=True) as conn:
        assert conn.execute("select to_regclass(%s) is not null", (table,)).fetchone() == (True,)
    subprocess.run(["psql", "-X", "-d", "host=127.0.0.1 port=5432 user=postgres dbname=test",
                    "-c", f"drop table {table}"], check=True, capture_output=True)


def test_firewall_blocks_extended_protocol_with_42501(firewall: Gateway) -> None:
    with psycopg.connect(firewall.dsn(dbname="test"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("DROP TABLE IF EXISTS gw_never_there", prepare=True)
        assert info.value.sqlstate == "42501"
        assert conn.execute("select %s::int + 1", (41,)).fetchone() == (42,)


def test_refused_statement_aborts_the_transaction(firewall: Gateway, service_pg: str) -> None:
    table = f"gw_tx_{uuid.uuid4().hex[:8]}"
    direct = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute(f"create table {table}(x int)")
    try:
        with psycopg.connect(firewall.dsn(dbname="test")) as conn:
            conn.execute(f"insert into {table} values (1)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"drop table {table}")
            # psycopg saw the transaction fail (status E) and rolls back; even a
            # COMMIT could not keep the insert: the backend transaction is aborted.
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            conn.rollback()
            assert conn.execute("select 1").fetchone() == (1,)
        with psycopg.connect(direct, autocommit=True) as conn:
            assert conn.execute(f"select count(*) from {table}").fetchone() == (0,)
    finally:
        with psycopg.connect(direct, autocommit=True) as conn:
            conn.execute(f"drop table if exists {table}")


def test_commit_after_refusal_does_not_commit(firewall: Gateway) -> None:
    table = f"gw_tx2_{uuid.uuid4().hex[:8]}"
    direct = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute(f"create table {table}(x int)")
    try:
        result = psql(firewall, "begin", f"insert into {table} values (1)", f"drop table {table}",
                      "commit")
        assert "refused" in result.stderr
        with psycopg.connect(direct, autocommit=True) as conn:
            assert conn.execute(f"select count(*) from {table}").fetchone() == (0,)
    finally:
        with psycopg.connect(direct, autocommit=True) as conn:
            conn.execute(f"drop table if exists {table}")


def test_request_and_response_rewrites_and_every_hook(service_pg: str, tmp_path: Path) -> None:
    record = tmp_path / "hooks.jsonl"
    plugin = {"name": "test-rewriter", "module": "tests.support.plugins.rewriter:Rewriter",
              "config": {"record": str(record)}}
    config = base_config({"writes": service_pg}, enableTicker=True, tickInterval="100ms")
    gateway = Gateway(config, {"plugins": [plugin]}).start()
    try:
        result = psql(gateway, "select 'ping'", "select 'secret'")
        assert result.stdout.split() == ["pong", "******"], result.stderr
        wait_until(lambda: record.exists() and '"onTick"' in record.read_text(), what="a tick")
    finally:
        assert gateway.stop() == 0
    seen: dict[str, set[str]] = {}
    for line in record.read_text().splitlines():
        event = json.loads(line)
        seen.setdefault(event["hook"], set()).update(event["keys"])
    traffic = {"client", "server", "error", "request"}
    assert traffic <= seen["onTrafficFromClient"] and traffic <= seen["onTrafficToServer"]
    assert traffic | {"response"} <= seen["onTrafficFromServer"]
    assert traffic | {"response"} <= seen["onTrafficToClient"]
    for name in ("onOpening", "onOpened", "onTraffic"):
        assert seen[name] == {"client"}, name
    assert seen["onClosing"] == seen["onClosed"] == {"client", "error"}
    assert seen["onBooting"] == seen["onBooted"] == {"status"}
    assert seen["onRun"] == {"address"}
    assert seen["onNewPool"] == {"name", "size"}
    assert seen["onTick"] == {"connections"} and seen["onShutdown"] == {"connections"}
    assert seen["onSignal"] == {"signal"}
    assert "servers.default.address" in seen["onConfigLoaded"]
    assert {"id", "name", "group", "address", "localAddress", "dialTimeout"} <= seen["onNewClient"]
    for name in ("onNewLogger", "onNewProxy", "onNewServer"):
        assert seen[name] == {"default"}, name


def test_every_hook_reaches_an_out_of_process_plugin(service_pg: str, tmp_path: Path) -> None:
    """The same recording plugin, run by the SDK as a go-plugin process over gRPC."""
    import hashlib
    import sys

    record = tmp_path / "hooks.jsonl"
    script = tmp_path / "recorder"
    root = Path(__file__).resolve().parents[2]
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from tests.support.plugins.rewriter import Rewriter\n"
        "Rewriter.serve({'record': os.environ['RECORD_FILE']})\n")
    script.chmod(0o755)
    plugin = {"name": "test-rewriter", "localPath": str(script),
              "checksum": hashlib.sha256(script.read_bytes()).hexdigest(),
              "env": [f"RECORD_FILE={record}", "MAGIC_COOKIE_KEY=GATEWAYD_PLUGIN",
                      "MAGIC_COOKIE_VALUE=5712b87aa5d7e9f9e9ab643e6603181c5b796015cb1c09d6f5ada882bf2a1872"]}
    config = base_config({"writes": service_pg}, enableTicker=True, tickInterval="100ms")
    gateway = Gateway(config, {"plugins": [plugin], "timeout": "10s"}).start()
    try:
        result = psql(gateway, "select 'ping'", "select 'secret'")
        assert result.stdout.split() == ["pong", "******"], result.stderr
        wait_until(lambda: record.exists() and '"onTick"' in record.read_text(), what="a tick")
    finally:
        assert gateway.stop() == 0, gateway.output()
    seen = {json.loads(line)["hook"] for line in record.read_text().splitlines()}
    expected = set(names.ALL) - {names.ON_HOOK}
    assert expected - seen == set(), gateway.output()[-3000:]
