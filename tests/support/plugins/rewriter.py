"""
In-process test plugin: rewrites a request and a response, and records every
hook it sees (to a JSON-lines file named by its C{config.record}).
"""

from __future__ import annotations

import json
from typing import Any

from gatewayd.hooks import names
from gatewayd.pgwire import query
from gatewayd.sdk import Plugin, hook


class _Rewriter(Plugin):
    """C{select 'ping'} reaches PostgreSQL as C{select 'pong'}; C{'secret'} leaves as C{'******'}."""

    name = "test-rewriter"
    version = "0.1.0"

    def _record(self, hook_name: str, payload: dict[str, Any]) -> None:
        path = self.config.get("record")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"hook": hook_name, "keys": sorted(payload)}) + "\n")

    @hook("onTrafficFromClient")
    def from_client(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._record("onTrafficFromClient", payload)
        if payload.get("request") == query("select 'ping'"):
            payload["request"] = query("select 'pong'")
        return payload

    @hook("onTrafficFromServer")
    def from_server(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._record("onTrafficFromServer", payload)
        response = payload.get("response", b"")
        if b"secret" in response:
            payload["response"] = response.replace(b"secret", b"******")
        return payload


def _recorder(name: str):
    def method(self: _Rewriter, payload: dict[str, Any]) -> dict[str, Any]:
        self._record(name, payload)
        return payload
    method.__name__ = f"record_{name}"
    return hook(name)(method)


#: Also records every other hook (the SDK collects hooks when the class is made).
Rewriter = type("Rewriter", (_Rewriter,), {
    f"record_{name}": _recorder(name)
    for name in sorted(names.ALL - {names.ON_TRAFFIC_FROM_CLIENT, names.ON_TRAFFIC_FROM_SERVER,
                                    names.ON_HOOK})})
