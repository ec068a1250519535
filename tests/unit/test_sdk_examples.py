"""
The example plugins (examples/sql_firewall, examples/query_logger), called
with real protocol bytes, directly and through the hook registry.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from examples.query_logger.plugin import QueryLogger  # noqa: E402
from examples.sql_firewall.plugin import SQLFirewall  # noqa: E402
from gatewayd import pgwire  # noqa: E402
from gatewayd.act import ActRegistry  # noqa: E402
from gatewayd.hooks.registry import HookRegistry  # noqa: E402
from gatewayd.pgwire import MessageFramer, decode_server_message  # noqa: E402
from gatewayd.sdk.inprocess import InProcessPlugin  # noqa: E402
from gatewayd.sdk.log import PluginLog  # noqa: E402


class CaptureLog(PluginLog):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def log(self, level: str, message: str, **fields: Any) -> None:
        self.events.append((level, message, fields))


def decoded(data: bytes) -> list[dict]:
    return [decode_server_message(m) for m in MessageFramer().feed(data)]


def traffic(request: bytes, remote: str = "10.0.0.1:5000") -> dict:
    return {"client": {"local": "127.0.0.1:15432", "remote": remote},
            "server": {"local": "127.0.0.1:40000", "remote": "127.0.0.1:5432"},
            "error": "", "request": request}


def fired(d: Any) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    return box[0]


# -- SQL firewall --------------------------------------------------------------------

@pytest.mark.parametrize("sql, reason", [
    ("DROP TABLE accounts", "DROP"),
    ("/* innocent */ dRoP   TaBlE IF EXISTS \"x\"", "DROP"),
    ("select 1; drop schema s cascade", "DROP"),
    ("TRUNCATE orders", "TRUNCATE"),
    ("DELETE FROM orders", "DELETE without WHERE"),
    ("UPDATE orders SET paid = true", "UPDATE without WHERE"),
    ("WITH gone AS (DELETE FROM logs RETURNING *) SELECT count(*) FROM gone", "DELETE without WHERE"),
])
def test_firewall_blocks_simple_query(sql: str, reason: str) -> None:
    plugin = SQLFirewall()
    result = plugin.check(traffic(pgwire.query(sql)))
    assert result is not None
    messages = decoded(result["response"])
    assert [m["type"] for m in messages] == ["E", "Z"]
    assert messages[0]["fields"]["C"] == "42501"
    assert reason in messages[0]["fields"]["M"]
    assert [s["name"] for s in result["__signals__"]] == ["terminate", "log"]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM accounts",
    "DELETE FROM orders WHERE id = 1",
    "UPDATE orders SET paid = true WHERE id = $1",
    "INSERT INTO orders VALUES (1)",
    "SELEC broken syntax",  # PostgreSQL reports it
    "SELECT 'DROP TABLE x'",  # text, not a statement
])
def test_firewall_allows(sql: str) -> None:
    assert SQLFirewall().check(traffic(pgwire.query(sql))) is None


def test_firewall_extended_protocol() -> None:
    """Parse carries the SQL; the client's Sync gets ErrorResponse + ReadyForQuery."""
    request = (pgwire.parse("", "DELETE FROM t") + pgwire.bind("", "") + pgwire.describe("P")
               + pgwire.execute() + pgwire.sync())
    result = SQLFirewall().check(traffic(request))
    assert [m["type"] for m in decoded(result["response"])] == ["E", "Z"]
    unsynced = pgwire.parse("s1", "TRUNCATE t") + pgwire.describe("S", "s1") + pgwire.flush()
    result = SQLFirewall().check(traffic(unsynced))
    assert [m["type"] for m in decoded(result["response"])] == ["E"]


def test_firewall_settings() -> None:
    plugin = SQLFirewall({"blockDrop": "false", "blockDeleteWithoutWhere": False,
                          "blockedTables": "secrets, audit.log"})
    assert plugin.check(traffic(pgwire.query("DROP TABLE x"))) is None
    assert plugin.check(traffic(pgwire.query("DELETE FROM x"))) is None
    blocked = plugin.check(traffic(pgwire.query("SELECT * FROM public.secrets")))
    assert "access to table public.secrets" in decoded(blocked["response"])[0]["fields"]["M"]
    assert plugin.check(traffic(pgwire.query("SELECT * FROM audit.log"))) is not None
    assert plugin.check(traffic(pgwire.query("TRUNCATE t"))) is not None
    assert plugin.plugin_config()["config"]["blockDrop"] == "false"


def test_firewall_ignores_startup_and_empty() -> None:
    plugin = SQLFirewall()
    assert plugin.check(traffic(pgwire.startup_message({"user": "u"}))) is None
    assert plugin.check(traffic(b"")) is None
    assert plugin.check({"request": None}) is None


def test_firewall_through_registry() -> None:
    """In the chain: terminal, later plugins skipped, the client answer kept."""
    clock = Clock()
    registry = HookRegistry(clock, ActRegistry(clock=clock))
    registry.register(InProcessPlugin(SQLFirewall(), 1000))
    logger = QueryLogger(log=CaptureLog())
    registry.register(InProcessPlugin(logger, 1001))
    result = fired(registry.run("onTrafficFromClient", traffic(pgwire.query("DROP TABLE t"))))
    assert result["__terminal__"] is True
    assert [m["type"] for m in decoded(result["response"])] == ["E", "Z"]
    assert logger._connections == {}  # never reached
    result = fired(registry.run("onTrafficFromClient", traffic(pgwire.query("SELECT 1"))))
    assert "__terminal__" not in result and "response" not in result
    assert len(logger._connections) == 1


