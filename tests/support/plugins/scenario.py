"""
Real-reactor plugin-host scenarios, one per process.

A Twisted reactor runs once per process, and pytest cannot drive trial's
asynchronous TestCase reliably, so each integration scenario runs here under
C{task.react} and prints one JSON object as its last stdout line; the pytest
side (tests/integration/test_plugin_host.py) asserts on it.

Usage: python tests/support/plugins/scenario.py NAME WORKDIR [--reactor epoll|asyncio]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.support.plugins import make_plugin_executable  # noqa: E402


def install_reactor(name: str) -> Any:
    if name == "asyncio":
        import asyncio

        from twisted.internet import asyncioreactor
        asyncioreactor.install(asyncio.new_event_loop())
    else:
        from twisted.internet import epollreactor
        epollreactor.install()
    from twisted.internet import reactor
    return reactor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("workdir")
    parser.add_argument("--reactor", default="epoll")
    args = parser.parse_args()
    install_reactor(args.reactor)

    from twisted.internet import task
    from twisted.internet.defer import Deferred

    result: dict[str, Any] = {}

    def run(reactor: Any) -> Deferred[None]:
        scenario = SCENARIOS[args.name]
        return Deferred.fromCoroutine(scenario(reactor, Path(args.workdir), result))

    try:
        task.react(run)
    except SystemExit as exit:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        sys.stdout.flush()
        os._exit(exit.code if isinstance(exit.code, int) else 1)


# -- shared helpers ---------------------------------------------------------------

class LogCapture:
    """Every log event as a JSON-able dict."""

    def __init__(self) -> None:
        from twisted.logger import formatEvent, globalLogPublisher
        self.events: list[dict[str, Any]] = []
        self._format = formatEvent
        globalLogPublisher.addObserver(self)

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        record = {k: (v if isinstance(v, (str, int, float, bool, type(None), list)) else str(v))
                  for k, v in event.items() if not k.startswith("log_")}
        record["level"] = getattr(level, "name", str(level))
        record["text"] = self._format(event)
        self.events.append(record)

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["level"] in ("error", "critical")]


def make_registry() -> Any:
    from twisted.internet.defer import succeed
    from zope.interface import implementer
    from zope.interface.verify import verifyObject

    from gatewayd.interfaces import IHookRegistry

    @implementer(IHookRegistry)
    class RecordingRegistry:
        """A registry that records what the host does to it."""

        def __init__(self) -> None:
            self.by_name: dict[str, Any] = {}
            self.events: list[list[Any]] = []

        def is_subscribed(self, hook_name: str) -> bool:
            return any(hook_name in p.hooks for p in self.by_name.values())

        def run(self, hook_name: str, payload: dict) -> Any:
            return succeed(payload)

        def register(self, plugin: Any) -> None:
            self.by_name[plugin.name] = plugin
            self.events.append(["register", plugin.name, plugin.priority, getattr(plugin, "pid", None)])

        def unregister(self, name: str) -> None:
            self.by_name.pop(name, None)
            self.events.append(["unregister", name])

        def plugins(self) -> list:
            return sorted(self.by_name.values(), key=lambda p: p.priority)

    registry = RecordingRegistry()
    verifyObject(IHookRegistry, registry)
    return registry


def entry(name: str, path: str, checksum: str, *args: str, **kw: Any) -> Any:
    from gatewayd.config.schema import PluginEntry
    return PluginEntry(name=name, local_path=path, checksum=checksum, args=list(args), **kw)


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def poll(reactor: Any, check: Any, timeout: float, interval: float = 0.02) -> bool:
    """Wait until C{check()} is true or C{timeout} passes; no fixed sleeps."""
    from twisted.internet.task import deferLater
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await deferLater(reactor, interval, lambda: None)
    return bool(check())


def host_for(reactor: Any, plugins: list[Any], registry: Any, **config: Any) -> Any:
    from gatewayd.config.schema import PluginsConfig
    from gatewayd.plugins.host import PluginHost
    cfg = PluginsConfig(plugins=plugins, **config)
    return PluginHost(reactor, cfg, registry)


# -- scenarios ------------------------------------------------------------------------

async def roundtrip(reactor: Any, work: Path, out: dict[str, Any]) -> None:
    from zope.interface.verify import verifyObject

    from gatewayd.interfaces import IPluginClient
    from gatewayd.plugins.errors import PluginCallError

    logs = LogCapture()
    path, checksum = make_plugin_executable(work)
    registry = make_registry()
    host = host_for(reactor, [entry("off", "/nonexistent", "", enabled=False),
                              entry("echo-plugin", path, checksum)], registry,
                    health_check_period=60.0, enable_metrics_merger=False)
    host.startService()
    await host.when_loaded()
    [plugin] = host.plugins()
    verifyObject(IPluginClient, plugin)
    out["transport"] = plugin._transport.name
    out["priority"] = plugin.priority
    out["hooks"] = sorted(plugin.hooks)
    out["metadata"] = plugin.metadata
    out["socket_dir_mode"] = oct(os.stat(plugin.socket_dir).st_mode & 0o777)
    out["socket_in_dir"] = os.path.dirname(plugin.handshake.address) == plugin.socket_dir
    out["ping"] = await plugin.ping()
    request = b"Q\x00\x00\x00\x0eselect 1;\x00" + bytes(range(256))
    payload = {"client": {"local": "0.0.0.0:15432", "remote": "127.0.0.1:40000"},
               "server": {"local": "127.0.0.1:50000", "remote": "127.0.0.1:5432"},
               "error": "", "request": request}
    answer = await plugin.call_hook("onTrafficFromClient", payload,
                                    metadata={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    out["request_intact"] = answer["request"] == request
    out["payload_intact"] = {k: v for k, v in answer.items() if k != "echo"} == payload
    out["echo"] = answer["echo"]
    big = os.urandom(8 * 1024 * 1024)  # over grpcio's 4 MB default
    big_answer = await plugin.call_hook("onTrafficFromServer", {"response": big})
    out["big_intact"] = big_answer["response"] == big
    try:
        await plugin.call_hook("onTrafficToServer", {"sleep": 3}, timeout=0.2)
        out["deadline"] = "no error"
    except PluginCallError as error:
        out["deadline"] = error.code
    pid = plugin.pid
    socket_dir = plugin.socket_dir
    out["stdio_relayed"] = await poll(reactor, lambda: any(
        e.get("text") == "hello through GRPCStdio" and e.get("plugin") == "echo-plugin"
        for e in logs.events), 5)
    started = time.monotonic()
    await host.stopService()
    out["stop_seconds"] = time.monotonic() - started
    out["alive_after_stop"] = alive(pid)
    out["socket_dir_exists"] = os.path.exists(socket_dir)
    out["registry_events"] = registry.events
    out["shutdown_logged"] = any(e.get("text") == "shutdown requested" for e in logs.events)
    out["logs"] = [e for e in logs.events if e.get("plugin") == "echo-plugin"]
    out["errors"] = logs.errors()


async def failures(reactor: Any, work: Path, out: dict[str, Any]) -> None:
    from gatewayd.plugins.client import GrpcPluginClient

    logs = LogCapture()
    path, checksum = make_plugin_executable(work)
    created: list[Any] = []

    def factory(*args: Any, **kw: Any) -> Any:
        client = GrpcPluginClient(*args, **kw)
        created.append(client)
        return client

    plugins = [
        entry("missing", str(work / "nope"), checksum),
        entry("badsum", path, "0" * 64),
        entry("nosum", path, ""),
        entry("silent", path, checksum, "--mode", "silent"),
        entry("garbage", path, checksum, "--mode", "garbage"),
        entry("badversion", path, checksum, "--mode", "badversion"),
        entry("failconfig", path, checksum, "--mode", "failconfig"),
        entry("tls", path, checksum, "--mode", "tls"),
        entry("exits", path, checksum, "--mode", "exit"),
        entry("good", path, checksum),
    ]
    registry = make_registry()
    from gatewayd.config.schema import PluginsConfig
    from gatewayd.plugins.host import PluginHost
    host = PluginHost(reactor, PluginsConfig(plugins=plugins, start_timeout=6.0,
                                             health_check_period=60.0, enable_metrics_merger=False),
                      registry, client_factory=factory)
    started = time.monotonic()
    host.startService()
    await host.when_loaded()
    out["load_seconds"] = time.monotonic() - started
    out["loaded"] = [[p.name, p.priority] for p in host.plugins()]
    out["refusals"] = {}
    for e in logs.errors():
        out["refusals"].setdefault(e.get("plugin"), []).append(e["text"])
    out["left_running"] = [c.name for c in created if c.name != "good" and (c.running or alive(c.pid))]
    out["dirs_left"] = [c.name for c in created
                        if c.name != "good" and c.socket_dir and os.path.exists(c.socket_dir)]
    good = host.plugins()[0]
    out["good_ping"] = await good.ping()
    await host.stopService()
    out["good_alive_after_stop"] = alive(good.pid)


async def crash(reactor: Any, work: Path, out: dict[str, Any]) -> None:
    logs = LogCapture()
    path, checksum = make_plugin_executable(work)
    registry = make_registry()
    period = 0.2
    host = host_for(reactor, [entry("a", "/x", "", enabled=False), entry("b", "/x", "", enabled=False),
                              entry("echo", path, checksum)], registry,
                    health_check_period=period, enable_metrics_merger=False)
    host.startService()
    await host.when_loaded()
    [plugin] = host.plugins()
    out["priority_before"] = plugin.priority
    old_pid = plugin.pid
    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)

    def reloaded() -> bool:
        current = host.plugins()
        return bool(current) and current[0].pid not in (None, old_pid)

    out["reloaded"] = await poll(reactor, reloaded, 10)
    out["reload_seconds"] = time.monotonic() - killed_at
    [plugin] = host.plugins() or [None]
    out["priority_after"] = getattr(plugin, "priority", None)
    out["new_pid_alive"] = alive(getattr(plugin, "pid", None))
    out["ping_after"] = await plugin.ping() if plugin else False
    out["registry_events"] = [e[:3] for e in registry.events]
    out["errors"] = [e["text"] for e in logs.errors()]
    await host.stopService()


async def no_reload(reactor: Any, work: Path, out: dict[str, Any]) -> None:
    logs = LogCapture()
    path, checksum = make_plugin_executable(work)
    registry = make_registry()
    host = host_for(reactor, [entry("echo", path, checksum)], registry, health_check_period=0.2,
                    reload_on_crash=False, enable_metrics_merger=False)
    host.startService()
    await host.when_loaded()
    [plugin] = host.plugins()
    os.kill(plugin.pid, signal.SIGKILL)
    out["unregistered"] = await poll(reactor, lambda: ["unregister", "echo"] in registry.events, 10)
    out["plugins_after"] = len(host.plugins())
    out["errors"] = [e["text"] for e in logs.errors()]
    await host.stopService()


async def metrics(reactor: Any, work: Path, out: dict[str, Any]) -> None:
    path, checksum = make_plugin_executable(work)
    registry = make_registry()
    sock = str(work / "metrics.sock")
    host = host_for(reactor, [entry("echo-plugin", path, checksum, "--metrics-socket", sock)],
                    registry, metrics_merger_period=0.2, health_check_period=60.0)
    host.startService()
    await host.when_loaded()
    out["metrics_socket"] = host.plugins()[0].metrics_socket
    out["merged"] = await poll(reactor, lambda: 'plugin="echo_plugin"' in host.merged_metrics_text(), 10)
    out["text"] = host.merged_metrics_text()
    await host.stopService()
    out["text_after_stop"] = host.merged_metrics_text()


SCENARIOS = {"roundtrip": roundtrip, "failures": failures, "crash": crash,
             "no_reload": no_reload, "metrics": metrics}


if __name__ == "__main__":
    main()
