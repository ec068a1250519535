"""
SDK plugins as plugin processes, with this test playing GatewayD's part
(hashicorp/go-plugin's host side): spawn with the handshake environment,
read the handshake line, dial gRPC over the Unix socket with AutoMTLS (a
P-521 client certificate, like go-plugin's), call GetPluginConfig, Health
and hooks, then Shutdown.  Python's ssl (OpenSSL) stands in for Go's
crypto/tls; grpclib is the HTTP/2 gRPC client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.config import Configuration
from gatewayd.protos.grpc_health.v1.health_grpc import HealthStub
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from gatewayd import pgwire
from gatewayd.pgwire import MessageFramer, decode_server_message
from gatewayd.plugins.structs import from_struct, to_struct
from gatewayd.protos.goplugin.grpc_controller_grpc import GRPCControllerStub
from gatewayd.protos.goplugin.grpc_controller_pb2 import Empty
from gatewayd.protos.plugin.v1.plugin_grpc import GatewayDPluginServiceStub
from gatewayd.sdk import mtls
from gatewayd.sdk.server import MAGIC_COOKIE_VALUE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIREWALL = ROOT / "examples" / "sql_firewall" / "plugin.py"
LOGGER = ROOT / "examples" / "query_logger" / "plugin.py"

TEST_PLUGIN = """
import sys
from gatewayd.sdk import Plugin, hook

class Probe(Plugin):
    name = "probe"
    version = "9.9.9"
    metrics_unix_socket = sys.argv[2] or None

    @hook("onTrafficFromClient")
    def boom(self, payload):
        raise RuntimeError("boom")

    @hook("onTick")
    async def tick(self, payload):
        return {**payload, "ticked": True}

    @hook("onClosed")
    def garbage(self, payload):
        return {"unsendable": object()}

