# -*- test-case-name: tests.integration.test_sdk_serve -*-
"""
go-plugin's AutoMTLS, plugin side.

When the host sets C{PLUGIN_CLIENT_CERT} (GatewayD always does), the plugin
must: generate its own certificate, require the host's certificate (and
trust only it), speak TLS 1.2 or newer with ALPN C{h2}, and advertise its
certificate (DER, base64 with the standard alphabet and no padding) as the
handshake line's 6th field.  go-plugin's certificates on both sides are
self-signed ECDSA P-521 CAs for C{localhost}.  grpcio's BoringSSL cannot
sign or verify P-521 in TLS, Python's C{ssl} (OpenSSL) can, which is why the
SDK serves gRPC with grpclib (see docs/plugins.md).
"""

from __future__ import annotations

import base64
import datetime
import os
import secrets
import shutil
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Certificate", "client_context", "encode_handshake_cert", "generate_certificate",
           "server_context"]

#: go-plugin's validity: 262980 hours (30 years).
VALIDITY = datetime.timedelta(hours=262980)


@dataclass(frozen=True)
class Certificate:
    """A certificate and its private key, PEM-encoded, plus the DER of the certificate."""

    cert_pem: bytes
    key_pem: bytes
    der: bytes


def generate_certificate(host: str = "localhost", curve: ec.EllipticCurve | None = None) -> Certificate:
    """
    A certificate shaped like go-plugin's C{generateCert}: ECDSA P-521,
    subject C{CN=localhost, O=HashiCorp}, SAN DNS C{localhost}, a CA
    (basic constraints), key usage digitalSignature, keyEncipherment,
    keyAgreement and keyCertSign, extended key usage clientAuth and
    serverAuth, valid from 30 s ago for 30 years, random 128-bit serial.
    """
    key = ec.generate_private_key(curve if curve is not None else ec.SECP521R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HashiCorp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=True, data_encipherment=False,
                                     key_agreement=True, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                              ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA512())
    )
    return Certificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        der=cert.public_bytes(serialization.Encoding.DER),
    )


def encode_handshake_cert(der: bytes) -> str:
    """The handshake's 6th field: Go's C{base64.RawStdEncoding} (no '=' padding)."""
    return base64.b64encode(der).decode("ascii").rstrip("=")


def decode_handshake_cert(field: str) -> bytes:
    """The inverse of L{encode_handshake_cert} (what a host does with the field)."""
    return base64.b64decode(field + "=" * (-len(field) % 4))


def _load_chain(context: ssl.SSLContext, own: Certificate) -> None:
    """C{ssl} loads keys from files only: use a private temporary directory."""
    directory = tempfile.mkdtemp(prefix="gatewayd-mtls-")
    try:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        for path, data in ((cert_path, own.cert_pem), (key_path, own.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        context.load_cert_chain(cert_path, key_path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def server_context(own: Certificate, client_cert_pem: str | bytes) -> ssl.SSLContext:
    """
    go-plugin's server TLS config: present C{own}, require a client
    certificate verified against C{client_cert_pem} only, TLS >= 1.2, ALPN h2.

    @raise ssl.SSLError: C{client_cert_pem} holds no usable certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, own)
    pem = client_cert_pem.decode("ascii") if isinstance(client_cert_pem, bytes) else client_cert_pem
    context.load_verify_locations(cadata=pem)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context


def client_context(own: Certificate, server_der: bytes) -> ssl.SSLContext:
    """
    go-plugin's host TLS config: present C{own}, trust only the server
    certificate from the handshake (DER), server name C{localhost}, ALPN h2.
    (Used by tests emulating GatewayD, and usable by a Python host.)
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, own)
    context.load_verify_locations(cadata=server_der)
    context.set_alpn_protocols(["h2"])
    return context
