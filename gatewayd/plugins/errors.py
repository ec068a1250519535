"""
Why a plugin could not be loaded or called.

One exception per failure kind the operator can act on; their C{str} is the
single log line the host writes when it refuses a plugin.
"""

from __future__ import annotations


class PluginLoadError(Exception):
    """A plugin was refused at load time: bad checksum, no handshake, ..."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(name, problem)
        self.name = name
        self.problem = problem

    def __str__(self) -> str:
        return f"plugin {self.name}: {self.problem}"


class HandshakeError(ValueError):
    """The go-plugin handshake line is malformed or unsupported."""


class PluginCallError(Exception):
    """
    A gRPC call to a plugin failed.

    @ivar code: the C{grpc.StatusCode} name (C{"DEADLINE_EXCEEDED"}, C{"UNAVAILABLE"}, ...).
    @ivar details: the status message.
    """

    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(method, code, details)
        self.method = method
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.method}: {self.code}: {self.details}"
