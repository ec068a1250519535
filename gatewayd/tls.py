# -*- test-case-name: tests.unit.test_tls -*-
"""
TLS context factories: towards clients (the gateway's certificate) and towards
PostgreSQL (libpq's sslmode semantics, which GatewayD lacks).

Built once per server group / client block at start-up so a bad file fails the
start with a clear line, not the first connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from gatewayd.errors import ConfigError

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
#: The ALPN protocol PostgreSQL 17+ servers select (and libpq 17+ clients offer).
POSTGRES_ALPN = b"postgresql"


def select_alpn(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """
    Choose C{postgresql} when the client offers it, else negotiate no protocol.

    libpq 17+ offers ALPN on every TLS connection and insists on C{postgresql}
    with C{sslnegotiation=direct}.  Twisted's own select callback answers an
    offer it cannot match with an empty protocol, which OpenSSL turns into an
    "internal error" alert: every libpq 17+ client would fail the handshake.
    """
    return POSTGRES_ALPN if POSTGRES_ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def _read(path: str, config_path: str | None, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(config_path, key, f"cannot read {path!r}: {e.strerror}") from None


def server_context(cert_file: str, key_file: str, min_version: str = "1.2", *,
                   config_path: str | None = None, key_prefix: str = "") -> ssl.CertificateOptions:
    """
    The context the gateway presents to clients after answering C{S} to an
    SSLRequest.  The certificate file may hold a chain (leaf first).
    """
    cert_pem = _read(cert_file, config_path, f"{key_prefix}certFile")
    key_pem = _read(key_file, config_path, f"{key_prefix}keyFile")
    try:
        chain = _load_chain(cert_pem)
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except crypto.Error as e:
        raise ConfigError(config_path, f"{key_prefix}certFile",
                          f"cannot load certificate/key: {e}") from None
    try:
        options = ssl.CertificateOptions(
            privateKey=key, certificate=chain[0], extraCertChain=chain[1:],
            raiseMinimumTo=_VERSIONS[min_version])
        # Build the (cached) context now: a key that does not match fails the
        # start, and our ALPN choice replaces Twisted's.
        options.getContext().set_alpn_select_callback(select_alpn)
    except (SSL.Error, ValueError) as e:
        raise ConfigError(config_path, f"{key_prefix}keyFile",
                          f"key does not match certificate: {e}") from None
    return options


def describe_tls_error(exc: BaseException) -> str | None:
    """
    A readable reason for a failed TLS handshake towards PostgreSQL, for the
    client's ErrorResponse detail and our log; None when C{exc} is not a TLS error.
    """
    if isinstance(exc, VerificationError):
        names = []
        for mismatch in exc.errors:
            ident = getattr(mismatch, "mismatched_id", None)
            name = getattr(ident, "hostname", None) or getattr(ident, "ip", None) or ident
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return ("TLS: the server certificate does not match the host name "
                + ", ".join(repr(n) for n in names))
    if isinstance(exc, SSL.Error):
        errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        reasons = [e[-1] for e in errors if isinstance(e, tuple) and e and e[-1]]
        return "TLS handshake failed: " + ("; ".join(reasons) or str(exc) or "unknown error")
    return None


def _load_chain(pem: bytes) -> list[crypto.X509]:
    marker = b"-----END CERTIFICATE-----"
    parts = [p + marker for p in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in p]
    if not parts:
        raise crypto.Error([("", "", "no PEM certificate found")])
    return [crypto.load_certificate(crypto.FILETYPE_PEM, p) for p in parts]


@dataclass(frozen=True)
class BackendTLS:
    """
    How to talk TLS to one PostgreSQL server, from libpq-style settings.

    @ivar mode: disable, allow, prefer, require, verify-ca or verify-full.
    @ivar creator: the connection creator for C{startTLS}, None for disable.
    """

    mode: str
    creator: Any = None

    @property
    def wants_tls(self) -> bool:
        """True when we send an SSLRequest before the startup packet."""
        return self.mode in ("prefer", "require", "verify-ca", "verify-full")

    @property
    def requires_tls(self) -> bool:
        """True when a server answering C{N} is an error."""
        return self.mode in ("require", "verify-ca", "verify-full")


def backend_tls(mode: str, host: str, *, rootcert: str = "", cert: str = "", key: str = "",
                server_name: str = "", config_path: str | None = None,
                key_prefix: str = "") -> BackendTLS:
    """
    Build L{BackendTLS} for one client block.  C{allow} behaves like C{disable}
    (libpq only upgrades on a server refusal, which a gateway cannot see).
    """
    if mode in ("disable", "allow"):
        return BackendTLS(mode)
    client_cert = None
    if cert or key:
        cert_pem = _read(cert, config_path, f"{key_prefix}sslcert")
        key_pem = _read(key, config_path, f"{key_prefix}sslkey")
        client_cert = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    if mode in ("prefer", "require"):
        # libpq: encryption only, no verification (unless a root cert is given
        # with require, where libpq then verifies like verify-ca).
        if mode == "require" and rootcert:
            mode_for_verify = "verify-ca"
        else:
            options = ssl.CertificateOptions(
                privateKey=client_cert.privateKey.original if client_cert else None,
                certificate=client_cert.original if client_cert else None,
                raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
            return BackendTLS(mode, _Creator(options))
    else:
        mode_for_verify = mode
    roots = _read(rootcert, config_path, f"{key_prefix}sslrootcert")
    try:
        ca_certs = [ssl.Certificate(c) for c in _load_chain(roots)]
    except crypto.Error as e:
        raise ConfigError(config_path, f"{key_prefix}sslrootcert", f"bad CA file: {e}") from None
    if mode_for_verify == "verify-full":
        trust = ssl.trustRootFromCertificates(ca_certs)
        creator = ssl.optionsForClientTLS(
            server_name or host, trustRoot=trust, clientCertificate=client_cert)
        return BackendTLS(mode, creator)
    options = ssl.CertificateOptions(
        privateKey=client_cert.privateKey.original if client_cert else None,
        certificate=client_cert.original if client_cert else None,
        verify=True, caCerts=[c.original for c in ca_certs], requireCertificate=True,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
    return BackendTLS(mode, _Creator(options))


@implementer(IOpenSSLClientConnectionCreator)
class _Creator:
    """Adapts a C{CertificateOptions} to IOpenSSLClientConnectionCreator (no hostname check)."""

    def __init__(self, options: ssl.CertificateOptions) -> None:
        self._context = options.getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802 (Twisted API)
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection

