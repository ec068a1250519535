"""Exceptions shared across gatewayd's rooms."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of gatewayd's own errors."""


class ConfigError(GatewayError):
    """
    A bad configuration: one line naming the file, the key path and the problem.

    @ivar path: the file (str) or None for built-in defaults / environment.
    @ivar key: dotted key path, e.g. C{clients.default.writes.dialTimeout}.
    """

    def __init__(self, path: str | None, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = path if path else "<environment>"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


class PoolExhausted(GatewayError):
    """No backend connection became free within the pool's waitTimeout (SQLSTATE 53300)."""


class BackendUnavailable(GatewayError):
    """The block's PostgreSQL server cannot be reached (SQLSTATE 08006)."""


class ProtocolViolation(GatewayError):
    """
    A malformed or oversized PostgreSQL message (SQLSTATE 08P01 unless C{sqlstate}).
    """

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class ConfigErrors(GatewayError):
    """Several L{ConfigError}s found at once; printed one per line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
