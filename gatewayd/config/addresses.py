# -*- test-case-name: tests.unit.test_config_validate -*-
"""
Checking listen and dial addresses without touching the network.

GatewayD resolves addresses when it uses them; we want a bad one reported at
load time, with the key that holds it, so this only checks the form:
C{host:port} (IPv6 in brackets) for TCP, a path for Unix sockets.
"""

from __future__ import annotations

import ipaddress
import re

#: Longest Unix socket path Linux accepts (C{sun_path} is 108 bytes with the NUL).
MAX_UNIX_PATH = 107

_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")


def split_host_port(address: str) -> tuple[str, int]:
    """
    Split C{host:port} as Go's C{net.SplitHostPort} does, with a numeric port.

    @raise ValueError: with a message fit for a config error.
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"expected host:port, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"bad IPv6 address in {address!r}") from None
    elif ":" in host:
        raise ValueError(f"IPv6 addresses need brackets, e.g. '[::1]:5432', got {address!r}")
    elif host and not _HOSTNAME.match(host):
        raise ValueError(f"bad host name in {address!r}")
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise ValueError(f"bad port in {address!r} (expected 0-65535)")
    return host, int(port)


def address_problem(network: str, address: str, *, listen: bool) -> str | None:
    """
    What is wrong with C{address} for C{network}, or None.

    @param listen: a listener may leave the host empty (all interfaces) and use
        port 0 (any free port); a dialled address may not.
    """
    if network == "unix":
        if not address:
            return "a Unix socket path is required"
        if len(address.encode()) > MAX_UNIX_PATH:
            return f"Unix socket path is longer than {MAX_UNIX_PATH} bytes"
        return None
    if not address:
        return "an address (host:port) is required"
    try:
        host, port = split_host_port(address)
    except ValueError as e:
        return str(e)
    if not listen and not host:
        return f"a host is required, got {address!r}"
    if not listen and port == 0:
        return f"port 0 cannot be dialled, got {address!r}"
    return None
