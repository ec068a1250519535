"""
Tests for L{gatewayd.pgwire.framing}: MessageFramer and MessageScanner.

The scanner is checked against the framer (same boundaries, counts and
ReadyForQuery statuses for any chunking), both against hand-built and real
server byte streams, and both for linear work on huge messages.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd import pgwire
from gatewayd.errors import ProtocolViolation
from gatewayd.pgwire import MessageFramer, MessageScanner

# A backend's answer to "select 1" (as PostgreSQL 15 sends it), by hand.
SELECT_1 = (
    b"T\x00\x00\x00\x21\x00\x01?column?\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"
    b"D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x011"
    b"C\x00\x00\x00\x0dSELECT 1\x00"
    b"Z\x00\x00\x00\x05I"
)
SELECT_1_MESSAGES = [
    pgwire.row_description([("?column?", 23)]),
    pgwire.data_row([b"1"]),
    pgwire.command_complete("SELECT 1"),
    pgwire.ready_for_query(b"I"),
]


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """C{data} cut at the given offsets (sorted, deduplicated)."""
    points = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


def frame_all(pieces: list[bytes], framer: MessageFramer | None = None) -> list[bytes]:
    framer = framer or MessageFramer()
    out: list[bytes] = []
    for piece in pieces:
        out.extend(framer.feed(piece))
    return out


def test_hand_vector_is_what_the_builders_make() -> None:
    assert b"".join(SELECT_1_MESSAGES) == SELECT_1


def test_frames_whole_stream() -> None:
    framer = MessageFramer()
    assert framer.feed(SELECT_1) == SELECT_1_MESSAGES
    assert framer.buffered == 0


def test_single_message_chunk_is_not_copied() -> None:
    message = pgwire.data_row([b"x" * 1000])
    assert MessageFramer().feed(message)[0] is message


def test_every_split_point_gives_the_same_messages() -> None:
    for i in range(len(SELECT_1) + 1):
        for j in range(i, len(SELECT_1) + 1):
            assert frame_all(chunks(SELECT_1, [i, j])) == SELECT_1_MESSAGES, (i, j)


def test_byte_at_a_time() -> None:
    framer = MessageFramer()
    out: list[bytes] = []
    for i, byte in enumerate(SELECT_1):
        out.extend(framer.feed(bytes([byte])))
        assert framer.buffered == i + 1 - sum(map(len, out))
    assert out == SELECT_1_MESSAGES
    assert framer.buffered == 0


def test_buffered_counts_partial_message() -> None:
    framer = MessageFramer()
    assert framer.feed(SELECT_1[:40]) == SELECT_1_MESSAGES[:1]
    assert framer.buffered == 40 - len(SELECT_1_MESSAGES[0])
    assert framer.feed(SELECT_1[40:]) == SELECT_1_MESSAGES[1:]
    assert framer.buffered == 0


def test_accepts_bytes_like() -> None:
    assert MessageFramer().feed(bytearray(SELECT_1)) == SELECT_1_MESSAGES
    assert MessageFramer().feed(memoryview(SELECT_1)) == SELECT_1_MESSAGES
    assert all(type(m) is bytes for m in MessageFramer().feed(memoryview(SELECT_1)))


@pytest.mark.parametrize("length", [-1, -0x80000000, 0, 1, 3])
def test_length_below_four(length: int) -> None:
    header = b"Q" + struct.pack(">i", length)
    for make in (MessageFramer, MessageScanner):
        with pytest.raises(ProtocolViolation) as info:
            make().feed(header)
        assert info.value.sqlstate == "08P01"
        assert str(info.value) == f"invalid message length {length}"


def test_length_above_max_size_rejected_from_header_alone() -> None:
    header = b"d" + struct.pack(">i", 1025)
    for make in (MessageFramer, MessageScanner):
        obj = make(max_size=1024)
        with pytest.raises(ProtocolViolation) as info:
            obj.feed(header)  # no body sent: nothing is buffered for it
        assert info.value.sqlstate == "08P01"
        assert "invalid message length 1025" in str(info.value)
    assert MessageFramer(max_size=1024).feed(b"d" + struct.pack(">i", 1024) + bytes(1020))


def test_header_split_then_invalid() -> None:
    for make in (MessageFramer, MessageScanner):
        obj = make()
        obj.feed(b"Q\x00")
        with pytest.raises(ProtocolViolation):
            obj.feed(b"\x00\x00\x02")


def test_max_size_must_fit_int32() -> None:
    for make in (MessageFramer, MessageScanner):
        with pytest.raises(ValueError):
            make(max_size=1 << 31)
        with pytest.raises(ValueError):
            make(max_size=3)


# -- linear work for huge messages ----------------------------------------------------


class CountingBuffer(bytearray):
    """A bytearray that counts the bytes copied into and out of it through Python."""

    def __init__(self) -> None:
        super().__init__()
        self.copied = 0
        self.operations = 0

    def __iadd__(self, other: bytes) -> CountingBuffer:  # type: ignore[override]
        self.copied += memoryview(other).nbytes
        self.operations += 1
        return super().__iadd__(other)

    def extend(self, other: bytes) -> None:  # type: ignore[override]
        self.copied += len(other)
        self.operations += 1
        super().extend(other)

    def __getitem__(self, key):  # type: ignore[no-untyped-def, override]
        result = super().__getitem__(key)
        if isinstance(key, slice):
            self.copied += len(result)
            self.operations += 1
        return result

    def __bytes__(self) -> bytes:
        self.copied += len(self)
        self.operations += 1
        return bytes(memoryview(self))

    def __add__(self, other: bytes) -> bytearray:  # type: ignore[override]
        raise AssertionError("concatenation copies the whole buffer")

    def copy(self) -> bytearray:  # type: ignore[override]
        raise AssertionError("copying the buffer")


def test_100_mb_message_in_64_kb_chunks_is_linear() -> None:
    """
    Each byte of a huge message is copied at most twice (into the buffer, then
    out as the message) and the buffer is never replaced: no quadratic
    re-copying however many chunks it arrives in.  Work, not time, is asserted.
    """
    size = 100 * 1024 * 1024
    big = b"d" + struct.pack(">i", size + 4) + bytes(size)
    tail = pgwire.ready_for_query(b"T")
    stream = big + tail
    framer = MessageFramer()
    buffer = framer._buffer = CountingBuffer()
    scanner = MessageScanner()
    step = 64 * 1024
    got: list[bytes] = []
    feeds = 0
    with memoryview(stream) as view:
        for pos in range(0, len(stream), step):
            piece = bytes(view[pos : pos + step])
            out = framer.feed(piece)
            scanner.feed(piece)
            feeds += 1
            # Checked on every feed so that a quadratic framer fails fast.
            assert buffer.copied <= 2 * (pos + len(piece))
            assert buffer.operations <= 2 * feeds
            if pos + step < len(big):
                assert out == []
                assert scanner.in_message
            got.extend(out)
    assert framer._buffer is buffer
    assert buffer.copied <= 2 * len(big)
    assert len(got) == 2 and got[1] == tail and len(got[0]) == len(big) and got[0] == big
    assert framer.buffered == 0
    assert (scanner.messages, scanner.ready_status, scanner.in_message) == (2, ord("T"), False)


class SliceCountingBytes(bytes):
    """bytes that count how much is sliced or indexed out of them."""

    sliced = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def, override]
        result = super().__getitem__(key)
        if isinstance(key, slice):
            SliceCountingBytes.sliced += len(result)
        return result


def test_scanner_never_copies_bodies() -> None:
    """Only a header straddling two chunks (< 5 bytes) is ever copied."""
    stream = (pgwire.data_row([b"x" * 3000]) + pgwire.command_complete("SELECT 1")) * 50 + SELECT_1
    SliceCountingBytes.sliced = 0
    scanner = MessageScanner()
    pieces = chunks(stream, list(range(0, len(stream), 997)))
    for piece in pieces:
        scanner.feed(SliceCountingBytes(piece))
    assert SliceCountingBytes.sliced <= 4 * len(pieces)
    assert scanner.messages == 104 and scanner.ready_status == ord("I")


# -- the scanner ------------------------------------------------------------------------


def test_scanner_on_whole_stream() -> None:
    scanner = MessageScanner()
    assert (scanner.ready_status, scanner.messages, scanner.in_message) == (0, 0, False)
    scanner.feed(SELECT_1)
    assert (scanner.ready_status, scanner.messages, scanner.in_message) == (ord("I"), 4, False)


@pytest.mark.parametrize("status", [b"I", b"T", b"E"])
def test_ready_for_query_split_at_every_byte(status: bytes) -> None:
    stream = pgwire.command_complete("BEGIN") + pgwire.ready_for_query(status)
    boundaries = {0, 11, len(stream)}
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            scanner = MessageScanner()
            scanner.feed(pgwire.ready_for_query(b"E" if status != b"E" else b"I"))
            before = scanner.ready_status
            for end, piece in ((i, stream[:i]), (j, stream[i:j]), (len(stream), stream[j:])):
                scanner.feed(piece)
                assert scanner.in_message == (end not in boundaries), (i, j, end)
                assert scanner.ready_status == (status[0] if end == len(stream) else before), (i, j, end)
            assert scanner.messages == 3


def test_scanner_status_only_after_the_status_byte_arrives() -> None:
    scanner = MessageScanner()
    scanner.feed(b"Z\x00\x00\x00\x05")
    assert (scanner.ready_status, scanner.messages, scanner.in_message) == (0, 0, True)
    scanner.feed(b"T")
    assert (scanner.ready_status, scanner.messages, scanner.in_message) == (ord("T"), 1, False)


def test_scanner_ignores_z_with_other_length() -> None:
    scanner = MessageScanner()
    scanner.feed(b"Z\x00\x00\x00\x06IT")  # not a ReadyForQuery
    assert (scanner.ready_status, scanner.messages) == (0, 1)


def test_scanner_last_status_wins() -> None:
    scanner = MessageScanner()
    scanner.feed(pgwire.ready_for_query(b"T") + pgwire.ready_for_query(b"E") + b"Z\x00")
    assert (scanner.ready_status, scanner.messages, scanner.in_message) == (ord("E"), 2, True)


def test_scanner_accepts_bytes_like() -> None:
    scanner = MessageScanner()
    scanner.feed(memoryview(SELECT_1)[:30])
    scanner.feed(bytearray(SELECT_1[30:]))
    assert (scanner.ready_status, scanner.messages) == (ord("I"), 4)


def test_scanner_empty_feed() -> None:
    scanner = MessageScanner()
    scanner.feed(b"")
    scanner.feed(b"Z\x00\x00")
    scanner.feed(b"")
    scanner.feed(b"\x00\x05")
    scanner.feed(b"")
    assert scanner.in_message
    scanner.feed(b"I")
    assert (scanner.ready_status, scanner.messages, scanner.in_message) == (ord("I"), 1, False)


# -- property tests ----------------------------------------------------------------------


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A well-framed message: often ReadyForQuery, otherwise any type and body."""
    if draw(st.booleans()):
        return pgwire.ready_for_query(draw(st.sampled_from([b"I", b"T", b"E"])))
    kind = draw(st.integers(0, 255))
    body = draw(st.binary(max_size=300))
    return bytes([kind]) + struct.pack(">i", len(body) + 4) + body


