"""
An existing Twisted application that embeds the gateway as one of its
services (run by tests/integration/test_core_lifecycle.py):

    python tests/support/embed_app.py GATEWAY_YAML PLUGINS_YAML

It builds its own C{MultiService} with a service of its own next to
L{GatewayService}, starts it, runs C{psql} through the gateway once it is
bound, stops the gateway service only (the application and its reactor keep
running), checks that the listener and the pools are closed, and prints one
JSON line per step.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer, task, utils

from gatewayd.config import load
from gatewayd.service import GatewayService


class Heartbeat(Service):
    """The host application's own work: proves the reactor outlives the gateway."""

    def __init__(self, clock: Any) -> None:
        self.beats = 0
        self._waiting: list[defer.Deferred[int]] = []
        self._loop = task.LoopingCall(self._beat)
        self._loop.clock = clock

    def _beat(self) -> None:
        self.beats += 1
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.beats)

    def next_beat(self) -> defer.Deferred[int]:
        d: defer.Deferred[int] = defer.Deferred()
        self._waiting.append(d)
        return d

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._loop.start(0.01)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._loop.running:
            self._loop.stop()


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@defer.inlineCallbacks
def main(reactor: Any, config_path: str, plugins_path: str) -> Any:
    app = MultiService()
    heartbeat = Heartbeat(reactor)
    heartbeat.setServiceParent(app)
    gateway = GatewayService(load(config_path, plugins_path), reactor)
    gateway.setServiceParent(app)
    app.startService()
    addresses = yield gateway.ready
    host, port = addresses["default"].rsplit(":", 1)
    out, err, code = yield utils.getProcessOutputAndValue(
        "psql", ["-X", "-At", "-d", f"host={host} port={port} user=postgres dbname=postgres "
                 "sslmode=disable gssencmode=disable",
                 "-c", "select current_setting('port'), 40 + 2"], env=dict(os.environ))
    emit(step="query", code=code, out=out.decode().strip(), err=err.decode().strip())
    yield defer.maybeDeferred(gateway.disownServiceParent)
    beats = heartbeat.beats
    yield heartbeat.next_beat()  # the host application keeps working
    pools = [(b.pool.idle_count, b.pool.busy_count) for g in gateway.groups.values()
             for b in g.blocks.values()]
    emit(step="stopped", gateway_running=bool(gateway.running), app_running=bool(app.running),
         refused=_refused(int(port)), pools=pools, reactor_alive=heartbeat.beats > beats)
    yield defer.maybeDeferred(app.stopService)


if __name__ == "__main__":
    task.react(main, sys.argv[1:3])
