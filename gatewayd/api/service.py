# -*- test-case-name: tests.integration.test_api_gateway -*-
"""
The admin API's services and L{api_services}, the one call
L{gatewayd.service.GatewayService} makes to get them.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from gatewayd.api.auth import TokenCheck, is_loopback, resolve_token, token_file_exposed
from gatewayd.api.grpc_server import ApiGrpcService
from gatewayd.api.http import AdminResource, AdminSite
from gatewayd.api.state import AdminState, format_address
from gatewayd.config.schema import API
from gatewayd.errors import ConfigError
from gatewayd.observability.metrics import parse_listen_address


class ApiHttpService(Service):
    """
    Listens on C{api.httpAddress} while running.  A busy port makes
    C{startService} raise at once, like the metrics endpoint.

    @ivar port: the listening port once started.
    """

    name = "api-http"

    def __init__(self, endpoint: IStreamServerEndpoint, site: AdminSite, log: Logger,
                 address: str = "") -> None:
        self.endpoint = endpoint
        self.site = site
        self.log = log
        self.address = address
        self.port: IListeningPort | None = None

    def startService(self) -> None:  # noqa: N802 - Twisted API
        """
        @raise OSError: the address cannot be bound, with one line naming it
            and the config key.
        """
        failed: list[Failure] = []
        self.endpoint.listen(self.site).addCallbacks(self._listening, failed.append)
        if failed:  # TCP endpoints answer synchronously
            why = failed[0].value
            reason = getattr(why, "socketError", None) or why
            raise OSError(f"admin API (HTTP) cannot listen on {self.address} (api.httpAddress): "
                          f"{getattr(reason, 'strerror', None) or reason}")
        super().startService()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self.log.info("admin API (HTTP) listening on http://{address}/",
                      address=format_address(port.getHost()))

    def stopService(self) -> Deferred[None] | None:  # noqa: N802 - Twisted API
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None  # type: ignore[return-value]


def api_services(gateway: Any, config: API, reactor: Any, *,
                 environ: Mapping[str, str] | None = None) -> list[IService]:
    """
    The admin API of C{gateway}: an HTTP and a gRPC service to add to its
    C{MultiService}, or none when C{api.enabled} is false.

    @param gateway: the L{gatewayd.service.GatewayService} to show.
    @param config: C{api} of C{gatewayd.yaml}.
    @param environ: where C{GATEWAYD_API_TOKEN} is read (default C{os.environ}).
    @raise ConfigError: a bad C{httpAddress} or an unreadable C{tokenFile}.
    """
    if not config.enabled:
        return []
    path = getattr(gateway.config, "global_path", None)
    log = gateway.logging.logger("default", "gatewayd.api")
    token, source = resolve_token(config, environ=environ, config_path=path)
    auth = TokenCheck(token)
    if token is not None:
        log.info("admin API requires a bearer token (from {source})", source=source)
        if config.token_file and source.startswith("api.tokenFile") \
                and token_file_exposed(config.token_file):
            log.warn("admin API token file {path} is readable by other users; chmod 600 it",
                     path=config.token_file)
    try:
        interface, port = parse_listen_address(config.http_address)
    except ValueError as e:
        raise ConfigError(path, "api.httpAddress", str(e)) from None
    state = AdminState(gateway)
    metrics = getattr(gateway, "metrics", None)
    site = AdminSite(AdminResource(state, auth, metrics, log), log, reactor)
    endpoint: IStreamServerEndpoint
    if ":" in interface:
        endpoint = TCP6ServerEndpoint(reactor, port, interface=interface)
    else:
        endpoint = TCP4ServerEndpoint(reactor, port, interface=interface)
    if token is None:
        _warn_if_exposed(log, "HTTP", "api.httpAddress", interface)
        if config.grpc_network != "unix":
            host = config.grpc_address.rpartition(":")[0].strip("[]")
            _warn_if_exposed(log, "gRPC", "api.grpcAddress", host)
    return [
        ApiHttpService(endpoint, site, log, config.http_address),
        ApiGrpcService(state, reactor, config.grpc_network, config.grpc_address, auth, metrics,
                       log),
    ]


def _warn_if_exposed(log: Logger, face: str, key: str, host: str) -> None:
    if not is_loopback(host):
        log.warn("admin API ({face}) on {key} is reachable from other hosts ({host}) and has "
                 "no token: set api.token, api.tokenFile or GATEWAYD_API_TOKEN",
                 face=face, key=key, host=host or "all interfaces")

