"""
A whole gateway without sockets, for the admin API's unit tests: the real
L{GatewayService} built from YAML files on a L{MemoryReactorClock}, whose
backend dials and clients are completed with L{StringTransport}s.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport

from gatewayd.config import load
from gatewayd.pgwire import startup_message
from gatewayd.sdk import Plugin, hook
from gatewayd.sdk.inprocess import InProcessPlugin
from gatewayd.service import GatewayService

#: Secrets planted in the config; no API answer may contain any of them.
SECRETS = ("pg-password-s3cret", "api-token-9f8e7d", "env-api-key-1234", "cfg-api-key-5678",
           "arg-token-abcd", "url-pass-4321")

GLOBAL: dict[str, Any] = {
    # "fatal": the plugin host's expected refusal of never-loaded stays out of the output
    "loggers": {"default": {"output": ["console"], "level": "fatal", "noColor": True}},
    "metrics": {"default": {"enabled": False}},
    "clients": {
        "default": {
            "writes": {"address": "127.0.0.1:5432", "dialTimeout": "5s", "retries": 1,
                       "startupParams": {"user": "app", "database": "app",
                                         "password": "pg-password-s3cret"}},
            "reads": {"address": "127.0.0.1:5433", "retries": 0},
        },
        "tenant": {"main": {"address": "127.0.0.1:5434"}},
    },
    "pools": {"default": {"writes": {"size": 2}, "reads": {"size": 1}},
              "tenant": {"main": {"size": 3}}},
    "proxies": {"default": {"writes": {}, "reads": {}}, "tenant": {"main": {}}},
    "servers": {
        "default": {"address": "127.0.0.1:15432", "tickInterval": "7s",
                    "loadBalancer": {"strategy": "ROUND_ROBIN"}},
        "tenant": {"address": "127.0.0.1:15433", "loadBalancer": {"strategy": "RANDOM"}},
    },
    "api": {"enabled": True, "httpAddress": "127.0.0.1:0", "grpcAddress": "127.0.0.1:0",
            "token": "api-token-9f8e7d"},
}

PLUGINS: dict[str, Any] = {
    "plugins": [
        {"name": "secret-plugin", "module": "tests.unit.api_world:SecretPlugin",
         "env": ["API_KEY=env-api-key-1234", "REGION=eu",
                 "DSN=postgres://app:url-pass-4321@db:5432/app"],
         "args": ["--verbose", "--token=arg-token-abcd"],
         "config": {"apiKey": "cfg-api-key-5678", "region": "eu"}, "checksum": "ab" * 32},
        {"name": "never-loaded", "localPath": "/nonexistent/plugin", "checksum": "cd" * 32},
    ],
}


class SecretPlugin(Plugin):
    """An SDK plugin whose config holds a secret."""

    name = "secret-plugin"
    version = "1.2.3"
    description = "holds a secret"
    authors = ("tests",)
    license = "AGPL-3.0"
    tags = ("test",)

    @hook("onOpened", "onClosed")
    def seen(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload


class NeedyPlugin(Plugin):
    """A plugin that requires another (the SDK lists requirements; the proto maps them)."""

    name = "needy"
    version = "0.2.0"
    requires = ({"name": "secret-plugin", "version": "1.0.0"},)

    @hook("onTick")
    def tick(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload


def address(host: str, port: int) -> IPv4Address:
    return IPv4Address("TCP", host, port)


@dataclass
class World:
    reactor: MemoryReactorClock
    gateway: GatewayService
    #: backend port -> the transports of its completed dials
    backends: dict[int, list[StringTransport]] = field(default_factory=dict)
    _next_port: int = 50000

    def connect_backends(self, *ports: int) -> None:
        """Complete the pending dials to backend C{ports} (all when none given)."""
        pending, self.reactor.tcpClients = self.reactor.tcpClients, []
        for host, port, factory, *_ in pending:
            if ports and port not in ports:
                self.reactor.tcpClients.append((host, port, factory, *_))
                continue
            self._next_port += 1
            transport = StringTransport(hostAddress=address("127.0.0.1", self._next_port),
                                        peerAddress=address(host, port))
            factory.buildProtocol(address(host, port)).makeConnection(transport)
            self.backends.setdefault(port, []).append(transport)

    def refuse_backends(self, *ports: int) -> None:
        """Fail the pending dials to backend C{ports}: connection refused."""
        pending, self.reactor.tcpClients = self.reactor.tcpClients, []
        for host, port, factory, *rest in pending:
            if port in ports:
                factory.clientConnectionFailed(None, ConnectionRefusedError())
            else:
                self.reactor.tcpClients.append((host, port, factory, *rest))
        self.reactor.advance(0.5)  # HostnameEndpoint reports the failure on its next turn

    def connect_client(self, group: str = "default", remote: tuple[str, int] = ("10.1.2.3", 40001),
                       *, startup: bool = True) -> Any:
        """A client of C{group}; with C{startup}, it sends its StartupMessage."""
        factory = self.gateway.groups[group].factory
        proto = factory.buildProtocol(address(*remote))
        local = self.gateway.groups[group].config.address.rsplit(":", 1)
        proto.makeConnection(StringTransport(hostAddress=address(local[0], int(local[1])),
                                             peerAddress=address(*remote)))
        if startup:
            proto.dataReceived(startup_message({"user": "app", "database": "app"}))
        return proto


def build_world(tmp_path: Path, *, start: bool = True,
                global_changes: dict[str, Any] | None = None) -> World:
    """
    The gateway of L{GLOBAL}/L{PLUGINS}, started on a memory reactor.  Backends:
    default/writes on port 5432, default/reads on 5433 (no retries), tenant/main on 5434.
    """
    config = copy.deepcopy(GLOBAL)
    config.update(global_changes or {})
    (tmp_path / "gatewayd.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "gatewayd_plugins.yaml").write_text(yaml.safe_dump(PLUGINS))
    loaded = load(str(tmp_path / "gatewayd.yaml"), str(tmp_path / "gatewayd_plugins.yaml"),
                  env={})
    reactor = MemoryReactorClock()
    gateway = GatewayService(loaded, reactor)
    if start:
        gateway.startService()  # its plugin host loads secret-plugin in-process
    if getattr(gateway, "plugin_host", None) is None or not start:
        entry = loaded.plugins.plugins[0]
        gateway.hooks.register(InProcessPlugin(SecretPlugin(entry.config), 1000,
                                               name=entry.name))
    return World(reactor, gateway)
