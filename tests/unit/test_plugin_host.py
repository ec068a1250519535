"""
Plugin host logic without processes or sockets: handshake parsing, the child
environment, checksums, stderr parsing, metadata decoding, metrics relabelling,
the client's call path over a fake transport, and PluginHost's loading, health
checks and reloads on a MemoryReactorClock with fake clients.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.config.schema import PluginEntry, PluginsConfig
from gatewayd.interfaces import IHookRegistry, IPlugin, IPluginClient
from gatewayd.observability.formats import TRACE_KEY
from gatewayd.plugins.client import GrpcPluginClient, decode_plugin_config
from gatewayd.plugins.errors import HandshakeError, PluginCallError, PluginLoadError
from gatewayd.plugins.handshake import (
    MAGIC_COOKIE_VALUE, parse_handshake, plugin_environment, resolve_executable, verify_checksum)
from gatewayd.plugins.host import PluginHost
from gatewayd.plugins.logs import MAX_LINE, LineRelay, parse_log_line
from gatewayd.plugins.metrics import merge, plugin_label, relabel, render
from gatewayd.plugins.structs import Struct, to_struct
from gatewayd.plugins.transport import is_asyncio_reactor, transport_for_reactor

# -- handshake line -----------------------------------------------------------------


def test_handshake_unix_without_tls() -> None:
    hs = parse_handshake("1|1|unix|/tmp/d/plugin123|grpc|\n")
    assert (hs.network, hs.address, hs.protocol, hs.server_cert) == ("unix", "/tmp/d/plugin123", "grpc", None)
    assert hs.grpc_target == "unix:/tmp/d/plugin123"


def test_handshake_tcp_five_fields() -> None:
    hs = parse_handshake("1|1|tcp|127.0.0.1:50001|grpc")
    assert hs.grpc_target == "127.0.0.1:50001"


def test_handshake_cert_is_raw_base64_der() -> None:
    der = os.urandom(100)
    raw = base64.b64encode(der).decode().rstrip("=")
    assert parse_handshake(f"1|1|unix|/s|grpc|{raw}").server_cert == der


@pytest.mark.parametrize("line, problem", [
    ("hello", "unrecognized handshake line"),
    ("1|1|unix", "unrecognized handshake line"),
    ("2|1|unix|/s|grpc|", "core protocol version '2'"),
    ("1|2|unix|/s|grpc|", "plugin protocol version '2'"),
    ("1|1|udp|/s|grpc|", "unsupported network 'udp'"),
    ("1|1|unix||grpc|", "empty address"),
    ("1|1|unix|/s", "unsupported plugin protocol 'netrpc'"),
    ("1|1|unix|/s|netrpc|", "unsupported plugin protocol 'netrpc'"),
    ("1|1|unix|/s|grpc|" + "!" * 60, "not base64"),
])
def test_handshake_refusals(line: str, problem: str) -> None:
    with pytest.raises(HandshakeError, match=problem.replace("(", r"\(")):
        parse_handshake(line)


# -- environment, executable, checksum ------------------------------------------------


def test_environment_order_and_handshake_variables() -> None:
    env = plugin_environment(
        ["REDIS_URL=redis://config", "ONLY_CONFIG=1", "MAGIC_COOKIE_KEY=GATEWAYD_PLUGIN", "bogus"],
        {"REDIS_URL": "redis://host", "PLUGIN_CLIENT_CERT": "pem", "GATEWAYD_PLUGIN": "wrong",
         "PLUGIN_UNIX_SOCKET_DIR": "/elsewhere"},
        "/tmp/private")
    assert env["REDIS_URL"] == "redis://host"  # the host env overrides, as in go-plugin
    assert env["ONLY_CONFIG"] == "1"
    assert env["GATEWAYD_PLUGIN"] == MAGIC_COOKIE_VALUE  # the cookie always wins
    assert env["PLUGIN_PROTOCOL_VERSIONS"] == "1"
    assert (env["PLUGIN_MIN_PORT"], env["PLUGIN_MAX_PORT"]) == ("50000", "60000")
    assert env["PLUGIN_UNIX_SOCKET_DIR"] == "/tmp/private"
    assert "PLUGIN_CLIENT_CERT" not in env  # AutoMTLS stays off
    assert "bogus" not in env


def test_environment_adds_go_sdk_cookie_variables_when_missing() -> None:
    env = plugin_environment([], {}, "/d")
    assert env["MAGIC_COOKIE_KEY"] == "GATEWAYD_PLUGIN"
    assert env["MAGIC_COOKIE_VALUE"] == MAGIC_COOKIE_VALUE
    assert plugin_environment(["MAGIC_COOKIE_VALUE=custom"], {}, "/d")["MAGIC_COOKIE_VALUE"] == "custom"


def test_checksum(tmp_path: Path) -> None:
    path = tmp_path / "plugin"
    path.write_bytes(b"#!/bin/sh\n")
    good = hashlib.sha256(b"#!/bin/sh\n").hexdigest()
    verify_checksum(str(path), good)
    verify_checksum(str(path), good.upper())
    with pytest.raises(ValueError, match="checksum mismatch"):
        verify_checksum(str(path), "0" * 64)
    with pytest.raises(ValueError, match="not hex"):
        verify_checksum(str(path), "xyz")
    with pytest.raises(ValueError, match="64 hex digits"):
        verify_checksum(str(path), "00" * 16)


def test_resolve_executable(tmp_path: Path) -> None:
    path = tmp_path / "plugin"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_executable(str(path))
    path.write_text("#!/bin/sh\n")
    with pytest.raises(FileNotFoundError, match="not executable"):
        resolve_executable(str(path))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    assert resolve_executable(str(path)) == str(path)
    assert resolve_executable("sh").endswith("/sh")  # no slash: PATH lookup, like exec.Command
    with pytest.raises(FileNotFoundError, match="empty"):
        resolve_executable("")


# -- stderr ---------------------------------------------------------------------------


def test_hclog_json_line() -> None:
    line = ('{"@level":"warn","@message":"cache miss","@timestamp":"2024-01-01T00:00:00.000000Z",'
            '"@module":"cache","key":"k","plugin":"spoof","log_format":"x"}')
    level, message, fields = parse_log_line(line)
    assert (level, message) == ("warn", "cache miss")
    assert fields == {"module": "cache", "key": "k", "plugin_plugin": "spoof", "plugin_log_format": "x"}


@pytest.mark.parametrize("line, level, message", [
    ("[ERROR] boom", "error", "boom"),
    ("[DEBUG] detail", "debug", "detail"),
    ("Traceback (most recent call last):", "info", "Traceback (most recent call last):"),
    ('{"not": "hclog"}', "info", '{"not": "hclog"}'),
    ('{"@message": "no level"}', "info", "no level"),
])
def test_other_lines(line: str, level: str, message: str) -> None:
    assert parse_log_line(line)[:2] == (level, message)


def test_line_relay_emits_one_event_per_line() -> None:
    events: list[dict[str, Any]] = []
    relay = LineRelay(Logger(observer=events.append), "p")
    relay.feed(b'{"@level":"trace","@message":"a {brace}"}\n[INFO] par')
    relay.feed(b"tial\n\nlast")
    assert len(events) == 2
    relay.flush()
    assert [(e["log_level"], e["plugin"]) for e in events] == [
        (LogLevel.debug, "p"), (LogLevel.info, "p"), (LogLevel.info, "p")]
    assert events[0][TRACE_KEY] is True
    from twisted.logger import formatEvent
    assert [formatEvent(e) for e in events] == ["a {brace}", "partial", "last"]


def test_line_relay_bounds_its_buffer() -> None:
    events: list[dict[str, Any]] = []
    relay = LineRelay(Logger(observer=events.append), "p")
    relay.feed(b"x" * (MAX_LINE * 2 + 10))
    assert len(events) == 2 and len(relay._buffer) == 10


# -- GetPluginConfig ----------------------------------------------------------------------


def test_decode_plugin_config_like_gatewayd() -> None:
    metadata, hooks, ignored = decode_plugin_config({
        "id": {"name": "cache", "version": "0.2.0", "remoteUrl": "github.com/x/cache"},
        "hooks": [14, 16, 18, 1000, "HOOK_NAME_ON_TICK", True, 0],
        "config": {"metricsEnabled": "true", "scanCount": 1000},
        "requires": [{"name": "auth", "version": "1.0.0", "remoteUrl": "r"}],
        "authors": ["a", 1],
    })
    assert hooks == {"onClosed", "onTrafficFromClient", "onTrafficFromServer"}
    assert ignored == [1000, "HOOK_NAME_ON_TICK", True, 0]
    assert metadata["config"] == {"metricsEnabled": "true"}
    assert metadata["requires"] == [{"name": "auth", "version": "1.0.0", "remoteUrl": "r"}]
    assert metadata["authors"] == ["a"]
    assert metadata["hooks"] == [14, 16, 18]


def test_decode_plugin_config_accepts_requires_map_and_garbage() -> None:
    metadata, hooks, _ = decode_plugin_config({"requires": {"auth": "1.0"}, "hooks": "nope", "id": 3})
    assert metadata["requires"] == [{"name": "auth", "version": "1.0", "remoteUrl": ""}]
    assert hooks == frozenset() and metadata["id"]["name"] == ""


# -- metrics ----------------------------------------------------------------------------

TEXT = ("# HELP process_open_fds fds\n# TYPE process_open_fds gauge\nprocess_open_fds 7\n"
        "# HELP gatewayd_cache_hits_total hits\n# TYPE gatewayd_cache_hits_total counter\n"
        'gatewayd_cache_hits_total{db="x"} 3\n')


def test_relabel_adds_plugin_label_with_underscores() -> None:
    assert plugin_label("gatewayd-plugin-cache") == "gatewayd_plugin_cache"
    text = render(relabel(TEXT, "gatewayd-plugin-cache"))
    assert 'gatewayd_cache_hits_total{db="x",plugin="gatewayd_plugin_cache"} 3.0' in text
    assert 'process_open_fds{plugin="gatewayd_plugin_cache"} 7.0' in text


def test_merge_writes_a_shared_family_once() -> None:
    text = render(merge([relabel(TEXT, "a"), relabel(TEXT, "b")]))
    assert text.count("# TYPE process_open_fds gauge") == 1
    assert 'process_open_fds{plugin="a"} 7.0' in text and 'process_open_fds{plugin="b"} 7.0' in text
    assert render([]) == ""


def test_relabel_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        relabel("this is { not prometheus", "p")


# -- GrpcPluginClient over a fake transport ---------------------------------------------


class FakeTransport:
    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.answer: Any = None

    def connect(self, target: str) -> Deferred[None]:
        return succeed(None)

    def unary(self, method: str, request: Any, response_type: Any, timeout: float | None = None,
              metadata: Any = None, wait_for_ready: bool = False) -> Deferred[Any]:
        self.calls.append((method, request, response_type, timeout, metadata))
        if isinstance(self.answer, Exception):
            return fail(self.answer)
        return succeed(self.answer if self.answer is not None else request)

    def stream(self, *args: Any) -> Deferred[None]:
        return Deferred()

    def close(self) -> Deferred[None]:
        return succeed(None)


def make_client(**kw: Any) -> tuple[GrpcPluginClient, FakeTransport]:
    transport = FakeTransport()
    client = GrpcPluginClient(MemoryReactorClock(), PluginEntry(name="p", local_path="/x"), 1003,
                              transport=transport, call_timeout=30.0, **kw)
    return client, transport


def test_client_provides_iplugin_client() -> None:
    client, _ = make_client()
    assert verifyObject(IPluginClient, client)
    assert (client.name, client.priority, client.hooks) == ("p", 1003, frozenset())


def test_call_hook_path_payload_timeout_and_metadata() -> None:
    client, transport = make_client()
    results: list[Any] = []
    client.call_hook("onTrafficFromClient", {"request": b"\xff\x00"},
                     metadata={"Traceparent": "00-x"}).addCallback(results.append)
    method, request, response_type, timeout, metadata = transport.calls[0]
    assert method == "/plugin.v1.GatewayDPluginService/OnTrafficFromClient"
    assert isinstance(request, Struct) and response_type is Struct
    assert timeout == 30.0 and metadata == (("traceparent", "00-x"),)
    assert results == [{"request": b"\xff\x00"}]
    client.call_hook("onClosed", {}, timeout=0.25)
    assert transport.calls[1][0].endswith("/OnClosed") and transport.calls[1][3] == 0.25


def test_call_hook_failures() -> None:
    client, transport = make_client()
    failures: list[Any] = []
    client.call_hook("onNothing", {}).addErrback(failures.append)
    client.call_hook("onTick", {"x": object()}).addErrback(failures.append)
    transport.answer = PluginCallError("m", "UNAVAILABLE", "gone")
    client.call_hook("onTick", {}).addErrback(failures.append)
    assert [type(f.value) for f in failures] == [ValueError, TypeError, PluginCallError]


def test_ping_is_false_without_a_running_process() -> None:
    client, transport = make_client()
    results: list[Any] = []
    client.ping().addCallback(results.append)
    assert results == [False] and transport.calls == []


def test_start_refuses_missing_file_and_checksum_before_spawning(tmp_path: Path) -> None:
    path = tmp_path / "plugin"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    reactor = MemoryReactorClock()
    outcomes = []
    for entry, dev in [(PluginEntry(name="a", local_path=str(tmp_path / "missing")), False),
                       (PluginEntry(name="b", local_path=str(path), checksum="0" * 64), False),
                       (PluginEntry(name="c", local_path=str(path)), False)]:
        client = GrpcPluginClient(reactor, entry, 1000, transport=FakeTransport(), dev=dev)
        client.start().addErrback(lambda f: outcomes.append(f.value))
    assert [type(e) for e in outcomes] == [PluginLoadError] * 3
    assert [str(e) for e in outcomes] == [
        f"plugin a: localPath '{tmp_path / 'missing'}' does not exist",
        f"plugin b: checksum mismatch: {path} has sha256 {hashlib.sha256(b'#!/bin/sh' + bytes([10])).hexdigest()}",
        "plugin c: no checksum configured (required unless --dev)",
    ]


def test_transport_choice_by_reactor() -> None:
    reactor = MemoryReactorClock()
    assert not is_asyncio_reactor(reactor)
    assert transport_for_reactor(reactor).name == "sync"
    with pytest.raises(ValueError):
        transport_for_reactor(reactor, "aio")  # needs an asyncio reactor
    with pytest.raises(ValueError):
        transport_for_reactor(reactor, "carrier-pigeon")


# -- PluginHost with fakes ----------------------------------------------------------------


@implementer(IPluginClient)
class FakeClient:
    """Stands in for GrpcPluginClient: start/ping outcomes are scripted per name."""

    script: dict[str, list[Any]] = {}
    created: list[FakeClient] = []

    def __init__(self, reactor: Any, entry: PluginEntry, priority: int, **kw: Any) -> None:
        self.name, self.priority, self.entry, self.kw = entry.name, priority, entry, kw
        self.hooks = frozenset({"onTrafficFromClient"})
        self.metadata: dict[str, Any] = {"id": {"name": entry.name, "version": "1.2.0", "remoteUrl": ""},
                                         "requires": []}
        self.healthy = True
        self.stopped = False
        self.metrics_socket = None
        FakeClient.created.append(self)

    def start(self) -> Deferred[None]:
        queue = FakeClient.script.get(self.name)
        outcome = queue.pop(0) if queue else None
        if isinstance(outcome, Exception):
            return fail(outcome)
        if isinstance(outcome, dict):
            self.metadata.update(outcome)
        return succeed(None)

    def call_hook(self, hook_name: str, payload: dict) -> Deferred[dict]:
        return succeed(payload)

    def ping(self) -> Deferred[bool]:
        return succeed(self.healthy)

    def stop(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)


@implementer(IPlugin)
class FakeInprocess:
    def __init__(self, entry: PluginEntry, priority: int) -> None:
        self.name, self.priority = entry.name, priority
        self.hooks = frozenset({"onTick"})
        self.metadata: dict[str, Any] = {}

    def call_hook(self, hook_name: str, payload: dict) -> Deferred[dict]:
        return succeed(payload)


@implementer(IHookRegistry)
class FakeRegistry:
    def __init__(self) -> None:
        self.registered: dict[str, Any] = {}
        self.events: list[tuple[Any, ...]] = []

    def is_subscribed(self, hook_name: str) -> bool:
        return any(hook_name in p.hooks for p in self.registered.values())

    def run(self, hook_name: str, payload: dict) -> Deferred[dict]:
        return succeed(payload)

    def register(self, plugin: Any) -> None:
        self.registered[plugin.name] = plugin
        self.events.append(("register", plugin.name, plugin.priority))

    def unregister(self, name: str) -> None:
        self.registered.pop(name, None)
        self.events.append(("unregister", name))

    def plugins(self) -> list:
        return sorted(self.registered.values(), key=lambda p: p.priority)


@pytest.fixture(autouse=True)
def _reset_fakes() -> None:
    FakeClient.script = {}
    FakeClient.created = []


def make_host(plugins: list[PluginEntry], **config: Any) -> tuple[PluginHost, FakeRegistry, MemoryReactorClock, list[dict]]:
    reactor = MemoryReactorClock()
    registry = FakeRegistry()
    events: list[dict[str, Any]] = []
    loaded_inprocess: list[Any] = []

    def loader(entry: PluginEntry, priority: int, r: Any) -> IPlugin:
        plugin = FakeInprocess(entry, priority)
        verifyObject(IPlugin, plugin)
        loaded_inprocess.append(plugin)
        return plugin

    host = PluginHost(reactor, PluginsConfig(plugins=plugins, **config), registry,
                      log=Logger(observer=events.append), client_factory=FakeClient,
                      inprocess_loader=loader)
    return host, registry, reactor, events


def errors(events: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent
    return [formatEvent(e) for e in events if e["log_level"] in (LogLevel.error, LogLevel.critical)]


def test_fakes_provide_their_interfaces() -> None:
    assert verifyObject(IHookRegistry, FakeRegistry())
    assert verifyObject(IPluginClient, FakeClient(None, PluginEntry(name="x"), 1))


def test_priorities_count_disabled_entries_and_inprocess_is_delegated() -> None:
    host, registry, _, events = make_host([
        PluginEntry(name="off", enabled=False),
        PluginEntry(name="grpc", local_path="/x"),
        PluginEntry(name="py", module="pkg.mod:Plugin"),
    ], start_timeout=7.0, timeout=3.0)
    host.startService()
    assert registry.events == [("register", "grpc", 1001), ("register", "py", 1002)]
    assert [p.name for p in host.plugins()] == ["grpc", "py"]
    assert isinstance(registry.registered["py"], FakeInprocess)
    [client] = FakeClient.created
    assert client.kw["start_timeout"] == 7.0 and client.kw["call_timeout"] == 3.0
    assert errors(events) == []
    done: list[Any] = []
    host.when_loaded().addCallback(done.append)
    assert done == [None]


def test_refused_plugin_logs_one_line_and_others_load() -> None:
    FakeClient.script = {"bad": [PluginLoadError("bad", "checksum mismatch: ...")]}
    host, registry, _, events = make_host([PluginEntry(name="bad", local_path="/x"),
                                           PluginEntry(name="good", local_path="/x"),
                                           PluginEntry(name="good", local_path="/y")])
    host.startService()
    assert list(registry.registered) == ["good"]
    assert sorted(errors(events)) == ["plugin bad not loaded: checksum mismatch: ...",
                                      "plugin good not loaded: duplicate plugin name"]


def test_unmet_requirement_is_refused_and_stopped() -> None:
    FakeClient.script = {
        "needs-missing": [{"requires": [{"name": "nowhere", "version": "1.0", "remoteUrl": ""}]}],
        "needs-newer": [{"requires": [{"name": "base", "version": "2.0.0", "remoteUrl": ""}]}],
        "needs-ok": [{"requires": [{"name": "base", "version": "v1.1", "remoteUrl": ""}]}],
    }
    host, registry, _, events = make_host([PluginEntry(name=n, local_path="/x") for n in
                                           ("base", "needs-missing", "needs-newer", "needs-ok")])
    host.startService()
    assert list(registry.registered) == ["base", "needs-ok"]
    assert errors(events) == [
        "plugin needs-missing not loaded: requires plugin 'nowhere', which is not loaded before it",
        "plugin needs-newer not loaded: requires 'base' >= 2.0.0, loaded version is '1.2.0'",
    ]
    assert [c.name for c in FakeClient.created if c.stopped] == ["needs-missing", "needs-newer"]


def test_health_check_reloads_with_same_priority() -> None:
    host, registry, reactor, events = make_host(
        [PluginEntry(name="off", enabled=False), PluginEntry(name="p", local_path="/x")],
        health_check_period=5.0)
    host.startService()
    first = FakeClient.created[0]
    reactor.advance(5.0)
    assert len(FakeClient.created) == 1  # healthy: nothing happens
    first.healthy = False
    reactor.advance(5.0)
    assert first.stopped
    assert registry.events == [("register", "p", 1001), ("unregister", "p"), ("register", "p", 1001)]
    assert FakeClient.created[1].priority == 1001 and host.plugins() == [FakeClient.created[1]]
    assert errors(events) == ["plugin p failed its health check (not serving); unregistered, reloading"]


def test_failed_reload_is_retried_each_period() -> None:
    host, registry, reactor, events = make_host([PluginEntry(name="p", local_path="/x")],
                                                health_check_period=1.0)
    host.startService()
    FakeClient.created[0].healthy = False
    FakeClient.script = {"p": [PluginLoadError("p", "no handshake line"), None]}
    reactor.advance(1.0)
    assert host.plugins() == [] and "p" not in registry.registered
    assert errors(events)[-1] == "plugin p reload failed, retrying in 1s: no handshake line"
    reactor.advance(1.0)
    assert [p.priority for p in host.plugins()] == [1000] and "p" in registry.registered


def test_no_reload_when_disabled() -> None:
    host, registry, reactor, _ = make_host([PluginEntry(name="p", local_path="/x")],
                                           health_check_period=1.0, reload_on_crash=False)
    host.startService()
    FakeClient.created[0].healthy = False
    reactor.advance(1.0)
    reactor.advance(1.0)
    assert registry.registered == {} and len(FakeClient.created) == 1


def test_stop_service_unregisters_and_stops_everything() -> None:
    host, registry, reactor, _ = make_host([PluginEntry(name="a", local_path="/x"),
                                            PluginEntry(name="b", local_path="/x")],
                                           health_check_period=1.0)
    host.startService()
    done: list[Any] = []
    host.stopService().addCallback(done.append)
    assert done == [None]
    assert registry.registered == {} and all(c.stopped for c in FakeClient.created)
    assert reactor.getDelayedCalls() == []  # loops stopped
    assert host.merged_metrics_text() == ""


def test_metrics_counters_are_bumped_when_given() -> None:
    class Counter:
        def __init__(self) -> None:
            self.value = 0

        def inc(self, n: int = 1) -> None:
            self.value += n

    class Metrics:
        plugins_loaded_total = Counter()

    reactor = MemoryReactorClock()
    host = PluginHost(reactor, PluginsConfig(plugins=[PluginEntry(name="a", local_path="/x")]),
                      FakeRegistry(), metrics=Metrics, client_factory=FakeClient)
    host.startService()
    assert Metrics.plugins_loaded_total.value == 1


def test_missing_sdk_inprocess_loader_refuses_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    monkeypatch.setitem(sys.modules, "gatewayd.sdk.inprocess", None)  # import fails
    reactor = MemoryReactorClock()
    events: list[dict[str, Any]] = []
    registry = FakeRegistry()
    host = PluginHost(reactor, PluginsConfig(plugins=[PluginEntry(name="py", module="m:C")]),
                      registry, log=Logger(observer=events.append))
    host.startService()
    assert registry.registered == {}
    assert len(errors(events)) == 1 and errors(events)[0].startswith("plugin py not loaded:")


def test_to_struct_is_what_the_client_sends() -> None:
    client, transport = make_client()
    client.call_hook("onTick", {"connections": 3})
    assert transport.calls[0][1] == to_struct({"connections": 3})


def test_socket_inside_private_directory(tmp_path: Path) -> None:
    from gatewayd.plugins.client import _inside
    assert _inside(str(tmp_path / "plugin123"), str(tmp_path))
    assert _inside(str(tmp_path / "sub" / "grpc.sock"), str(tmp_path))  # the SDK's layout
    assert not _inside("/tmp/elsewhere.sock", str(tmp_path))
    assert not _inside(str(tmp_path) + "-evil/sock", str(tmp_path))
    assert not _inside(str(tmp_path / "sock"), None)


def test_stop_service_stops_plugins_still_starting() -> None:
    pending: Deferred[None] = Deferred()

    class SlowClient(FakeClient):
        def start(self) -> Deferred[None]:
            return pending

        def stop(self) -> Deferred[None]:
            self.stopped = True
            if not pending.called:
                pending.errback(PluginLoadError(self.name, "exited (signal 15) before its handshake line"))
            return succeed(None)

    reactor = MemoryReactorClock()
    registry = FakeRegistry()
    host = PluginHost(reactor, PluginsConfig(plugins=[PluginEntry(name="slow", local_path="/x")]),
                      registry, log=Logger(observer=lambda e: None), client_factory=SlowClient)
    host.startService()
    done: list[Any] = []
    host.stopService().addCallback(done.append)
    assert done == [None] and FakeClient.created[0].stopped and registry.registered == {}
