# -*- test-case-name: tests.unit.test_cancel -*-
"""
Query cancellation across the gateway.

A client cancels by opening a *new* connection and sending CancelRequest with
the process id and secret key its backend gave it in BackendKeyData.  GatewayD
hands that connection a pooled backend like any other, so the cancel may reach
the wrong server ("PID ... did not match any process", #342).  We remember which
backend target sent each key and forward the CancelRequest on a fresh,
non-pooled connection to exactly that server.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from gatewayd.backend import BackendConnection, BackendTarget


class CancelRegistry:
    """(process id, secret key) -> the L{BackendTarget} whose server issued it."""

    def __init__(self, log: Logger | None = None) -> None:
        self._targets: dict[tuple[int, bytes], BackendTarget] = {}
        self.log = log or Logger()
        self.forwarded = 0
        self.unknown = 0

    def register(self, process_id: int, secret_key: bytes, target: BackendTarget) -> None:
        self._targets[(process_id, secret_key)] = target

    def unregister(self, process_id: int, secret_key: bytes) -> None:
        self._targets.pop((process_id, secret_key), None)

    def __len__(self) -> int:
        return len(self._targets)

    def forward(self, request: Any) -> defer.Deferred[bool]:
        """
        Send C{request} (a L{gatewayd.pgwire.CancelRequest}) to the server that owns its key.

        @return: Deferred firing True when sent, False for an unknown key (a guess
            or a session already gone: PostgreSQL would ignore it too, silently).
        """
        target = self._targets.get((request.process_id, request.secret_key))
        if target is None:
            self.unknown += 1
            self.log.debug("cancel request for unknown backend key (pid {pid})",
                           pid=request.process_id)
            return defer.succeed(False)

        def send(conn: BackendConnection) -> bool:
            conn.transport.write(request.raw)
            conn.transport.loseConnection()
            self.forwarded += 1
            return True

        def failed(failure: Any) -> bool:
            self.log.warn("could not forward cancel request to {address}: {why}",
                          address=target.address, why=failure.getErrorMessage())
            return False

        return target.dial().addCallbacks(send, failed)

