"""
Log outputs against real files and sockets: lumberjack-style rotation with
gzip and pruning, local syslog over a unix socket, remote syslog over UDP and
TCP (RFC 3164 and 5424), and a syslog server that is down.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest

from gatewayd.config.schema import Logger as LoggerConfig
from gatewayd.observability.logging import GatewayLogging
from gatewayd.observability.rotation import RotatingFile
from gatewayd.observability.syslog import SyslogSender

pytestmark = pytest.mark.integration

#: 2023-11-14T22:13:20.500Z
T = 1700000000.5
NAME = re.compile(r"^gatewayd-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3})\.log(\.gz)?$")


class Err:
    """A stderr stand-in collecting operator reports."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())

    def flush(self) -> None:
        pass


def make_logging(config: dict[str, LoggerConfig], **kw) -> tuple[GatewayLogging, Err]:
    err = Err()
    return GatewayLogging(config, stderr=lambda: err, **kw), err


def records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


# -- file rotation ------------------------------------------------------------------

def test_rotation_gzip_and_max_backups(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.log"
    config = LoggerConfig(output=["file"], file_name=str(path), max_size=0.001,  # 1048 bytes
                          max_backups=2, max_age=0, compress=True, local_time=False)
    logging, err = make_logging({"default": config}, clock=lambda: T)
    logging.start()
    log = logging.logger("default", "test")
    for n in range(40):
        log.info("line {n} {pad}", n=n, pad="x" * 60)
    logging.stop()

    names = sorted(os.listdir(tmp_path))
    backups = [name for name in names if name != "gatewayd.log"]
    assert len(backups) == 2, names
    assert all(name.endswith(".log.gz") for name in backups), names
    stamps = [NAME.match(name).group(1) for name in backups]
    # UTC stamps of the clock, made unique per millisecond (lumberjack would overwrite)
    assert all(stamp.startswith("2023-11-14T22-13-20.") for stamp in stamps)
    assert len(set(stamps)) == 2

    sizes = [os.path.getsize(path)] + [len(gzip.decompress((tmp_path / b).read_bytes()))
                                       for b in backups]
    assert all(size <= 1048 for size in sizes)
    kept = []
    for name in backups:  # oldest first by name
        kept += records(gzip.decompress((tmp_path / name).read_bytes()))
    kept += records(path.read_bytes())
    numbers = [r["n"] for r in kept]
    assert numbers == list(range(numbers[0], 40))  # contiguous, newest last
    assert numbers[0] > 0  # older backups were pruned
    assert all(r["group"] == "default" and r["level"] == "info" for r in kept)
    assert err.lines == []


def test_local_time_backup_names(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    try:
        for local, expected in ((True, "gatewayd-2023-11-15T03-43-20.500.log"),
                                (False, "gatewayd-2023-11-14T22-13-20.500.log")):
            directory = tmp_path / str(local)
            rotating = RotatingFile(str(directory / "gatewayd.log"), max_size_mb=1,
                                    max_backups=0, max_age_days=0, compress=False,
                                    local_time=local, clock=lambda: T)
            rotating.write(b"one\n")
            rotating.rotate()
            rotating.close()
            assert sorted(os.listdir(directory)) == sorted([expected, "gatewayd.log"])
            assert (directory / expected).read_bytes() == b"one\n"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_max_age_prunes_and_compresses_at_start(tmp_path: Path) -> None:
    old = tmp_path / "gatewayd-2023-10-01T00-00-00.000.log.gz"      # 44 days before T
    recent = tmp_path / "gatewayd-2023-11-10T00-00-00.000.log"       # 4 days before T
    unrelated = [tmp_path / "gatewayd-notatime.log", tmp_path / "other-2023-10-01T00-00-00.000.log"]
    old.write_bytes(gzip.compress(b"old\n"))
    recent.write_bytes(b"recent\n")
    for path in unrelated:
        path.write_bytes(b"keep\n")
    config = LoggerConfig(output=["file"], file_name=str(tmp_path / "gatewayd.log"),
                          max_backups=0, max_age=30, compress=True)
    logging, _ = make_logging({"default": config}, clock=lambda: T)
    logging.start()
    logging.stop()
    assert not old.exists()
    assert not recent.exists()
    assert gzip.decompress((tmp_path / (recent.name + ".gz")).read_bytes()) == b"recent\n"
    assert all(path.read_bytes() == b"keep\n" for path in unrelated)


def test_oversized_line_gets_a_file_of_its_own(tmp_path: Path) -> None:
    rotating = RotatingFile(str(tmp_path / "gatewayd.log"), max_size_mb=100 / 1048576,
                            max_backups=0, max_age_days=0, compress=False, local_time=False,
                            clock=lambda: T)
    rotating.write(b"small\n")
    big = b"B" * 500 + b"\n"
    rotating.write(big)
    rotating.close()
    assert (tmp_path / "gatewayd.log").read_bytes() == big
    assert (tmp_path / "gatewayd-2023-11-14T22-13-20.500.log").read_bytes() == b"small\n"


def test_existing_file_is_appended_and_rotated_when_full(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.log"
    path.write_bytes(b"z" * 90 + b"\n")
    os.chmod(path, 0o640)
    rotating = RotatingFile(str(path), max_size_mb=100 / 1048576, max_backups=0,
                            max_age_days=0, compress=False, local_time=False, clock=lambda: T)
    rotating.write(b"0123456789\n")
    rotating.close()
    assert path.read_bytes() == b"0123456789\n"
    assert os.stat(path).st_mode & 0o777 == 0o640  # mode carried over, as lumberjack


# -- syslog ---------------------------------------------------------------------------

def udp_receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)  # a deadline, not a delay: recv returns as soon as data arrives
    return sock


SYSLOG_3164_REMOTE = re.compile(
    r"^<(\d+)>(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-]\d\d:\d\d)) (\S+) gatewayd\[(\d+)\]: (.*)$")


def test_rsyslog_udp_receives_json_lines_with_level_severity() -> None:
    receiver = udp_receiver()
    port = receiver.getsockname()[1]
    config = LoggerConfig(output=["rsyslog"], level="debug", rsyslog_network="udp",
                          rsyslog_address=f"127.0.0.1:{port}")
    logging, err = make_logging({"default": config})
    logging.start()
    try:
        log = logging.logger("default", "test")
        log.info("hello {who}", who="syslog")
        log.error("bad")
        log.debug("dbg")
        got = [receiver.recv(65536).decode() for _ in range(3)]
    finally:
        logging.stop()
        receiver.close()
    parsed = [SYSLOG_3164_REMOTE.match(line) for line in got]
    assert all(parsed), got
    assert [int(m.group(1)) for m in parsed] == [3 * 8 + 6, 3 * 8 + 3, 3 * 8 + 7]
    assert {int(m.group(4)) for m in parsed} == {os.getpid()}
    assert parsed[0].group(3) == socket.gethostname()
    bodies = [json.loads(m.group(5)) for m in parsed]
    assert bodies[0]["message"] == "hello syslog" and bodies[0]["who"] == "syslog"
    assert [b["level"] for b in bodies] == ["info", "error", "debug"]
    assert all(b["group"] == "default" for b in bodies)
    assert err.lines == []


def test_local_syslog_over_unix_datagram_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(10)
    config = LoggerConfig(output=["syslog"], syslog_priority="err")
    logging, _ = make_logging({"default": config}, syslog_paths=["/nonexistent/log", path])
    logging.start()
    try:
        logging.logger("default", "test").warn("careful")
        line = receiver.recv(65536).decode()
    finally:
        logging.stop()
        receiver.close()
    match = re.match(r"^<28>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d gatewayd\[(\d+)\]: (.*)$", line)
    assert match, line
    assert int(match.group(1)) == os.getpid()
    assert json.loads(match.group(2))["message"] == "careful"


def tcp_listener(port: int = 0) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(5)
    listener.settimeout(15)
    return listener


def read_until(conn: socket.socket, done) -> bytes:
    conn.settimeout(15)
    data = b""
    while not done(data):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_rsyslog_tcp_rfc5424_octet_counting() -> None:
    listener = tcp_listener()
    port = listener.getsockname()[1]
    config = LoggerConfig(output=["rsyslog"], rsyslog_network="tcp",
                          rsyslog_address=f"127.0.0.1:{port}")
    logging, _ = make_logging({"default": config}, rsyslog_format="rfc5424")
    logging.start()
    try:
        log = logging.logger("default", "test")
        log.info("first")
        log.warn("second has spaces and ünïcode")
        conn, _ = listener.accept()
        data = read_until(conn, lambda d: d.count(b"gatewayd") >= 2 and "ünïcode".encode() in d)
        conn.close()
    finally:
        logging.stop()
        listener.close()
    frames = []
    while data:
        length, _, rest = data.partition(b" ")
        frames.append(rest[:int(length)].decode())
        data = rest[int(length):]
    assert len(frames) == 2
    pattern = re.compile(r"^<(\d+)>1 (\S+) (\S+) gatewayd (\d+) - - (.*)$")
    matches = [pattern.match(frame) for frame in frames]
    assert all(matches), frames
    assert [int(m.group(1)) for m in matches] == [30, 28]
    assert matches[0].group(2).endswith("Z")
    assert json.loads(matches[1].group(5))["message"] == "second has spaces and ünïcode"


def test_rsyslog_down_at_start_then_up() -> None:
    """A dead syslog neither blocks nor breaks logging; queued lines arrive once it is up."""
    probe = tcp_listener()
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    config = LoggerConfig(output=["rsyslog", "stdout"], rsyslog_network="tcp",
                          rsyslog_address=f"127.0.0.1:{port}")
    out = []

    class Out:
        def write(self, text: str) -> None:
            out.append(text)

        def flush(self) -> None:
            pass

    err = Err()
    logging = GatewayLogging({"default": config}, stdout=lambda: Out(), stderr=lambda: err)
    logging.start()
    try:
        log = logging.logger("default", "test")
        log.info("while down")
        assert len(out) == 1  # the other outputs did not wait for syslog
        sink = next(s for s in logging.sinks("default") if s.name == "rsyslog")
        deadline = time.monotonic() + 10
        while sink.sender.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a counter with a deadline
        assert sink.sender.errors >= 1
        listener = tcp_listener(port)
        try:
            log.info("after up")
            conn, _ = listener.accept()
            data = read_until(conn, lambda d: b"after up" in d)
            conn.close()
        finally:
            listener.close()
    finally:
        logging.stop()
    lines = data.decode().splitlines()
    assert [json.loads(line.split(": ", 1)[1])["message"] for line in lines] == [
        "while down", "after up"]
    reports = [line for line in err.lines if "rsyslog tcp" in line]
    assert len(reports) == 2
    assert "cannot connect" in reports[0] and "delivering again" in reports[1]


def test_full_queue_drops_and_counts_never_blocks() -> None:
    probe = tcp_listener()
    port = probe.getsockname()[1]
    probe.close()
    sender = SyslogSender("tcp", f"127.0.0.1:{port}", queue_size=2)
    for n in range(10):
        sender.send(6, T, f"m{n}")
    assert sender.dropped >= 7
    sender.stop()
    assert sender.sent == 0
    assert sender.dropped == 10


def test_failed_rotation_keeps_every_line(tmp_path: Path, monkeypatch) -> None:
    import gatewayd.observability.rotation as rotation

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(rotation.os, "rename", refuse)
    path = tmp_path / "gatewayd.log"
    rotating = RotatingFile(str(path), max_size_mb=50 / 1048576, max_backups=0,
                            max_age_days=0, compress=False, local_time=False, clock=lambda: T)
    lines = [f"line {n:02d} ........\n".encode() for n in range(10)]
    for line in lines:
        rotating.write(line)
    rotating.close()
    assert path.read_bytes() == b"".join(lines)
    assert rotating.rotate_errors >= 3
    assert os.listdir(tmp_path) == ["gatewayd.log"]
