# -*- test-case-name: tests.unit.test_plugin_host -*-
"""
The hashicorp/go-plugin launch contract as GatewayD uses it, without I/O:
the executable's checksum, the child's environment and the handshake line.

See /work/shared/reference/plugin-protocol.md section 2.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
from dataclasses import dataclass
from typing import Mapping, Sequence

from gatewayd.plugins.errors import HandshakeError

#: GatewayD's HandshakeConfig.
MAGIC_COOKIE_KEY = "GATEWAYD_PLUGIN"
MAGIC_COOKIE_VALUE = "5712b87aa5d7e9f9e9ab643e6603181c5b796015cb1c09d6f5ada882bf2a1872"
CORE_PROTOCOL_VERSION = 1
APP_PROTOCOL_VERSION = 1
MIN_PORT = 50000
MAX_PORT = 60000

#: Host variables that would switch on go-plugin features we do not speak.
_NOT_INHERITED = ("PLUGIN_CLIENT_CERT", "PLUGIN_MULTIPLEX_GRPC", "PLUGIN_UNIX_SOCKET_GROUP")


@dataclass(frozen=True)
class Handshake:
    """The parsed C{CORE|APP|NETWORK|ADDR|PROTOCOL[|SERVERCERT]} line."""

    core_version: int
    app_version: int
    network: str  # "unix" or "tcp"
    address: str
    protocol: str
    server_cert: bytes | None  # DER, present only with AutoMTLS

    @property
    def grpc_target(self) -> str:
        """The grpcio target string for this address."""
        return f"unix:{self.address}" if self.network == "unix" else self.address


def parse_handshake(line: str) -> Handshake:
    """
    Parse and check a handshake line the way go-plugin's client does.

    @raise HandshakeError: with a message fit for the operator.
    """
    text = line.strip()
    parts = text.split("|")
    if len(parts) < 4:
        raise HandshakeError(f"unrecognized handshake line {_shorten(text)!r} "
                             "(expected CORE|APP|NETWORK|ADDR|PROTOCOL); is this a GatewayD plugin?")
    core, app, network, address = parts[:4]
    protocol = parts[4] if len(parts) > 4 else "netrpc"
    if core != str(CORE_PROTOCOL_VERSION):
        raise HandshakeError(f"unsupported go-plugin core protocol version {_shorten(core)!r} "
                             f"(this host speaks {CORE_PROTOCOL_VERSION})")
    if app != str(APP_PROTOCOL_VERSION):
        raise HandshakeError(f"unsupported plugin protocol version {_shorten(app)!r} "
                             f"(this host speaks {APP_PROTOCOL_VERSION})")
    if network not in ("unix", "tcp"):
        raise HandshakeError(f"unsupported network {_shorten(network)!r} (unix or tcp)")
    if not address:
        raise HandshakeError("handshake line has an empty address")
    if protocol != "grpc":
        raise HandshakeError(f"unsupported plugin protocol {_shorten(protocol)!r} (only grpc)")
    cert_field = parts[5] if len(parts) > 5 else ""
    server_cert = None
    if len(cert_field) > 50:  # go-plugin's own threshold
        try:
            server_cert = base64.b64decode(cert_field + "=" * (-len(cert_field) % 4), validate=True)
        except ValueError:
            raise HandshakeError("handshake server certificate is not base64") from None
    return Handshake(int(core), int(app), network, address, protocol, server_cert)


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def plugin_environment(config_env: Sequence[str], host_env: Mapping[str, str],
                       socket_dir: str) -> dict[str, str]:
    """
    The child's environment, in go-plugin's order (later wins): the entry's
    C{env} list, the host environment, then the handshake variables.

    C{MAGIC_COOKIE_KEY}/C{VALUE} are added when neither the entry nor the host
    sets them: Go SDK plugins exit without them.  C{PLUGIN_CLIENT_CERT} is never
    passed (see docs/plugins-host.md: we talk plaintext gRPC over a socket in
    C{socket_dir}, a directory only we can enter).
    """
    env: dict[str, str] = {"MAGIC_COOKIE_KEY": MAGIC_COOKIE_KEY,
                           "MAGIC_COOKIE_VALUE": MAGIC_COOKIE_VALUE}
    for item in config_env:
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value
    env.update(host_env)
    for key in _NOT_INHERITED:
        env.pop(key, None)
    env.update({
        MAGIC_COOKIE_KEY: MAGIC_COOKIE_VALUE,
        "PLUGIN_MIN_PORT": str(MIN_PORT),
        "PLUGIN_MAX_PORT": str(MAX_PORT),
        "PLUGIN_PROTOCOL_VERSIONS": str(APP_PROTOCOL_VERSION),
        "PLUGIN_UNIX_SOCKET_DIR": socket_dir,
    })
    return env


def resolve_executable(local_path: str) -> str:
    """
    C{localPath} as C{exec.Command} resolves it: a PATH lookup when it has no slash.

    @raise FileNotFoundError: nothing executable there.
    """
    if not local_path:
        raise FileNotFoundError("localPath is empty")
    if os.sep not in local_path:
        found = shutil.which(local_path)
        if found is None:
            raise FileNotFoundError(f"localPath {local_path!r} not found in PATH")
        return found
    path = os.path.abspath(local_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"localPath {local_path!r} does not exist")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"localPath {local_path!r} is not executable")
    return path


def verify_checksum(path: str, checksum: str) -> None:
    """
    Compare the file's SHA-256 with C{checksum} (hex) in constant time.

    @raise ValueError: malformed or mismatching checksum.
    """
    try:
        expected = bytes.fromhex(checksum.strip())
    except ValueError:
        raise ValueError("checksum is not hex") from None
    if len(expected) != 32:
        raise ValueError("checksum must be 64 hex digits (SHA-256)")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not hmac.compare_digest(digest.digest(), expected):
        raise ValueError(f"checksum mismatch: {path} has sha256 {digest.hexdigest()}")
