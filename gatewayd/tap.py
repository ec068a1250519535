# -*- test-case-name: tests.unit.test_tap -*-
"""
twistd glue: C{twistd -n gatewayd --config etc/gatewayd.yaml}.

Only options and L{makeService}; the dropin in C{twisted/plugins/} imports this
module lazily, when someone actually runs the subcommand.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from gatewayd import __version__


class Options(usage.Options):
    """Same flags as C{gatewayd run}."""

    synopsis = "[--config PATH] [--plugin-config PATH] [--dev]"
    optParameters = [
        ["config", "c", None, "global config file (default ./gatewayd.yaml, then /etc)"],
        ["plugin-config", "p", None, "plugins config file (default ./gatewayd_plugins.yaml)"],
    ]
    optFlags = [["dev", None, "development mode: plugin checksums are not verified"]]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"gatewayd {__version__}")
        sys.exit(0)


def makeService(options: Options) -> Any:  # noqa: N802 (twistd API)
    """Load the configuration and build the gateway; a bad config exits 1 with one line per error."""
    from twisted.internet import reactor  # twistd has installed the chosen reactor by now

    from gatewayd.cli import build_service_or_exit

    return build_service_or_exit(reactor, options["config"], options["plugin-config"],
                                 dev=bool(options["dev"]))