@settings(deadline=None, max_examples=300)
@given(st.lists(messages(), max_size=12), st.lists(st.integers(0, 4000), max_size=12))
def test_scanner_agrees_with_framer(stream: list[bytes], cuts: list[int]) -> None:
    data = b"".join(stream)
    framer, scanner = MessageFramer(), MessageScanner()
    framed: list[bytes] = []
    for piece in chunks(data, cuts):
        framed.extend(framer.feed(piece))
        scanner.feed(piece)
        statuses = [m[5] for m in framed if m[0] == 0x5A and len(m) == 6]
        assert scanner.messages == len(framed)
        assert scanner.in_message == (framer.buffered > 0)
        assert scanner.ready_status == (statuses[-1] if statuses else 0)
    assert framed == stream
    assert framer.buffered == 0 and not scanner.in_message


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=8))
def test_random_bytes_only_raise_protocol_violation(data: bytes, cuts: list[int]) -> None:
    for make in (MessageFramer, MessageScanner):
        obj = make(max_size=1 << 20)
        try:
            for piece in chunks(data, cuts):
                obj.feed(piece)
        except ProtocolViolation as e:
            assert e.sqlstate == "08P01"


@settings(deadline=None)
@given(st.lists(messages(), min_size=1, max_size=6), st.data())
def test_framer_and_scanner_agree_on_errors(stream: list[bytes], data: st.DataObject) -> None:
    """Corrupt one length: both raise, or neither, after the same bytes."""
    joined = bytearray(b"".join(stream))
    index = data.draw(st.integers(0, len(stream) - 1))
    offset = sum(map(len, stream[:index])) + 1
    joined[offset : offset + 4] = struct.pack(">i", data.draw(st.integers(-(2**31), 3)))
    results = []
    for make in (MessageFramer, MessageScanner):
        try:
            make().feed(bytes(joined))
            results.append(None)
        except ProtocolViolation as e:
            results.append(str(e))
    assert results[0] is not None and results[0] == results[1]
