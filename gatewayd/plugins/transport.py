# -*- test-case-name: tests.integration.test_plugin_host -*-
"""
gRPC calls from Twisted code, on whichever reactor runs.

grpcio has no Twisted integration.  Two bridges, measured in docs/grpc-choice.md:

  - L{SyncGrpcTransport}: grpcio's classic channel.  C{multicallable.future()}
    runs the RPC on grpcio's own completion thread; its done-callback hops back
    with C{reactor.callFromThread}.  Works on every reactor; the default on
    epoll, where it was the fastest option.
  - L{AioGrpcTransport}: C{grpc.aio} on the asyncio loop that
    C{AsyncioSelectorReactor} drives, bridged with C{Deferred.fromFuture}.  No
    thread hop; the default on the asyncio reactor.

Both speak the same tiny API (L{GrpcTransport}) so the plugin client does not
care which one it has, and both fail with L{PluginCallError} carrying the gRPC
status code.  Messages are protobuf objects; serialisation stays here.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Protocol, Sequence

import grpc
from grpc import aio as grpc_aio
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure

from gatewayd.plugins.errors import PluginCallError

#: go-plugin and the SDK allow math.MaxInt32-byte messages both ways.
MAX_MESSAGE_BYTES = 2 ** 31 - 1

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A plugin socket is local: never route it through $http_proxy.
    ("grpc.enable_http_proxy", 0),
    ("grpc.default_authority", "localhost"),
)

Metadata = Sequence[tuple[str, str]]


class GrpcTransport(Protocol):
    """What L{gatewayd.plugins.client.GrpcPluginClient} needs from a gRPC stack."""

    name: str

    def connect(self, target: str) -> Deferred[None]:
        """Open a channel to C{target} (C{unix:/path} or C{host:port})."""

    def unary(self, method: str, request: Any, response_type: Any, timeout: float | None = None,
              metadata: Metadata | None = None, wait_for_ready: bool = False) -> Deferred[Any]:
        """One unary call; fires with the response message or fails with L{PluginCallError}."""

    def stream(self, method: str, request: Any, response_type: Any,
               on_message: Callable[[Any], None]) -> Deferred[None]:
        """A server-streaming call; C{on_message} runs in the reactor thread per message."""

    def close(self) -> Deferred[None]:
        """Close the channel, cancelling calls in flight."""


def _call_error(method: str, error: BaseException) -> BaseException:
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        code = error.code()
        return PluginCallError(method, code.name if code is not None else "UNKNOWN",
                               error.details() or "")
    return error


def is_asyncio_reactor(reactor: Any) -> bool:
    """True when C{reactor} drives an asyncio loop (C{--reactor=asyncio}/uvloop)."""
    return getattr(reactor, "_asyncioEventloop", None) is not None


def transport_for_reactor(reactor: Any, kind: str | None = None) -> GrpcTransport:
    """
    The transport to use on C{reactor}: C{kind} C{"sync"} or C{"aio"}, or the
    measured default for this reactor when None.
    """
    if kind is None:
        kind = "aio" if is_asyncio_reactor(reactor) else "sync"
    if kind == "aio":
        return AioGrpcTransport(reactor)
    if kind == "sync":
        return SyncGrpcTransport(reactor)
    raise ValueError(f"unknown gRPC transport {kind!r} (sync or aio)")


class SyncGrpcTransport:
    """grpcio's classic API; completions come back through C{callFromThread}."""

    name = "sync"

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._channel: grpc.Channel | None = None
        self._unary: dict[str, Any] = {}
        self._streams: list[Any] = []

    def connect(self, target: str) -> Deferred[None]:
        self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        return succeed(None)

    def unary(self, method: str, request: Any, response_type: Any, timeout: float | None = None,
              metadata: Metadata | None = None, wait_for_ready: bool = False) -> Deferred[Any]:
        call = self._unary.get(method)
        if call is None:
            assert self._channel is not None, "connect() first"
            call = self._channel.unary_unary(method, request_serializer=_serialize,
                                             response_deserializer=response_type.FromString)
            self._unary[method] = call
        future = call.future(request, timeout=timeout, metadata=metadata,
                             wait_for_ready=wait_for_ready)
        result: Deferred[Any] = Deferred(lambda _: future.cancel())
        call_from_thread = self._reactor.callFromThread

        def done(f: grpc.Future) -> None:  # grpcio's thread (or ours if already done)
            call_from_thread(_deliver, result, f, method)

        future.add_done_callback(done)
        return result

    def stream(self, method: str, request: Any, response_type: Any,
               on_message: Callable[[Any], None]) -> Deferred[None]:
        assert self._channel is not None, "connect() first"
        responses = self._channel.unary_stream(
            method, request_serializer=_serialize,
            response_deserializer=response_type.FromString)(request)
        self._streams.append(responses)
        finished: Deferred[None] = Deferred(lambda _: responses.cancel())
        reactor = self._reactor

        def drain() -> None:  # a blocking iterator needs a thread of its own
            try:
                for message in responses:
                    reactor.callFromThread(on_message, message)
            except grpc.RpcError as error:
                reactor.callFromThread(_fire, finished, Failure(_call_error(method, error)))
            else:
                reactor.callFromThread(_fire, finished, None)

        threading.Thread(target=drain, name=f"grpc-stream {method}", daemon=True).start()
        return finished

    def close(self) -> Deferred[None]:
        for responses in self._streams:
            responses.cancel()
        self._streams.clear()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        return succeed(None)


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def _fire(d: Deferred[Any], result: Any) -> None:
    if not d.called:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)