Probe.serve(network=sys.argv[1])
"""


class PluginProcess:
    """A spawned plugin and its handshake."""

    def __init__(self, args: list[str], env: dict[str, str], timeout: float = 30.0) -> None:
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("GATEWAYD_PLUGIN", "PLUGIN_CLIENT_CERT", "MAGIC_COOKIE_KEY",
                                 "MAGIC_COOKIE_VALUE")}
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env)
        self.proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=full_env)
        self.line = self._read_line(timeout)

    def _read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                break
            data += chunk
        return data.decode()

    @property
    def fields(self) -> list[str]:
        return self.line.rstrip("\n").split("|")

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stderr_events(self) -> list[dict]:
        out = []
        for line in self.proc.stderr.read().decode().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def host_env(tmp_path: Path, client: mtls.Certificate | None) -> dict[str, str]:
    """What go-plugin's client (GatewayD) puts in the plugin's environment."""
    env = {"GATEWAYD_PLUGIN": MAGIC_COOKIE_VALUE, "PLUGIN_MIN_PORT": "50000",
           "PLUGIN_MAX_PORT": "60000", "PLUGIN_PROTOCOL_VERSIONS": "1",
           "PLUGIN_UNIX_SOCKET_DIR": str(tmp_path)}
    if client is not None:
        env["PLUGIN_CLIENT_CERT"] = client.cert_pem.decode()
    return env


def channel(plugin: PluginProcess, context: ssl.SSLContext | None) -> Channel:
    network, address = plugin.fields[2], plugin.fields[3]
    config = Configuration(ssl_target_name_override="localhost") if context else None
    if network == "unix":
        return Channel(path=address, ssl=context, config=config)
    host, port = address.rsplit(":", 1)
    return Channel(host, int(port), ssl=context, config=config)


@contextlib.contextmanager
def opened(plugin: PluginProcess, context: ssl.SSLContext | None) -> Iterator[Channel]:
    ch = channel(plugin, context)
    try:
        yield ch
    finally:
        ch.close()


def server_messages(data: bytes) -> list[dict]:
    return [decode_server_message(m) for m in MessageFramer().feed(data)]


async def call(stub: GatewayDPluginServiceStub, rpc: str, payload: dict) -> dict:
    return from_struct(await getattr(stub, rpc)(to_struct(payload), timeout=10))


@pytest.fixture
def client_cert() -> mtls.Certificate:
    return mtls.generate_certificate()


def test_automtls_firewall_like_gatewayd(tmp_path: Path, client_cert: mtls.Certificate) -> None:
    """The full go-plugin exchange with AutoMTLS and P-521 certificates."""
    plugin = PluginProcess([str(FIREWALL)], host_env(tmp_path, client_cert))
    try:
        fields = plugin.fields
        assert len(fields) == 6, plugin.line
        assert fields[:3] == ["1", "1", "unix"] and fields[4] == "grpc"
        assert Path(fields[3]).parent.parent == tmp_path
        assert "=" not in fields[5]  # base64.RawStdEncoding
        der = mtls.decode_handshake_cert(fields[5])
        cert = x509.load_der_x509_certificate(der)
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp521r1"
        assert cert.subject.rfc4514_string() == "CN=localhost,O=HashiCorp"
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

        context = mtls.client_context(client_cert, der)

        async def host() -> None:
            with opened(plugin, context) as ch:
                health = await HealthStub(ch).Check(HealthCheckRequest(service="plugin"), timeout=10)
                assert health.status == HealthCheckResponse.SERVING
                stub = GatewayDPluginServiceStub(ch)
                config = await call(stub, "GetPluginConfig", {})
                assert config["id"] == {"name": "gatewayd-plugin-sql-firewall", "version": "0.1.0",
                                        "remoteUrl": ""}
                assert config["hooks"] == [16]
                assert config["config"] == {}
                blocked = await call(stub, "OnTrafficFromClient", {
                    "client": {"local": "a", "remote": "b"},
                    "request": pgwire.query("DROP TABLE accounts")})
                assert [s["name"] for s in blocked["__signals__"]] == ["terminate", "log"]
                reply = server_messages(blocked["response"])
                assert [m["type"] for m in reply] == ["E", "Z"]
                assert reply[0]["fields"]["C"] == "42501"
                request = pgwire.query("SELECT 1")
                passed = await call(stub, "OnTrafficFromClient", {"request": request})
                assert passed == {"request": request}
                # a hook the plugin did not register answers with its input
                assert await call(stub, "OnTick", {"connections": 3}) == {"connections": 3}
                assert ssl_version(ch) in ("TLSv1.2", "TLSv1.3")
                await GRPCControllerStub(ch).Shutdown(Empty(), timeout=10)

        asyncio.run(host())
        assert plugin.wait() == 0
        assert not Path(fields[3]).exists()
        events = plugin.stderr_events()
        assert all("@level" in e and "@timestamp" in e for e in events), events
        assert any(e["@message"] == "Shutdown requested by the host" for e in events)
    finally:
        plugin.close()


def ssl_version(ch: Channel) -> str | None:
    transport = ch._protocol.connection._transport  # type: ignore[union-attr]
    return transport.get_extra_info("ssl_object").version()


def test_client_without_trusted_cert_rejected(tmp_path: Path, client_cert: mtls.Certificate) -> None:
    """No client certificate, or one the plugin was not given: refused."""
    plugin = PluginProcess([str(LOGGER)], host_env(tmp_path, client_cert))
    try:
        der = mtls.decode_handshake_cert(plugin.fields[5])
        anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        anonymous.load_verify_locations(cadata=der)
        anonymous.set_alpn_protocols(["h2"])
        stranger = mtls.client_context(mtls.generate_certificate(), der)

        async def attempt(context: ssl.SSLContext) -> None:
            with opened(plugin, context) as ch:
                await HealthStub(ch).Check(HealthCheckRequest(service="plugin"), timeout=10)

        for context in (anonymous, stranger):
            with pytest.raises(Exception) as info:  # noqa: B017 - ssl or stream errors
                asyncio.run(attempt(context))
            assert not isinstance(info.value, AssertionError)
        # the plugin is still serving the real host
        asyncio.run(attempt(mtls.client_context(client_cert, der)))
        # and refuses a plaintext client
        with pytest.raises(Exception):  # noqa: B017
            asyncio.run(attempt_plain(plugin))
    finally:
        plugin.close()


async def attempt_plain(plugin: PluginProcess) -> None:
    with opened(plugin, None) as ch:
        await HealthStub(ch).Check(HealthCheckRequest(service="plugin"), timeout=5)


def test_cookie_required(tmp_path: Path) -> None:
    """Without the magic cookie the plugin refuses to run, silently on stdout."""
    env = host_env(tmp_path, None)
    del env["GATEWAYD_PLUGIN"]
    plugin = PluginProcess([str(FIREWALL)], env)
    try:
        assert plugin.line == ""
        assert plugin.wait() == 1
        assert b"This binary is a plugin" in plugin.proc.stderr.read()
    finally:
        plugin.close()


def test_go_sdk_cookie_variables(tmp_path: Path) -> None:
    """MAGIC_COOKIE_KEY/VALUE (the Go SDK convention) name the cookie to check."""
    env = host_env(tmp_path, None)
    del env["GATEWAYD_PLUGIN"]
    env.update({"MAGIC_COOKIE_KEY": "MY_COOKIE", "MAGIC_COOKIE_VALUE": "xyz", "MY_COOKIE": "xyz"})
    plugin = PluginProcess([str(LOGGER)], env)
    try:
        assert plugin.fields[:3] == ["1", "1", "unix"]
    finally:
        plugin.close()


def test_plaintext_tcp_errors_and_metrics(tmp_path: Path) -> None:
    """
    Without PLUGIN_CLIENT_CERT: plaintext and an empty 6th field.  TCP in the
    port range when asked.  Raising hooks answer with their input (never a
    gRPC error), async hooks work, metrics are served on the Unix socket.
    SIGINT is ignored; SIGTERM stops the plugin cleanly.
    """
    script = tmp_path / "probe.py"
    script.write_text(TEST_PLUGIN)
    metrics_path = tmp_path / "probe-metrics.sock"
    env = host_env(tmp_path, None)
    env.update({"PLUGIN_MIN_PORT": "0", "PLUGIN_MAX_PORT": "0"})
    # port 0 would be "any": use a real free range instead
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    env.update({"PLUGIN_MIN_PORT": str(free), "PLUGIN_MAX_PORT": str(free + 20)})
    plugin = PluginProcess([str(script), "tcp", str(metrics_path)], env)
    try:
        assert plugin.line.endswith("|grpc|\n")
        assert plugin.fields[2] == "tcp"
        port = int(plugin.fields[3].rsplit(":", 1)[1])
        assert free <= port <= free + 20

        async def host() -> None:
            with opened(plugin, None) as ch:
                stub = GatewayDPluginServiceStub(ch)
                config = await call(stub, "GetPluginConfig", {})
                assert config["hooks"] == [14, 16, 21]
                assert config["config"] == {"metricsEnabled": "true",
                                            "metricsUnixDomainSocket": str(metrics_path)}
                request = {"request": b"\x00\xffraw"}
                assert await call(stub, "OnTrafficFromClient", request) == request
                assert await call(stub, "OnTick", {"connections": 1}) == {"connections": 1,
                                                                         "ticked": True}
                assert await call(stub, "OnClosed", {"client": {}}) == {"client": {}}
                reader, writer = await asyncio.open_unix_connection(str(metrics_path))
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: plugins\r\n\r\n")
                body = (await reader.read()).decode()
                writer.close()
                assert body.startswith("HTTP/1.1 200 OK")
                assert 'gatewayd_hook_calls_total{hook="onTrafficFromClient"} 1.0' in body
                assert 'gatewayd_hook_errors_total{hook="onTrafficFromClient"} 1.0' in body
                assert 'gatewayd_hook_errors_total{hook="onClosed"} 1.0' in body

        asyncio.run(host())
        plugin.proc.send_signal(signal.SIGINT)

        async def still_there() -> None:
            with opened(plugin, None) as ch:
                health = await HealthStub(ch).Check(HealthCheckRequest(service="plugin"), timeout=10)
                assert health.status == HealthCheckResponse.SERVING
                unknown = HealthStub(ch).Check(HealthCheckRequest(service="other"), timeout=10)
                with pytest.raises(Exception):  # noqa: B017 - NOT_FOUND
                    await unknown

        asyncio.run(still_there())
        assert plugin.proc.poll() is None
        plugin.proc.send_signal(signal.SIGTERM)
        assert plugin.wait() == 0
        events = plugin.stderr_events()
        failures = [e for e in events if e.get("@message", "").startswith("Hook failed")]
        assert {e["hook"] for e in failures} == {"onTrafficFromClient", "onClosed"}
        assert "RuntimeError: boom" in next(e["error"] for e in failures
                                            if e["hook"] == "onTrafficFromClient")
    finally:
        plugin.close()
