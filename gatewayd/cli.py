# -*- test-case-name: tests.integration.test_cli -*-
"""
The C{gatewayd} command: C{run}, C{version}, C{config ...}, C{plugin ...}.

C{run} picks and installs a reactor first (epoll by default: the fastest data
path we measured; C{asyncio} when gRPC plugins should run in-loop), then builds
the same L{GatewayService} that twistd and embedders use.
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
from typing import Any, Sequence

from gatewayd import __version__

EXIT_CONFIG = 1


def version_line() -> str:
    return (f"gatewayd {__version__} (Python {platform.python_version()}, "
            f"{platform.system().lower()}/{platform.machine()})")


def build_service_or_exit(reactor: Any, config_path: str | None, plugins_path: str | None, *,
                          dev: bool = False, tracer_provider: Any = None) -> Any:
    """
    Load both files and build the gateway.  A bad configuration prints one line
    per problem (file, key, what is wrong) on stderr and exits 1.
    """
    from gatewayd.config import load
    from gatewayd.errors import ConfigError, ConfigErrors
    from gatewayd.service import GatewayService

    try:
        config = load(config_path, plugins_path)
        return GatewayService(config, reactor, dev=dev, tracer_provider=tracer_provider)
    except ConfigErrors as e:
        for error in e.errors:
            print(f"gatewayd: {error}", file=sys.stderr)
    except ConfigError as e:
        print(f"gatewayd: {e}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def _install_reactor(name: str) -> Any:
    if name == "asyncio":
        from twisted.internet import asyncioreactor
        asyncioreactor.install()
    elif name == "uvloop":
        import asyncio

        import uvloop  # type: ignore[import-not-found]
        from twisted.internet import asyncioreactor
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor
    return reactor


def _tracer_provider_or_exit(collector_url: str) -> Any:
    """The OTLP provider for C{--tracing}; exit 1 with one line when the extra is missing."""
    from gatewayd.observability.tracing import TracingUnavailable, setup_otlp

    try:
        return setup_otlp(collector_url, __version__)
    except TracingUnavailable as e:
        print(f"gatewayd: --tracing: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _stop(service: Any, provider: Any, reactor: Any) -> Any:
    """Stop the gateway, then flush its last spans (closing connections end theirs)."""
    from twisted.internet import defer

    from gatewayd.observability.tracing import shutdown_provider

    stopped = defer.maybeDeferred(service.stopService)
    if provider is not None:
        def flush(result: Any) -> Any:
            flushing = shutdown_provider(provider, reactor)
            if flushing is None:
                return result
            return flushing.addBoth(lambda _: result)

        stopped.addBoth(flush)
    return stopped


def cmd_run(args: argparse.Namespace) -> int:
    reactor = _install_reactor(args.reactor)
    provider = _tracer_provider_or_exit(args.collector_url) if args.tracing else None
    service = build_service_or_exit(reactor, args.config, args.plugin_config, dev=args.dev,
                                    tracer_provider=provider)
    from twisted.logger import globalLogBeginner
    # Twisted's own events and in-process plugins' logs go where loggers.default says.
    globalLogBeginner.beginLoggingTo([service.logging.observer("default")],
                                     redirectStandardIO=False)
    status = {"code": 0}

    def bind_failed(failure: Any) -> None:
        print(f"gatewayd: cannot start: {failure.getErrorMessage()}", file=sys.stderr)
        status["code"] = 1
        reactor.stop()

    def on_signal(signum: int, frame: Any) -> None:
        name = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupt",
                signal.SIGHUP: "hangup"}.get(signum, "unknown")
        reactor.callFromThread(service.signalled, name)
        reactor.callFromThread(reactor.stop)

    def installed() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        try:
            service.startService()
        except Exception as e:  # a busy metrics/API port, an unreadable log file...
            print(f"gatewayd: cannot start: {e}", file=sys.stderr)
            status["code"] = 1
            reactor.stop()
            return
        service.ready.addErrback(bind_failed)

    reactor.callWhenRunning(installed)
    reactor.addSystemEventTrigger("before", "shutdown", _stop, service, provider, reactor)
    reactor.run()
    return status["code"]


def cmd_version(args: argparse.Namespace) -> int:
    print(version_line())
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gatewayd",
                                  description="PostgreSQL database gateway on Twisted")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("-c", "--config", help="global config file (default ./gatewayd.yaml)")
    run.add_argument("-p", "--plugin-config",
                     help="plugins config file (default ./gatewayd_plugins.yaml)")
    run.add_argument("--dev", action="store_true", help="skip plugin checksum verification")
    run.add_argument("--reactor", choices=("epoll", "asyncio", "uvloop"), default="epoll",
                     help="event loop (epoll: fastest relay; asyncio: in-loop grpc.aio)")
    run.add_argument("--tracing", action="store_true", help="export OpenTelemetry traces")
    run.add_argument("--collector-url", default="localhost:4317",
                     help="OTLP/gRPC collector (with --tracing)")
    run.set_defaults(func=cmd_run)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    from gatewayd.config.commands import add_commands as add_config_commands
    add_config_commands(sub)
    from gatewayd.plugins.commands import add_commands as add_plugin_commands
    add_plugin_commands(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args) or 0)
