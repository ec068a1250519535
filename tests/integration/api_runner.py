"""
`gatewayd run` with the admin API attached, for the admin API's integration
tests, until L{GatewayService} builds it itself.

Usage: python -m tests.integration.api_runner run -c gatewayd.yaml -p plugins.yaml

It runs the real CLI path (`gatewayd.cli.main`: reactor, signals, shutdown)
and only wraps the service builder: when the service has no C{api-http}
child it adds L{gatewayd.api.api_services}.  Once the service does that, this
is plain `gatewayd run`.

Also holds L{SecretPlugin}, an in-process plugin whose config carries a secret.
"""

from __future__ import annotations

import sys
from typing import Any

from gatewayd.sdk import Plugin, hook


class SecretPlugin(Plugin):
    """An in-process plugin with a secret in its config (which the API must redact)."""

    name = "secret-plugin"
    version = "1.2.3"
    description = "test plugin holding a secret"
    authors = ("gatewayd tests",)
    license = "AGPL-3.0"
    tags = ("test",)

    @hook("onOpened")
    def opened(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload


def _attach(service: Any, reactor: Any) -> None:
    names = {getattr(child, "name", None) for child in service}
    if "api-http" not in names:
        from gatewayd.api import api_services

        for child in api_services(service, service.config.global_.api, reactor):
            child.setServiceParent(service)


def main() -> int:
    import gatewayd.cli as cli

    build = cli.build_service_or_exit

    def build_with_api(reactor: Any, *args: Any, **kwargs: Any) -> Any:
        service = build(reactor, *args, **kwargs)
        _attach(service, reactor)
        return service

    cli.build_service_or_exit = build_with_api
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
