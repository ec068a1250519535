"""
The admin API's errors, named after gRPC status codes so that the HTTP and
gRPC faces of one failure agree: same message, same C{error} label on
C{gatewayd_api_requests_errors_total}.
"""

from __future__ import annotations

#: gRPC code name -> (gRPC code number, HTTP status), as grpc-gateway maps them.
CODES: dict[str, tuple[int, int]] = {
    "InvalidArgument": (3, 400),
    "NotFound": (5, 404),
    "Unimplemented": (12, 501),
    "Internal": (13, 500),
    "Unavailable": (14, 503),
    "Unauthenticated": (16, 401),
}


class ApiError(Exception):
    """A request that gets an error answer instead of data."""

    code = "Internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        return CODES[self.code][1]

    @property
    def grpc_number(self) -> int:
        return CODES[self.code][0]

    def body(self) -> dict[str, object]:
        """
        The JSON error body: C{error} (ours), plus grpc-gateway's C{code} and
        C{message} so clients written against GatewayD's HTTP API still parse it.
        """
        return {"error": self.message, "code": self.grpc_number, "message": self.message}


class InvalidArgument(ApiError):
    code = "InvalidArgument"


class NotFound(ApiError):
    code = "NotFound"


class Unimplemented(ApiError):
    code = "Unimplemented"


class Unavailable(ApiError):
    code = "Unavailable"


class Unauthenticated(ApiError):
    code = "Unauthenticated"
