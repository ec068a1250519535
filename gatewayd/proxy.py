# -*- test-case-name: tests.unit.test_proxy -*-
"""
The relay: one client paired with one backend connection for a session.

Two modes, chosen when the session starts:

  - **pump** (no plugin subscribed to a traffic hook): bytes are written on as
    they arrive, with eager sends (L{gatewayd.transport}).  Per read: one write
    and four integer additions; the server-to-client side also walks message
    headers (L{MessageScanner}, no copies) so we know transaction status and
    message boundaries.  Until the first ReadyForQuery the server side is framed
    to pick up BackendKeyData for cancellation.
  - **framed** (a traffic hook is subscribed): each read is framed into whole
    messages; a batch of complete messages goes through the hook chain while the
    source transport is paused (so memory stays bounded and order is kept), and
    what the chain returns is forwarded.

Flow control both ways with producers/consumers, as twisted.protocols.portforward.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.logger import Logger
from twisted.python.failure import Failure

from gatewayd.backend import BackendConnection
from gatewayd.block import Block
from gatewayd.cancel import CancelRegistry
from gatewayd.errors import ProtocolViolation
from gatewayd.hooks import names as hook
from gatewayd.hooks.replies import awaiting_sync, with_ready_status
from gatewayd.interfaces import IHookRegistry
from gatewayd.pgwire import (
    MessageFramer,
    MessageScanner,
    error_response,
    parse_backend_key_data,
    query,
    ready_for_query,
    sqlstate,
)
from gatewayd.transport import eager_writer

_now = time.monotonic
_IDLE = ord("I")
_KEY = ord("K")
_READY = ord("Z")
_SYNC = ord("S")
_IN_TRANSACTION = ord("T")
_FAILED = ord("E")
#: A client's Terminate: the backend will close the socket, and that is no failure.
_TERMINATE = b"X\x00\x00\x00\x04"
#: ReadyForQuery without its status byte: a server read ending with it leaves nothing in flight.
_READY_HEADER = b"Z\x00\x00\x00\x05"
#: Sent to a backend inside a transaction when a plugin refused a statement.
_ABORT_TRANSACTION = query(
    "DO $gatewayd$BEGIN RAISE EXCEPTION 'statement refused by a gatewayd plugin'; END$gatewayd$")


def _sync_points(batch: bytes) -> int:
    """How many ReadyForQuery answers C{batch} (whole messages) will cause: its Q and S."""
    count, pos, end = 0, 0, len(batch) - 5
    while pos <= end:
        kind = batch[pos]
        if kind == 81 or kind == 83:  # 'Q', 'S'
            count += 1
        pos += 1 + int.from_bytes(batch[pos + 1:pos + 5], "big")
    return count


class Session:
    """
    @ivar frontend: the client's protocol (L{gatewayd.server.FrontendProtocol}).
    @ivar backend: the L{BackendConnection} taken from the block's pool.
    """

    def __init__(self, frontend: Any, backend: BackendConnection, block: Block,
                 hooks: IHookRegistry, cancels: CancelRegistry, *,
                 max_message_size: int = 1 << 30, log: Logger | None = None) -> None:
        self.frontend = frontend
        self.backend = backend
        self.block = block
        self.stats = block.stats
        self.hooks = hooks
        self.cancels = cancels
        self.log = log or Logger()
        self.closed = False
        #: the client sent Terminate (its last message)
        self.client_terminated = False
        #: the backend closed the socket under a live session, unasked
        self.server_closed = False
        #: the client sent something the server has not answered with ReadyForQuery yet
        self.in_flight = False
        self.ready = False
        self._ready_status = 0
        self._query_start = 0.0
        self._transaction_start = 0.0
        self.cancel_key: tuple[int, bytes] | None = None
        self.hooked = any(hooks.is_subscribed(name) for name in hook.TRAFFIC)
        self.scanner = MessageScanner(max_message_size)
        #: follows the client's stream in pump mode, to enforce maxMessageSize
        self.client_scanner = MessageScanner(max_message_size)
        self._server_framer = MessageFramer(max_message_size)
        self._client_framer = MessageFramer(max_message_size)
        self._write_backend: Callable[[bytes], None] = eager_writer(backend.transport)
        self._write_client: Callable[[bytes], None] = eager_writer(frontend.transport)
        self._base_payload: dict[str, Any] = {}
        self._last_request = b""
        self._client_busy = False
        self._server_busy = False
        self._client_pending: list[bytes] = []
        self._discard_until_sync = False
        self._swallow_replies = 0
        #: Query/Sync messages sent whose ReadyForQuery has not come back (framed mode)
        self._awaiting_ready = 0
        self._server_pending: list[bytes] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, startup_packet: bytes) -> None:
        """Wire the two sockets together and send the client's StartupMessage on."""
        front, back = self.frontend.transport, self.backend.transport
        back.registerProducer(front, True)
        front.registerProducer(back, True)
        self.backend.on_lost = self._backend_lost
        if self.hooked:
            self._base_payload = {
                "client": self.frontend.peer_info(),
                "server": {"local": self.backend.local_address(),
                           "remote": self.block.target.address},
                "error": "",
            }
            self.backend.attach(self, self._server_framed)
            self.frontend.dataReceived = self._client_framed
            self._client_batch(startup_packet)
        else:
            self.backend.attach(self, self._server_startup)
            self.frontend.dataReceived = self._client_pump
            self._forward_startup(startup_packet)

    def end(self, reason: str = "") -> None:
        """Close both sides once; the backend socket goes back to its pool to be re-dialled."""
        if self.closed:
            return
        self.closed = True
        if self.cancel_key is not None:
            self.cancels.unregister(*self.cancel_key)
        self.stats.proxied_connections -= 1
        front = self.frontend.transport
        # Only a live transport has a producer to drop: one whose connectionLost
        # is running has already dropped it, and a TLS one would raise here
        # (its protocol is gone), skipping the release below.
        for transport in (front, self.backend.transport):
            if transport is not None and transport.connected:
                transport.unregisterProducer()
        self.block.pool.release(self.backend)
        if front is not None and front.connected:
            front.loseConnection()

    def at_message_boundary(self) -> bool:
        """True when the client has received whole messages only (we may add an ErrorResponse)."""
        if self.hooked:
            return self._server_framer.buffered == 0
        return not self.scanner.in_message

    @property
    def idle(self) -> bool:
        """The backend said ReadyForQuery 'I' last and no request is in flight."""
        return self.ready and self.scanner.ready_status == ord("I") and self.at_message_boundary()

    def _backend_lost(self, conn: BackendConnection, reason: Failure) -> None:
        if self.closed:
            return
        self.server_closed = not self.client_terminated
        if (self.server_closed and self.at_message_boundary()
                and self.frontend.transport.connected):
            self._write_client(error_response(
                sqlstate.CONNECTION_FAILURE, "server closed the connection unexpectedly",
                severity="FATAL",
                detail=f"backend {self.block.group}/{self.block.name} ({self.block.target.address})"
                       " went away"))
        self.end("backend closed")

    # -- pump mode ------------------------------------------------------------------------

    def _forward_startup(self, packet: bytes) -> None:
        """The StartupMessage has no type byte: it bypasses the client scanner."""
        stats = self.stats
        stats.bytes_received_from_client += len(packet)
        stats.reads_from_client += 1
        stats.bytes_sent_to_server += len(packet)
        stats.writes_to_server += 1
        self._write_backend(packet)

    def _client_pump(self, data: bytes) -> None:
        try:
            self.client_scanner.feed(data)
        except ProtocolViolation as e:
            self.frontend.protocol_violation(e)
            return
        if data.endswith(_TERMINATE):
            self.client_terminated = True
        if not self.in_flight:  # a new request after ReadyForQuery: time it
            self._request_started()
        self.in_flight = True
        stats = self.stats
        n = len(data)
        stats.bytes_received_from_client += n
        stats.reads_from_client += 1
        stats.bytes_sent_to_server += n
        stats.writes_to_server += 1
        self._write_backend(data)

    def _server_pump(self, data: bytes) -> None:
        try:
            self.scanner.feed(data)
        except ProtocolViolation as e:
            self._server_violation(e)
            return
        if data.endswith(_READY_HEADER, 0, len(data) - 1):  # no slice copy per read
            self.in_flight = False
            self._request_done(data[-1])
        stats = self.stats
        n = len(data)
        stats.bytes_received_from_server += n
        stats.reads_from_server += 1
        stats.bytes_sent_to_client += n
        stats.writes_to_client += 1
        self._write_client(data)

    def _request_started(self) -> None:
        """A request left for the server while none was pending: start its clocks."""
        self._query_start = _now()
        if not self._transaction_start:
            self._transaction_start = self._query_start

    def _request_done(self, status: int) -> None:
        """ReadyForQuery ended a request: observe its duration, and the transaction's when idle."""
        if self._query_start:
            now = _now()
            self.stats.query_duration.observe(now - self._query_start)
            self._query_start = 0.0
            if status == _IDLE and self._transaction_start:
                self.stats.transaction_duration.observe(now - self._transaction_start)
                self._transaction_start = 0.0

    def _server_startup(self, data: bytes) -> None:
        """Frame the server side until the first ReadyForQuery, then pump."""
        try:
            messages = self._server_framer.feed(data)
        except ProtocolViolation as e:
            self._server_violation(e)
            return
        for msg in messages:
            self._note_server_message(msg)
        if self.ready:
            self.backend.dataReceived = self._server_pump
            tail = self._server_framer.buffered
            self.scanner.ready_status = self._ready_status
            if tail:
                self.scanner.feed(data[len(data) - tail:])
        stats = self.stats
        stats.bytes_received_from_server += len(data)
        stats.reads_from_server += 1
        stats.bytes_sent_to_client += len(data)
        stats.writes_to_client += 1
        self._write_client(data)

    def _note_server_message(self, msg: bytes) -> None:
        kind = msg[0]
        if kind == _KEY and self.cancel_key is None:
            try:
                self.cancel_key = parse_backend_key_data(msg[5:])
            except ProtocolViolation:
                return
            self.cancels.register(*self.cancel_key, self.block.target)
        elif kind == _READY and len(msg) == 6:
            self.ready = True
            self.in_flight = False
            self._ready_status = msg[5]

    def _server_violation(self, e: ProtocolViolation) -> None:
        self.log.error("backend {address} sent a malformed message: {why}",
                       address=self.block.target.address, why=str(e))
        self.end("backend protocol violation")

    # -- framed mode (traffic hooks) -------------------------------------------------------

    def _payload(self, **extra: bytes) -> dict[str, Any]:
        payload = dict(self._base_payload)
        payload.update(extra)
        return payload

    def _client_framed(self, data: bytes) -> None:
        if self._client_busy:
            self._client_pending.append(data)
            self.frontend.transport.pauseProducing()
            return
        try:
            messages = self._client_framer.feed(data)
        except ProtocolViolation as e:
            self.frontend.protocol_violation(e)
            return
        if messages and messages[-1] == _TERMINATE:
            self.client_terminated = True
        if messages and self._discard_until_sync:
            messages = self._skip_to_sync(messages)
        if messages:
            self._client_batch(messages[0] if len(messages) == 1 else b"".join(messages))

    def _skip_to_sync(self, messages: list[bytes]) -> list[bytes]:
        """
        After a refused extended-protocol batch whose Sync had not arrived: drop
        the rest of that batch (PostgreSQL would skip it too) and answer its Sync.
        """
        for index, msg in enumerate(messages):
            if msg[0] == _SYNC:
                self._discard_until_sync = False
                self._to_client(ready_for_query(self._client_status()), self._last_request)
                return messages[index + 1:]
        return []

    def _client_status(self) -> bytes:
        """The status a client must see after a refused statement: E inside a transaction."""
        return b"E" if self._ready_status in (_IN_TRANSACTION, _FAILED) else b"I"

    def _client_batch(self, batch: bytes) -> None:
        self.stats.bytes_received_from_client += len(batch)
        self.stats.reads_from_client += 1
        if not self.hooks.is_subscribed(hook.ON_TRAFFIC_FROM_CLIENT):
            self._to_server(batch)
            return
        self._client_busy = True
        self.frontend.transport.pauseProducing()
        d = self.frontend.run_hook(hook.ON_TRAFFIC_FROM_CLIENT, self._payload(request=batch))
        d.addCallback(self._from_client_done, batch)
        d.addErrback(self._hook_failed, "client", batch)

    def _from_client_done(self, result: dict[str, Any], batch: bytes) -> None:
        if self.closed:
            return
        if result.get("__terminal__"):
            self.stats.passthrough_terminations += 1
            response = result.get("response")
            if not isinstance(response, (bytes, bytearray)) or not response:
                self.end("terminated by plugin")
                return
            if self._ready_status == _IN_TRANSACTION and not self._awaiting_ready:
                # The client now believes its transaction failed; make it so on
                # the backend too, so a later COMMIT cannot commit half of it.
                self._swallow_replies += 1
                self._write_backend(_ABORT_TRANSACTION)
            self._to_client(with_ready_status(bytes(response), self._client_status()),
                            request=batch)
            if awaiting_sync(batch):
                self._discard_until_sync = True
        else:
            request = result.get("request")
            self._to_server(bytes(request) if isinstance(request, (bytes, bytearray)) and request
                            else batch)
        self._client_busy = False
        self._resume_client()

    def _resume_client(self) -> None:
        pending, self._client_pending = self._client_pending, []
        for data in pending:
            self._client_framed(data)
        if not self._client_busy and not self.closed:
            self.frontend.transport.resumeProducing()

    def _to_server(self, batch: bytes) -> None:
        self.in_flight = True
        self._last_request = batch
        points = _sync_points(batch)
        if points and self.ready and not self._query_start:
            self._request_started()
        self._awaiting_ready += points
        self._write_backend(batch)
        self.stats.bytes_sent_to_server += len(batch)
        self.stats.writes_to_server += 1
        self.stats.passthroughs_to_server += 1
        if self.hooks.is_subscribed(hook.ON_TRAFFIC_TO_SERVER):
            self.frontend.run_hook(hook.ON_TRAFFIC_TO_SERVER, self._payload(request=batch))

    def _server_framed(self, data: bytes) -> None:
        if self._server_busy:
            self._server_pending.append(data)
            self.backend.transport.pauseProducing()
            return
        try:
            messages = self._server_framer.feed(data)
        except ProtocolViolation as e:
            self._server_violation(e)
            return
        if self._swallow_replies:
            messages = self._swallow(messages)
        if not messages:
            return
        for msg in messages:
            kind = msg[0]
            if kind == _READY or kind == _KEY:
                self._note_server_message(msg)
                if kind == _READY and self._awaiting_ready:
                    self._awaiting_ready -= 1
                    if not self._awaiting_ready and len(msg) == 6:
                        self._request_done(msg[5])
        self.scanner.ready_status = self._ready_status
        batch = messages[0] if len(messages) == 1 else b"".join(messages)
        self.stats.bytes_received_from_server += len(batch)
        self.stats.reads_from_server += 1
        if not self.hooks.is_subscribed(hook.ON_TRAFFIC_FROM_SERVER):
            self._to_client(batch, self._last_request)
            return
        self._server_busy = True
        self.backend.transport.pauseProducing()
        request = self._last_request
        d = self.frontend.run_hook(hook.ON_TRAFFIC_FROM_SERVER,
                           self._payload(request=request, response=batch))
        d.addCallback(self._from_server_done, batch, request)
        d.addErrback(self._hook_failed, "server", batch)

    def _swallow(self, messages: list[bytes]) -> list[bytes]:
        """Drop the backend's answers to our own transaction-abort queries."""
        for index, msg in enumerate(messages):
            if msg[0] == _READY:
                self._ready_status = msg[5] if len(msg) == 6 else self._ready_status
                self._swallow_replies -= 1
                if not self._swallow_replies:
                    return messages[index + 1:]
        return []

    def _from_server_done(self, result: dict[str, Any], batch: bytes, request: bytes) -> None:
        if self.closed:
            return
        response = result.get("response")
        if result.get("__terminal__") and not response:
            self.stats.passthrough_terminations += 1
            self.end("terminated by plugin")
            return
        # GatewayD drops this result under its default policy (reference 3.4); we apply it.
        self._to_client(bytes(response) if isinstance(response, (bytes, bytearray)) and response
                        else batch, request)
        self._server_busy = False
        pending, self._server_pending = self._server_pending, []
        for data in pending:
            self._server_framed(data)
        if not self._server_busy and not self.closed:
            self.backend.transport.resumeProducing()

    def _to_client(self, response: bytes, request: bytes) -> None:
        self._write_client(response)
        self.stats.bytes_sent_to_client += len(response)
        self.stats.writes_to_client += 1
        self.stats.passthroughs_to_client += 1
        if self.hooks.is_subscribed(hook.ON_TRAFFIC_TO_CLIENT):
            self.frontend.run_hook(hook.ON_TRAFFIC_TO_CLIENT,
                           self._payload(request=request, response=response))

    def _hook_failed(self, failure: Failure, side: str, batch: bytes) -> None:
        """The registry never fails by contract; if it does anyway, pass the bytes on."""
        self.log.failure("traffic hook chain failed ({side})", failure, side=side)
        if self.closed:
            return
        if side == "client":
            self._from_client_done({}, batch)
        else:
            self._from_server_done({}, batch, self._last_request)
