# -*- test-case-name: tests.unit.test_pgwire_messages -*-
"""
Named SQLSTATE codes that gatewayd itself sends to clients.

Clients (and DBAs' alerting) branch on the SQLSTATE, not on the message
text, so every ErrorResponse we build uses one of these names instead of a
bare string.  The values are PostgreSQL's (Appendix A, "PostgreSQL Error
Codes"); only the codes the gateway actually emits are listed.
"""

from __future__ import annotations

#: Class 08, malformed or unexpected protocol traffic.
PROTOCOL_VIOLATION = "08P01"
#: Class 08, the gateway lost or could not reach the backend.
CONNECTION_FAILURE = "08006"
#: Class 57, server starting up / shutting down / not accepting yet.
CANNOT_CONNECT_NOW = "57P03"
#: Class 53, no backend connection became free in time.
TOO_MANY_CONNECTIONS = "53300"
#: Class 28 (invalid_authorization_specification), e.g. no user in the startup packet.
INVALID_AUTHORIZATION = "28000"
#: Class 0A, e.g. an unsupported frontend protocol version.
FEATURE_NOT_SUPPORTED = "0A000"
#: Class 57, the gateway is shutting down and terminates the session.
ADMIN_SHUTDOWN = "57P01"
#: Class 57, a statement was cancelled (e.g. by a plugin or a timeout).
QUERY_CANCELED = "57014"
#: Class 42, a plugin (firewall) refused the statement.
INSUFFICIENT_PRIVILEGE = "42501"
#: Class 42, generic syntax error or access rule violation.
SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION = "42000"
#: Class XX, a bug in the gateway or a plugin.
INTERNAL_ERROR = "XX000"

__all__ = [
    "PROTOCOL_VIOLATION",
    "CONNECTION_FAILURE",
    "CANNOT_CONNECT_NOW",
    "TOO_MANY_CONNECTIONS",
    "INVALID_AUTHORIZATION",
    "FEATURE_NOT_SUPPORTED",
    "ADMIN_SHUTDOWN",
    "QUERY_CANCELED",
    "INSUFFICIENT_PRIVILEGE",
    "SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION",
    "INTERNAL_ERROR",
]
