# -*- test-case-name: tests.unit.test_loadbalancer -*-
"""
What the balancer knows about a new client: its address and its startup
parameters.  The server builds one L{ClientInfo} per StartupMessage; rule
conditions and consistent hashing read nothing else.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientInfo:
    """
    A new client as the balancer sees it.

    @ivar source_ip: the peer's IP address as text (empty for Unix-socket peers).
    @ivar source_port: the peer's TCP port (0 for Unix-socket peers).
    @ivar database: the StartupMessage's C{database} (defaults to C{user}, as in PostgreSQL).
    @ivar user: the StartupMessage's C{user}.
    @ivar application_name: the StartupMessage's C{application_name} (may be empty).
    """

    source_ip: str
    source_port: int
    database: str
    user: str
    application_name: str


def canonical_ip(text: str) -> str:
    """
    The canonical spelling of an IP address, so that one client hashes the
    same wherever it is seen: IPv6 compressed and lower-case, IPv4-mapped IPv6
    (C{::ffff:10.0.0.1}, what a dual-stack listener reports for IPv4 peers)
    unwrapped to IPv4.  Anything that is not an IP address is returned as is.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def hash_key(client: ClientInfo, use_source_ip: bool) -> str:
    """
    The consistent-hashing key of a client, spelled as GatewayD spells it:
    the IP alone, or C{ip:port} (C{[ip]:port} for IPv6) when
    C{use_source_ip} is false.
    """
    ip = canonical_ip(client.source_ip)
    if use_source_ip:
        return ip
    if ":" in ip:
        return f"[{ip}]:{client.source_port}"
    return f"{ip}:{client.source_port}"
