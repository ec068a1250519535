"""
A tiny, independent PostgreSQL wire client over a raw socket, for tests that
must send what no well-behaved driver sends (truncated startup packets,
garbage, oversized messages, TLS 1.2 after a hand-made SSLRequest) or read
bytes at a pace the test controls.

Written with C{struct} on purpose, not with L{gatewayd.pgwire}: the gateway's
own codec must not be the thing that checks the gateway.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

SSL_REQUEST = struct.pack(">ii", 8, 80877103)
GSSENC_REQUEST = struct.pack(">ii", 8, 80877104)
PROTOCOL_3 = 196608


def startup_packet(user: str = "postgres", database: str = "postgres",
                   protocol: int = PROTOCOL_3, **params: str) -> bytes:
    body = struct.pack(">i", protocol)
    for k, v in {"user": user, "database": database, **params}.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack(">i", len(body) + 4) + body


def cancel_request(pid: int, key: bytes) -> bytes:
    return struct.pack(">iiI", 12 + len(key), 80877102, pid) + key


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack(">i", len(body) + 4) + body


def query(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


def terminate() -> bytes:
    return message(b"X")


def parse_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse body -> {field code: value}."""
    out: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


@dataclass
class Conn:
    """One raw connection; C{recv_message} frames what the server says."""

    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    backend_key: tuple[int, bytes] | None = None
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, port: int, host: str = "127.0.0.1", timeout: float = 15.0,
             rcvbuf: int | None = None) -> Conn:
        """Connect; C{rcvbuf} caps our receive buffer (no autotuning) for slow-reader tests."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, need: int) -> bool:
        while len(self.buf) < need:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv_byte(self) -> bytes:
        """One byte (the answer to SSLRequest/GSSENCRequest); b"" on EOF."""
        if not self._fill(1):
            return b""
        b = bytes(self.buf[:1])
        del self.buf[:1]
        return b

    def recv_message(self) -> tuple[str, bytes] | None:
        """The next (type, body), or None when the server closed the connection."""
        if not self._fill(5):
            return None
        kind = chr(self.buf[0])
        length = struct.unpack_from(">i", self.buf, 1)[0]
        if not self._fill(1 + length):
            return None
        body = bytes(self.buf[5:1 + length])
        del self.buf[:1 + length]
        return kind, body

    def startup(self, user: str = "postgres", database: str = "postgres",
                password: str | None = None, **params: str) -> list[tuple[str, bytes]]:
        """
        Log in (trust, or cleartext/md5 are not needed by our clusters: trust only)
        and read up to the first ReadyForQuery.  Returns every message seen;
        stops early at an ErrorResponse.
        """
        self.send(startup_packet(user, database, **params))
        return self.until_ready()

    def until_ready(self) -> list[tuple[str, bytes]]:
        """Messages up to and including ReadyForQuery (or an error/EOF)."""
        seen: list[tuple[str, bytes]] = []
        while True:
            msg = self.recv_message()
            if msg is None:
                return seen
            seen.append(msg)
            kind, body = msg
            if kind == "K":
                pid = struct.unpack_from(">I", body)[0]
                self.backend_key = (pid, body[4:])
            elif kind == "S":
                name, value, _ = body.split(b"\0", 2)
                self.params[name.decode()] = value.decode()
            elif kind == "Z":
                return seen
            elif kind == "E" and self.backend_key is None:
                return seen  # a FATAL during startup ends the conversation

    def simple_query(self, sql: str) -> list[tuple[str, bytes]]:
        self.send(query(sql))
        return self.until_ready()

    def read_error(self) -> dict[str, str] | None:
        """Read until an ErrorResponse (returned as fields) or EOF (None)."""
        while True:
            msg = self.recv_message()
            if msg is None:
                return None
            if msg[0] == "E":
                return parse_fields(msg[1])

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True once the peer closed (EOF or reset) within C{timeout}; data read meanwhile is dropped."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def errors_in(messages: list[tuple[str, bytes]]) -> list[dict[str, str]]:
    return [parse_fields(body) for kind, body in messages if kind == "E"]


def data_rows(messages: list[tuple[str, bytes]]) -> list[list[str | None]]:
    """Decode the text columns of every DataRow."""
    rows = []
    for kind, body in messages:
        if kind != "D":
            continue
        n = struct.unpack_from(">h", body)[0]
        pos, row = 2, []
        for _ in range(n):
            size = struct.unpack_from(">i", body, pos)[0]
            pos += 4
            if size < 0:
                row.append(None)
            else:
                row.append(body[pos:pos + size].decode())
                pos += size
        rows.append(row)
    return rows


def rss_bytes(pid: int) -> int:
    """VmRSS of process C{pid}, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def tcp_info(local_port: int, remote_port: int) -> dict[str, int]:
    """
    Kernel counters of the established loopback TCP socket 127.0.0.1:C{local_port}
    -> :C{remote_port} (any process's, read with C{ss -ti}): C{recv_q} (received,
    not read by its process), C{send_q} (written, not acknowledged),
    C{bytes_received}, C{bytes_acked}.
    """
    import subprocess

    out = subprocess.run(
        ["ss", "-tinHO", "state", "established",
         f"( sport = :{local_port} and dport = :{remote_port} )"],
        capture_output=True, text=True, check=True).stdout.split()
    if not out:
        raise AssertionError(f"no TCP socket :{local_port} -> :{remote_port}")
    info = {"recv_q": int(out[0]), "send_q": int(out[1]), "bytes_received": 0, "bytes_acked": 0}
    for token in out[4:]:
        name, _, value = token.partition(":")
        if name in ("bytes_received", "bytes_acked") and value.isdigit():
            info[name] = int(value)
    return info
