"""
TLS contexts without sockets: handshakes run between two in-memory OpenSSL
connections.  The gateway's server context (ALPN, minimum version, bad files),
backend sslmode settings, and the reasons shown when a backend handshake fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, DNSMismatch

from gatewayd.errors import ConfigError
from gatewayd.tls import POSTGRES_ALPN, backend_tls, describe_tls_error, server_context
from tests.support.certs import CA, ServerFiles, write_server_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ServerFiles:
    return write_server_files(tmp_path_factory.mktemp("tls"), CA.create("unit-ca"), "gateway")


def handshake(server: SSL.Connection, client: SSL.Connection) -> None:
    """Drive both ends over memory BIOs until done; raises the first side's SSL.Error."""
    server.set_accept_state()
    client.set_connect_state()
    done = {id(server): False, id(client): False}
    for _ in range(50):
        for me, peer in ((client, server), (server, client)):
            if not done[id(me)]:
                try:
                    me.do_handshake()
                    done[id(me)] = True
                except SSL.WantReadError:
                    pass
            try:
                peer.bio_write(me.bio_read(1 << 16))
            except SSL.WantReadError:
                pass
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def client(files: ServerFiles, *, alpn: list[bytes] | None = None,
           max_version: int | None = None) -> SSL.Connection:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(str(files.ca))
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: args[-1])
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
    if alpn:
        ctx.set_alpn_protos(alpn)
    conn = SSL.Connection(ctx, None)
    conn.set_tlsext_host_name(b"localhost")
    return conn


def server(files: ServerFiles, min_version: str = "1.2") -> SSL.Connection:
    options = server_context(str(files.cert), str(files.key), min_version)
    return SSL.Connection(options.getContext(), None)


def test_handshake_and_alpn_postgresql(files: ServerFiles) -> None:
    s, c = server(files), client(files, alpn=[POSTGRES_ALPN])
    handshake(s, c)
    assert c.get_alpn_proto_negotiated() == b"postgresql"


def test_client_offering_other_protocols_still_connects(files: ServerFiles) -> None:
    """Twisted's own ALPN callback answered this with an 'internal error' alert."""
    s, c = server(files), client(files, alpn=[b"h2", b"http/1.1"])
    handshake(s, c)
    assert c.get_alpn_proto_negotiated() == b""


def test_client_without_alpn(files: ServerFiles) -> None:
    s, c = server(files), client(files)
    handshake(s, c)
    assert c.get_protocol_version_name() in ("TLSv1.2", "TLSv1.3")


def test_min_version_13_refuses_tls12(files: ServerFiles) -> None:
    s, c = server(files, "1.3"), client(files, max_version=SSL.TLS1_2_VERSION)
    with pytest.raises(SSL.Error):
        handshake(s, c)
    s, c = server(files, "1.3"), client(files)
    handshake(s, c)
    assert c.get_protocol_version_name() == "TLSv1.3"


def test_missing_file_names_the_key(files: ServerFiles, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        server_context(str(tmp_path / "nope.crt"), str(files.key), config_path="gw.yaml",
                       key_prefix="servers.default.")
    assert info.value.key == "servers.default.certFile" and info.value.path == "gw.yaml"
    assert "nope.crt" in str(info.value)


def test_key_that_does_not_match_fails_at_load(files: ServerFiles, tmp_path: Path) -> None:
    other = write_server_files(tmp_path, CA.create("other-ca"), "other")
    with pytest.raises(ConfigError) as info:
        server_context(str(files.cert), str(other.key), key_prefix="servers.default.")
    assert info.value.key == "servers.default.keyFile"


def test_garbage_certificate(files: ServerFiles, tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError) as info:
        server_context(str(bad), str(files.key), key_prefix="servers.default.")
    assert info.value.key == "servers.default.certFile"


@pytest.mark.parametrize("mode, wants, requires", [
    ("disable", False, False), ("allow", False, False), ("prefer", True, False),
    ("require", True, True),
])
def test_backend_modes(mode: str, wants: bool, requires: bool) -> None:
    tls = backend_tls(mode, "db")
    assert (tls.wants_tls, tls.requires_tls) == (wants, requires)
    assert (tls.creator is not None) == wants


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_backend_verify_modes_need_a_readable_root(mode: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        backend_tls(mode, "db", rootcert=str(tmp_path / "missing.pem"), config_path="gw.yaml",
                    key_prefix="clients.default.writes.")
    assert info.value.key == "clients.default.writes.sslrootcert"


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_backend_verify_modes_build_a_creator(mode: str, files: ServerFiles) -> None:
    tls = backend_tls(mode, "127.0.0.1", rootcert=str(files.ca))
    assert tls.requires_tls and tls.creator is not None


def test_describe_hostname_mismatch() -> None:
    error = VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("db.example.com"))])
    text = describe_tls_error(error)
    assert text is not None and "db.example.com" in text and "does not match" in text


def test_describe_openssl_error() -> None:
    error = SSL.Error([("SSL routines", "", "certificate verify failed")])
    assert describe_tls_error(error) == "TLS handshake failed: certificate verify failed"
    assert describe_tls_error(ValueError("no")) is None