# -- query logger --------------------------------------------------------------------

class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_logger(**config: Any) -> tuple[QueryLogger, CaptureLog, FakeTime]:
    log = CaptureLog()
    plugin = QueryLogger(config, log=log)
    clock = FakeTime()
    plugin.now = clock
    return plugin, log, clock


SELECT_RESPONSE = (pgwire.row_description([("n", 23)]) + pgwire.data_row([b"1"])
                   + pgwire.data_row([b"2"]) + pgwire.command_complete("SELECT 2")
                   + pgwire.ready_for_query(b"I"))


def test_logger_simple_query() -> None:
    plugin, log, clock = make_logger()
    plugin.on_request(traffic(pgwire.query("select n from t")))
    clock.now += 0.0125
    plugin.on_response({**traffic(b""), "response": SELECT_RESPONSE})
    [(level, message, fields)] = log.events
    assert (level, message) == ("info", "query")
    assert fields == {"query": "select n from t", "duration_ms": 12.5, "rows": 2,
                      "command": "SELECT 2", "client": "10.0.0.1:5000"}


def test_logger_extended_and_prepared_reexecution() -> None:
    plugin, log, clock = make_logger()
    first = (pgwire.parse("s1", "select $1::int") + pgwire.bind("", "s1", params=[b"5"])
             + pgwire.execute() + pgwire.sync())
    plugin.on_request(traffic(first))
    clock.now += 0.002
    plugin.on_response({**traffic(b""), "response": pgwire.parse_complete() + pgwire.bind_complete()
                        + pgwire.data_row([b"5"]) + pgwire.command_complete("SELECT 1")
                        + pgwire.ready_for_query(b"I")})
    again = pgwire.bind("", "s1", params=[b"6"]) + pgwire.execute() + pgwire.sync()
    plugin.on_request(traffic(again))
    clock.now += 0.001
    plugin.on_response({**traffic(b""), "response": pgwire.bind_complete() + pgwire.data_row([b"6"])
                        + pgwire.command_complete("SELECT 1") + pgwire.ready_for_query(b"I")})
    assert [(f["query"], f["duration_ms"], f["rows"]) for _, _, f in log.events] == [
        ("select $1::int", 2.0, 1), ("select $1::int", 1.0, 1)]


def test_logger_error_split_response_and_pipelining() -> None:
    """Two queries in one burst, an error, and a response split mid-message."""
    plugin, log, clock = make_logger()
    plugin.on_request(traffic(pgwire.query("select 1/0") + pgwire.query("select 2")))
    response = (pgwire.error_response("22012", "division by zero") + pgwire.ready_for_query(b"I")
                + SELECT_RESPONSE)
    clock.now += 0.001
    plugin.on_response({**traffic(b""), "response": response[:7]})
    assert log.events == []
    plugin.on_response({**traffic(b""), "response": response[7:40]})
    clock.now += 0.001
    plugin.on_response({**traffic(b""), "response": response[40:]})
    assert [(f["query"], f.get("sqlstate"), f["rows"]) for _, _, f in log.events] == [
        ("select 1/0", "22012", 0), ("select 2", None, 2)]


def test_logger_connections_independent_and_closed() -> None:
    plugin, log, _ = make_logger()
    plugin.on_request(traffic(pgwire.query("select 'a'"), remote="a:1"))
    plugin.on_request(traffic(pgwire.query("select 'b'"), remote="b:1"))
    plugin.on_response({**traffic(b"", remote="b:1"), "response": SELECT_RESPONSE})
    assert [f["query"] for _, _, f in log.events] == ["select 'b'"]
    plugin.on_closed(traffic(b"", remote="a:1"))
    plugin.on_response({**traffic(b"", remote="a:1"), "response": SELECT_RESPONSE})
    assert len(log.events) == 1  # a's query was forgotten with its connection


def test_logger_startup_and_slow_filter() -> None:
    plugin, log, clock = make_logger(slowQueryMs="5", maxQueryLength=8)
    plugin.on_request(traffic(pgwire.startup_message({"user": "u"})))
    plugin.on_response({**traffic(b""), "response": pgwire.authentication_ok()
                        + pgwire.ready_for_query(b"I")})
    plugin.on_request(traffic(pgwire.query("select fast")))
    plugin.on_response({**traffic(b""), "response": SELECT_RESPONSE})
    plugin.on_request(traffic(pgwire.query("select slow_function()")))
    clock.now += 0.006
    plugin.on_response({**traffic(b""), "response": SELECT_RESPONSE})
    assert [f["query"] for _, _, f in log.events] == ["select s..."]


def test_logger_returns_payload_unchanged_in_registry() -> None:
    clock = Clock()
    registry = HookRegistry(clock, ActRegistry(clock=clock))
    registry.register(InProcessPlugin(QueryLogger(log=CaptureLog()), 1000))
    payload = traffic(pgwire.query("select 1"))
    assert fired(registry.run("onTrafficFromClient", payload)) is payload


@pytest.mark.parametrize("sql", [
    "EXPLAIN ANALYZE DELETE FROM orders",
    "WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT 1",
    "PREPARE p AS DELETE FROM orders",
])
def test_firewall_sees_nested_statements(sql: str) -> None:
    """Statements hidden in CTEs, EXPLAIN ANALYZE or PREPARE are checked too."""
    assert SQLFirewall().check(traffic(pgwire.query(sql))) is not None
