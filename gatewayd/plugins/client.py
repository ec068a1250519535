# -*- test-case-name: tests.integration.test_plugin_host -*-
"""
One out-of-process plugin: a child process speaking go-plugin's handshake and
GatewayD's C{plugin.v1.GatewayDPluginService} over gRPC.

Security (docs/plugins-host.md): the executable's SHA-256 is checked before it
runs; go-plugin's AutoMTLS needs ECDSA P-521, which grpcio's BoringSSL cannot
do, so we do not send C{PLUGIN_CLIENT_CERT}; instead the plugin listens in a
directory only our user can enter (C{PLUGIN_UNIX_SOCKET_DIR}, mode 0700) and we
speak plaintext gRPC over that Unix socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from typing import Any, Mapping, Sequence

from grpc_health.v1 import health_pb2
from twisted.internet.defer import (
    CancelledError, Deferred, TimeoutError as DeferredTimeout, fail, succeed)
from twisted.logger import Logger
from zope.interface import implementer

from gatewayd.config.schema import PluginEntry
from gatewayd.hooks.names import NAME_BY_NUMBER, RPC_BY_NAME
from gatewayd.interfaces import IPluginClient
from gatewayd.plugins.errors import HandshakeError, PluginCallError, PluginLoadError
from gatewayd.plugins.handshake import (
    Handshake, parse_handshake, plugin_environment, resolve_executable, verify_checksum)
from gatewayd.plugins.logs import LineRelay
from gatewayd.plugins.process import PluginExited, PluginProcessProtocol
from gatewayd.plugins.structs import Struct, from_struct, to_struct
from gatewayd.plugins.transport import GrpcTransport, transport_for_reactor
from gatewayd.protos.goplugin import grpc_controller_pb2, grpc_stdio_pb2
from google.protobuf import empty_pb2

SERVICE = "/plugin.v1.GatewayDPluginService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SHUTDOWN = "/plugin.GRPCController/Shutdown"
STREAM_STDIO = "/plugin.GRPCStdio/StreamStdio"
#: go-plugin's GRPCServiceName: the health service a plugin reports on.
HEALTH_SERVICE = "plugin"

#: Hook RPC name -> full gRPC method path.
METHOD_BY_HOOK: dict[str, str] = {name: SERVICE + rpc for name, rpc in RPC_BY_NAME.items()}

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool


def decode_plugin_config(answer: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str], list[Any]]:
    """
    Read C{GetPluginConfig}'s answer as GatewayD does.

    @return: (metadata, hook names, ignored hook entries).  Hooks are enum
        numbers; strings and unknown numbers (the template's 1000) are ignored.
        Only string-valued C{config} entries are kept.  C{requires} is a list of
        C{{name, version, remoteUrl}}; a C{{name: version}} map is accepted too.
    """
    hooks: set[str] = set()
    numbers: list[int] = []
    ignored: list[Any] = []
    raw_hooks = answer.get("hooks")
    for item in raw_hooks if isinstance(raw_hooks, list) else []:
        name = NAME_BY_NUMBER.get(item) if isinstance(item, int) and not isinstance(item, bool) else None
        if name is None:
            ignored.append(item)
        else:
            hooks.add(name)
            numbers.append(item)
    raw_config = answer.get("config")
    config = ({k: v for k, v in raw_config.items() if isinstance(v, str)}
              if isinstance(raw_config, dict) else {})
    raw_requires = answer.get("requires")
    if isinstance(raw_requires, dict):
        requires = [{"name": k, "version": v, "remoteUrl": ""} for k, v in raw_requires.items()
                    if isinstance(v, str)]
    elif isinstance(raw_requires, list):
        requires = [{"name": str(r.get("name", "")), "version": str(r.get("version", "")),
                     "remoteUrl": str(r.get("remoteUrl", ""))}
                    for r in raw_requires if isinstance(r, dict)]
    else:
        requires = []
    raw_id = answer.get("id") if isinstance(answer.get("id"), dict) else {}
    metadata = {
        "id": {"name": str(raw_id.get("name", "")), "version": str(raw_id.get("version", "")),
               "remoteUrl": str(raw_id.get("remoteUrl", ""))},
        "description": _text(answer.get("description")),
        "authors": _texts(answer.get("authors")),
        "license": _text(answer.get("license")),
        "projectUrl": _text(answer.get("projectUrl")),
        "config": config,
        "hooks": numbers,
        "requires": requires,
        "tags": _texts(answer.get("tags")),
        "categories": _texts(answer.get("categories")),
    }
    return metadata, frozenset(hooks), ignored


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _texts(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _inside(path: str, directory: str | None) -> bool:
    """True when C{path} lies in C{directory} (at any depth: nothing there is reachable by others)."""
    if directory is None:
        return False
    root = os.path.realpath(directory)
    return os.path.commonpath([os.path.realpath(path), root]) == root


def _grpc_metadata(metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None
                   ) -> tuple[tuple[str, str], ...] | None:
    if not metadata:
        return None
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    return tuple((str(k).lower(), str(v)) for k, v in items)


@implementer(IPluginClient)
class GrpcPluginClient:
    """
    A GatewayD-compatible plugin process reached over gRPC.

    @ivar name: the config entry's name (GatewayD ignores the plugin's own id.name).
    @ivar priority: chain position.
    @ivar hooks: hook names from C{GetPluginConfig} (empty before L{start}).
    @ivar metadata: the decoded C{GetPluginConfig} answer plus C{id.checksum}.
    """

    def __init__(self, reactor: Any, entry: PluginEntry, priority: int, *,
                 log: Logger | None = None, dev: bool = False, start_timeout: float = 60.0,
                 call_timeout: float = 30.0, ping_timeout: float = 5.0, stop_grace: float = 2.0,
                 transport: str | GrpcTransport | None = None,
                 host_env: Mapping[str, str] | None = None) -> None:
        """
        @param reactor: provides IReactorProcess, IReactorTime (and
            IReactorFromThreads for the default transport on non-asyncio reactors).
        @param dev: skip the checksum check (GatewayD's C{run --dev}).
        @param call_timeout: deadline of a hook call when the caller gives none.
        @param ping_timeout: deadline of a health check (GatewayD has none and can hang).
        @param stop_grace: seconds between Shutdown, SIGTERM and SIGKILL.
        @param transport: C{"sync"}, C{"aio"}, a transport object, or None for
            the measured default for C{reactor} (docs/grpc-choice.md).
        @param host_env: the environment passed on; C{os.environ} by default.
        """
        self.name = entry.name
        self.priority = priority
        self.hooks: frozenset[str] = frozenset()
        self.metadata: dict[str, Any] = {}
        self.entry = entry
        self.handshake: Handshake | None = None
        self.socket_dir: str | None = None
        self._reactor = reactor
        self._log = log or Logger(namespace="gatewayd.plugins")
        self._dev = dev
        self._start_timeout = start_timeout
        self._call_timeout = call_timeout
        self._ping_timeout = ping_timeout
        self._stop_grace = stop_grace
        self._host_env = host_env
        self._transport: GrpcTransport = (
            transport if transport is not None and not isinstance(transport, str)
            else transport_for_reactor(reactor, transport))
        self._process: PluginProcessProtocol | None = None
        self._stopping: Deferred[None] | None = None
        self._stdio: Deferred[None] | None = None

    def __repr__(self) -> str:
        return f"<GrpcPluginClient {self.name} priority={self.priority} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        transport = getattr(self._process, "transport", None)
        return getattr(transport, "pid", None)

    @property
    def running(self) -> bool:
        """True while the child process lives."""
        return self._process is not None and self._process.running

    @property
    def exit_status(self) -> str | None:
        """How the process ended (C{"exit code 1"}, C{"signal 9"}), None while it runs."""
        return self._process.exit_status if self._process is not None else None

    @property
    def metrics_socket(self) -> str | None:
        """The Unix socket of the plugin's Prometheus endpoint, when it enabled one."""
        config = self.metadata.get("config", {})
        if config.get("metricsEnabled") in _TRUE and config.get("metricsUnixDomainSocket"):
            return str(config["metricsUnixDomainSocket"])
        return None

    # -- life cycle ------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Verify, spawn, handshake, connect and fetch the metadata.

        @return: fires with None, or fails with L{PluginLoadError} after the
            process (if any) was killed.
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        executable = self._verified_executable()
        self.socket_dir = tempfile.mkdtemp(prefix="gatewayd-plugin-")  # mode 0700
        env = plugin_environment(self.entry.env,
                                 os.environ if self._host_env is None else self._host_env,
                                 self.socket_dir)
        self._process = PluginProcessProtocol(self._log, self.name)
        deadline = self._reactor.seconds() + self._start_timeout
        try:
            self._reactor.spawnProcess(self._process, executable, [executable, *self.entry.args],
                                       env=env, childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as error:
            self._cleanup_dir()
            raise PluginLoadError(self.name, f"cannot start {executable}: {error}") from None
        try:
            await self._connect(deadline)
        except BaseException as error:
            await self._kill_now()
            if isinstance(error, PluginLoadError):
                raise
            raise PluginLoadError(self.name, f"unexpected error while starting: {error!r}") from error

    def _verified_executable(self) -> str:
        try:
            executable = resolve_executable(self.entry.local_path)
        except FileNotFoundError as error:
            raise PluginLoadError(self.name, str(error)) from None
        if not self._dev:
            if not self.entry.checksum:
                raise PluginLoadError(self.name, "no checksum configured (required unless --dev)")
            try:
                verify_checksum(executable, self.entry.checksum)
            except (ValueError, OSError) as error:
                raise PluginLoadError(self.name, str(error)) from None
        return executable

    async def _connect(self, deadline: float) -> None:
        assert self._process is not None
        timeout = self._start_timeout
        try:
            line = await self._process.handshake.addTimeout(timeout, self._reactor)
        except PluginExited as exited:
            raise PluginLoadError(self.name, f"exited ({exited.status}) before its "
                                  "handshake line") from None
        except ValueError as error:
            raise PluginLoadError(self.name, str(error)) from None
        except DeferredTimeout:
            raise PluginLoadError(self.name, f"no handshake line within {timeout:g}s "
                                  "(startTimeout); killed it") from None
        try:
            handshake = parse_handshake(line)
        except HandshakeError as error:
            raise PluginLoadError(self.name, str(error)) from None
        if handshake.server_cert is not None:
            raise PluginLoadError(self.name, "plugin offers AutoMTLS although no PLUGIN_CLIENT_CERT "
                                  "was given; refusing a connection we cannot verify")
        if handshake.network == "unix" and not _inside(handshake.address, self.socket_dir):
            self._log.warn("plugin {plugin} listens on {address}, outside its private directory; "
                           "other local users may reach it", plugin=self.name,
                           address=handshake.address)
        self.handshake = handshake
        await self._transport.connect(handshake.grpc_target)
        remaining = max(deadline - self._reactor.seconds(), 0.001)
        # wait_for_ready rides out the socket's first moments; a process that
        # dies meanwhile must not make us wait for the whole startTimeout.
        call = self._transport.unary(SERVICE + "GetPluginConfig", Struct(), Struct,
                                     timeout=remaining, wait_for_ready=True)
        self._process.when_ended().addCallback(lambda _: call.called or call.cancel())
        try:
            answer = await call
        except PluginCallError as error:
            raise PluginLoadError(self.name, f"GetPluginConfig failed: {error.code}: "
                                  f"{error.details}") from None
        except CancelledError:
            raise PluginLoadError(self.name, f"exited ({self._process.exit_status}) during "
                                  "GetPluginConfig") from None
        self.metadata, self.hooks, ignored = decode_plugin_config(from_struct(answer))
        self.metadata["id"]["checksum"] = self.entry.checksum
        if ignored:
            self._log.debug("plugin {plugin} listed unknown hooks {ignored}; ignored",
                            plugin=self.name, ignored=ignored)
        self._open_stdio()

    def _open_stdio(self) -> None:
        """go-plugin's host opens StreamStdio once: a Go plugin's fmt.Print blocks otherwise."""
        relays = {grpc_stdio_pb2.StdioData.STDOUT: LineRelay(self._log, self.name),
                  grpc_stdio_pb2.StdioData.STDERR: LineRelay(self._log, self.name)}

        def on_data(message: grpc_stdio_pb2.StdioData) -> None:
            relay = relays.get(message.channel)
            if relay is not None:
                relay.feed(message.data)

        def ended(result: Any) -> None:
            for relay in relays.values():
                relay.flush()
            error = getattr(result, "value", None)
            if isinstance(error, PluginCallError) and error.code not in (
                    "UNIMPLEMENTED", "UNAVAILABLE", "CANCELLED"):
                self._log.debug("plugin {plugin}: StreamStdio ended: {error}",
                                plugin=self.name, error=str(error))
            # Unimplemented (most Python plugins), a closed channel or our own
            # cancel on stop are all normal ends of this stream.

        self._stdio = self._transport.stream(STREAM_STDIO, empty_pb2.Empty(),
                                             grpc_stdio_pb2.StdioData, on_data)
        self._stdio.addBoth(ended)

    # -- calls -----------------------------------------------------------------

    def call_hook(self, hook_name: str, payload: dict, *, timeout: float | None = None,
                  metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
                  ) -> Deferred[dict]:
        """
        Call one hook RPC.

        @param timeout: seconds left for this call (the registry passes what
            remains of the chain's C{timeout}); L{call_timeout} when None.
        @param metadata: gRPC metadata, e.g. C{{"traceparent": ...}}.
        @return: fires with the result dict, fails with L{PluginCallError}.
        """
        method = METHOD_BY_HOOK.get(hook_name)
        if method is None:
            return fail(ValueError(f"unknown hook {hook_name!r}"))
        try:
            request = to_struct(payload)
        except (TypeError, ValueError) as error:
            return fail(error)
        return self._transport.unary(
            method, request, Struct,
            timeout=self._call_timeout if timeout is None else timeout,
            metadata=_grpc_metadata(metadata)).addCallback(from_struct)

    def ping(self) -> Deferred[bool]:
        """C{grpc.health.v1.Health/Check("plugin")}: True when the plugin is SERVING."""
        if not self.running or self.handshake is None:
            return succeed(False)
        return self._transport.unary(
            HEALTH_CHECK, health_pb2.HealthCheckRequest(service=HEALTH_SERVICE),
            health_pb2.HealthCheckResponse, timeout=self._ping_timeout,
        ).addCallbacks(lambda r: r.status == health_pb2.HealthCheckResponse.SERVING,
                       lambda _: False)

    # -- stop ------------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """
        GRPCController/Shutdown, then SIGTERM, then SIGKILL, each after
        C{stop_grace} seconds; fires when the process is gone.  Idempotent.
        """
        if self._stopping is None:
            self._stopping = Deferred.fromCoroutine(self._stop()).addErrback(
                lambda f: self._log.failure("plugin {plugin}: error while stopping", f,
                                            plugin=self.name))
        result: Deferred[None] = Deferred()
        self._stopping.addCallback(lambda _: result.callback(None))
        return result

    async def _stop(self) -> None:
        process = self._process
        if process is not None and process.running and self.handshake is not None:
            try:
                await self._transport.unary(SHUTDOWN, grpc_controller_pb2.Empty(),
                                            grpc_controller_pb2.Empty, timeout=self._stop_grace)
            except Exception:  # noqa: BLE001 - go-plugin ignores Shutdown errors too
                pass
        await self._transport.close()
        if process is not None:
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if not process.running:
                    break
                if sig is not None:
                    self._signal(sig)
                if sig == signal.SIGKILL:
                    await process.when_ended()
                else:
                    await self._wait_ended(self._stop_grace)
        self._cleanup_dir()

    async def _kill_now(self) -> None:
        await self._transport.close()
        if self._process is not None and self._process.running:
            self._signal(signal.SIGKILL)
            await self._process.when_ended()
        self._cleanup_dir()

    def _signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)  # type: ignore[arg-type]
        except (OSError, TypeError):
            pass

    def _wait_ended(self, seconds: float) -> Deferred[None]:
        assert self._process is not None
        waited: Deferred[None] = Deferred()
        timer = self._reactor.callLater(seconds, lambda: waited.called or waited.callback(None))

        def ended(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if not waited.called:
                waited.callback(None)
        self._process.when_ended().addCallback(ended)
        return waited

    def _cleanup_dir(self) -> None:
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