def _deliver(d: Deferred[Any], future: grpc.Future, method: str) -> None:
    if d.called:  # cancelled by the caller meanwhile
        return
    if future.cancelled():
        d.errback(CancelledError())
        return
    error = future.exception()
    if error is not None:
        d.errback(Failure(_call_error(method, error)))
    else:
        d.callback(future.result())


class AioGrpcTransport:
    """C{grpc.aio} on the asyncio reactor's loop: no threads."""

    name = "aio"

    def __init__(self, reactor: Any) -> None:
        if not is_asyncio_reactor(reactor):
            raise ValueError("AioGrpcTransport needs twisted.internet.asyncioreactor")
        self._loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop
        self._channel: grpc_aio.Channel | None = None
        self._unary: dict[str, Any] = {}

    def _run(self, coro: Any) -> Deferred[Any]:
        return Deferred.fromFuture(asyncio.ensure_future(coro, loop=self._loop)).addErrback(
            _translate_cancel)

    def connect(self, target: str) -> Deferred[None]:
        async def open_channel() -> None:
            # Inside a task: grpc.aio binds the channel to the running loop.
            self._channel = grpc_aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return self._run(open_channel())

    def unary(self, method: str, request: Any, response_type: Any, timeout: float | None = None,
              metadata: Metadata | None = None, wait_for_ready: bool = False) -> Deferred[Any]:
        call = self._unary.get(method)
        if call is None:
            assert self._channel is not None, "connect() first"
            call = self._channel.unary_unary(method, request_serializer=_serialize,
                                             response_deserializer=response_type.FromString)
            self._unary[method] = call

        async def invoke() -> Any:
            try:
                return await call(request, timeout=timeout, metadata=metadata,
                                  wait_for_ready=wait_for_ready)
            except grpc_aio.AioRpcError as error:
                raise _call_error(method, error) from None
        return self._run(invoke())

    def stream(self, method: str, request: Any, response_type: Any,
               on_message: Callable[[Any], None]) -> Deferred[None]:
        assert self._channel is not None, "connect() first"
        call = self._channel.unary_stream(method, request_serializer=_serialize,
                                          response_deserializer=response_type.FromString)

        async def drain() -> None:
            try:
                async for message in call(request):
                    on_message(message)
            except grpc_aio.AioRpcError as error:
                raise _call_error(method, error) from None
        return self._run(drain())

    def close(self) -> Deferred[None]:
        channel, self._channel = self._channel, None
        if channel is None:
            return succeed(None)

        async def close_channel() -> None:
            await channel.close()
        return self._run(close_channel())


def _translate_cancel(failure: Failure) -> Failure:
    # fromFuture's canceller surfaces asyncio.CancelledError, a BaseException
    # that "except Exception" in callers would miss (twisted-style.md B.4).
    if failure.check(asyncio.CancelledError):
        return Failure(CancelledError())
    return failure
