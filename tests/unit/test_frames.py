"""The splice's pure WebSocket rules (``_frames``): handshake checks, Close frames, and the frame
scanner that finds every frame boundary from headers alone, however the wire cuts the bytes."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import wsproto.frame_protocol as fp
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, TextMessage

from trio_httpws import _frames
from trio_httpws._frames import (
    FrameError,
    FrameScanner,
    accept_token,
    close_frame,
    frame_header,
    upgrade_answer_problem,
    valid_key,
)

from ..support.imports import FORBIDDEN, imported_modules

# -- frames built here, independently of the module under test --------------------------------


@dataclass(frozen=True)
class Frame:
    opcode: int
    fin: bool
    payload: bytes
    mask: bytes | None  # the masking key, None for an unmasked frame

    def wire(self) -> bytes:
        b0 = (0x80 if self.fin else 0) | self.opcode
        n = len(self.payload)
        mask_bit = 0x80 if self.mask is not None else 0
        if n < 126:
            head = struct.pack("!BB", b0, mask_bit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mask_bit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mask_bit | 127, n)
        if self.mask is None:
            return head + self.payload
        masked = bytes(b ^ self.mask[i % 4] for i, b in enumerate(self.payload))
        return head + self.mask + masked


#: Payload sizes around each change of the length encoding, and small ones.
SIZES = st.one_of(
    st.sampled_from([0, 1, 2, 125, 126, 127, 65535, 65536, 65537]), st.integers(0, 300)
)
#: Payload bytes that look like frame headers: a scanner that parses a payload is caught.
FILLERS = st.binary(min_size=1, max_size=8) | st.sampled_from([b"\x88\x02", b"\x81\xfe\x00"])


@st.composite
def payloads(draw: st.DrawFn, size: st.SearchStrategy[int] = SIZES) -> bytes:
    n = draw(size)
    filler = draw(FILLERS)
    return (filler * (n // len(filler) + 1))[:n]


@st.composite
def frame_sequences(draw: st.DrawFn) -> tuple[list[Frame], bool, int | None]:
    """A valid sequence of frames (messages in fragments, pings and pongs between them, maybe a
    Close at the end), masked or not as one direction would be; whether it masks; the code."""
    masked = draw(st.booleans())

    def key() -> bytes | None:
        return draw(st.binary(min_size=4, max_size=4)) if masked else None

    frames: list[Frame] = []
    for _ in range(draw(st.integers(0, 6))):
        fragments = draw(st.integers(1, 3))
        for i in range(fragments):
            opcode = draw(st.sampled_from([1, 2])) if i == 0 else 0
            frames.append(Frame(opcode, i == fragments - 1, draw(payloads()), key()))
            if draw(st.booleans()):
                control = draw(payloads(st.integers(0, 125)))
                frames.append(Frame(draw(st.sampled_from([9, 10])), True, control, key()))
    code: int | None = None
    if draw(st.booleans()):
        code = draw(st.integers(1000, 4999))
        reason = draw(st.text(max_size=20)).encode()[:100]
        frames.append(Frame(8, True, struct.pack("!H", code) + reason, key()))
    return frames, masked, code


@st.composite
def cuts(draw: st.DrawFn, wire: bytes) -> list[bytes]:
    """``wire`` cut at random places (including every place inside a header)."""
    points = sorted(set(draw(st.lists(st.integers(0, len(wire)), max_size=30))))
    edges = [0, *points, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(edges)]


def boundaries(frames: list[Frame]) -> list[int]:
    out, pos = [], 0
    for frame in frames:
        pos += len(frame.wire())
        out.append(pos)
    return out


def found_by_until_boundary(scanner: FrameScanner, chunks: list[bytes]) -> list[int]:
    """Every boundary position, found the way a stopping pump finds the next one."""
    found: list[int] = []
    pos = 0
    for chunk in chunks:
        off = 0
        while off < len(chunk):
            if scanner.at_boundary:
                assert scanner.until_boundary(chunk[off:]) == 0
                scanner.feed(chunk[off : off + 1])  # step into the next frame (>= 2 bytes)
                off += 1
                assert not scanner.at_boundary
                continue
            off += scanner.until_boundary(chunk[off:])
            if scanner.at_boundary:
                found.append(pos + off)
        pos += len(chunk)
    return found


@given(st.data())
def test_scanner_finds_exactly_the_frame_boundaries(data: st.DataObject) -> None:
    frames, masked, code = data.draw(frame_sequences())
    wire = b"".join(f.wire() for f in frames)
    chunks = data.draw(cuts(wire))
    scanner = FrameScanner(masked=masked, strict=True)
    assert found_by_until_boundary(scanner, chunks) == boundaries(frames)
    assert scanner.close_seen is (code is not None)
    assert scanner.payload == sum(len(f.payload) for f in frames if f.opcode < 8)
    assert scanner.close_code == code
    assert scanner.frames == len(frames)
    assert scanner.problem is None


@given(st.data())
def test_feed_tracks_boundaries_and_the_close_chunk_by_chunk(data: st.DataObject) -> None:
    frames, masked, code = data.draw(frame_sequences())
    wire = b"".join(f.wire() for f in frames)
    chunks = data.draw(cuts(wire))
    ends = {0, *boundaries(frames)}
    close_end = boundaries(frames)[-1] if code is not None else None
    scanner = FrameScanner(masked=masked)
    pos = 0
    for chunk in chunks:
        scanner.feed(chunk)
        pos += len(chunk)
        assert scanner.at_boundary is (pos in ends)
        # The Close counts as seen once its last byte passed, not before.
        assert scanner.close_seen is (close_end is not None and pos >= close_end)
    assert scanner.close_code == code
    assert scanner.problem is None


def test_a_read_inside_a_payload_reads_no_byte_of_it() -> None:
    class LengthOnly:
        """A chunk that can tell its length and nothing else."""

        def __len__(self) -> int:
            return 1 << 30

        def __getitem__(self, index: object) -> bytes:
            raise AssertionError("the scanner looked into a payload")

    scanner = FrameScanner(masked=True)
    scanner.feed(struct.pack("!BBQ", 0x82, 0xFF, 1 << 40) + b"mask")
    for _ in range(100):
        scanner.feed(LengthOnly())  # type: ignore[arg-type]
    assert not scanner.at_boundary
    assert scanner.frames == 0


def test_close_code_of_a_masked_close_is_read_through_its_mask() -> None:
    frame = Frame(8, True, struct.pack("!H", 1001) + b"bye", b"\x12\x34\x56\x78").wire()
    scanner = FrameScanner(masked=True)
    for byte in frame:  # one byte at a time: the code straddles reads
        assert not scanner.close_seen
        scanner.feed(bytes([byte]))
    assert scanner.close_seen
    assert scanner.close_code == 1001


def test_close_without_a_code_and_only_the_first_close_counts() -> None:
    scanner = FrameScanner(masked=False)
    scanner.feed(Frame(8, True, b"", None).wire())
    assert scanner.close_seen
    assert scanner.close_code is None
    scanner.feed(Frame(8, True, struct.pack("!H", 1000), None).wire())
    assert scanner.close_code is None


def test_until_boundary_stops_inside_a_chunk_of_several_frames() -> None:
    one = Frame(1, True, b"a" * 200, None).wire()
    two = Frame(1, True, b"b" * 10, None).wire()
    scanner = FrameScanner(masked=False)
    scanner.feed(one[:3])
    assert scanner.until_boundary(one[3:] + two) == len(one) - 3
    assert scanner.at_boundary
    assert scanner.until_boundary(two) == 0


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        (Frame(3, True, b"", None).wire(), "reserved opcode 3"),
        (Frame(11, True, b"", None).wire(), "reserved opcode 11"),
        (Frame(9, True, b"x" * 126, None).wire(), "control frame of 126 bytes"),
        (Frame(9, False, b"x", None).wire(), "fragmented control frame"),
        (Frame(8, True, b"x", None).wire(), "Close frame with a 1-byte payload"),
        (Frame(0, True, b"x", None).wire(), "continuation frame outside a fragmented message"),
        (
            Frame(1, False, b"x", None).wire() + Frame(2, True, b"y", None).wire(),
            "new data frame inside a fragmented message",
        ),
        (struct.pack("!BBQ", 0x82, 127, 1 << 63), "64-bit payload length with its top bit set"),
        (Frame(1, True, b"x", b"abcd").wire(), "a frame masked"),
    ],
)
def test_violations_are_reported_and_raised_only_when_strict(wire: bytes, problem: str) -> None:
    lenient = FrameScanner(masked=False)
    lenient.feed(wire)
    assert lenient.problem == problem
    with pytest.raises(FrameError, match=problem):
        FrameScanner(masked=False, strict=True).feed(wire)


def test_an_unmasked_frame_from_a_client_is_a_violation() -> None:
    scanner = FrameScanner(masked=True)
    scanner.feed(Frame(1, True, b"x", None).wire())
    assert scanner.problem == "a frame not masked"


# -- Close frames ---------------------------------------------------------------------------


def parse(wire: bytes, *, from_client: bool) -> list[fp.Frame]:
    protocol = fp.FrameProtocol(client=not from_client, extensions=[])
    protocol.receive_bytes(wire)
    return list(protocol.received_frames())


@pytest.mark.parametrize("masked", [True, False])
def test_close_frame_is_one_whole_close(masked: bool) -> None:
    wire = close_frame(1001, "server shutting down", masked=masked)
    assert bool(wire[1] & 0x80) is masked
    (frame,) = parse(wire, from_client=masked)
    assert frame.opcode is fp.Opcode.CLOSE
    assert frame.payload == (1001, "server shutting down")


def test_close_frame_cuts_a_long_reason_at_a_character() -> None:
    wire = close_frame(1000, "é" * 100, masked=True)
    (frame,) = parse(wire, from_client=True)
    assert frame.payload == (1000, "é" * 61)  # 122 bytes: a 2-byte character does not fit 123
    assert len(wire) <= 2 + 4 + 125


def test_close_frames_toward_the_backend_get_fresh_masks() -> None:
    assert close_frame(1001, "x", masked=True)[2:6] != close_frame(1001, "x", masked=True)[2:6]


# -- the handshake --------------------------------------------------------------------------


def test_accept_token_is_rfc_6455s_example() -> None:
    assert accept_token(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(st.binary(min_size=16, max_size=16))
def test_every_key_a_client_makes_is_valid(raw: bytes) -> None:
    key = base64.b64encode(raw)
    assert valid_key(key)
    assert accept_token(key) == base64.b64encode(
        hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    )


@pytest.mark.parametrize(
    "key",
    [
        b"",
        base64.b64encode(bytes(15)),
        base64.b64encode(bytes(17)),
        b"AAAAAAAAAAAAAAAAAAAAAB==",  # decodes, but no 16 bytes encode this way
        b"AAAAAAAAAAAAAAAAAAAAA*==",
        b" AAAAAAAAAAAAAAAAAAAAA==",
        b"AAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_invalid_keys(key: bytes) -> None:
    assert not valid_key(key)


KEY = base64.b64encode(os.urandom(16))


def answer(**changes: bytes | None) -> list[tuple[bytes, bytes]]:
    headers = {
        b"Upgrade": b"websocket",
        b"Connection": b"Upgrade",
        b"Sec-WebSocket-Accept": accept_token(KEY),
    }
    for name, value in changes.items():
        header = name.replace("_", "-").encode()
        if value is None:
            headers.pop(header, None)
        else:
            headers[header] = value
    return list(headers.items())


def test_a_valid_101_has_no_problem() -> None:
    assert upgrade_answer_problem(101, answer(), KEY, [], []) is None
    assert (
        upgrade_answer_problem(
            101,
            answer(**{"Sec-WebSocket-Protocol": b"v2", "Sec-WebSocket-Extensions": b"x-a; q=1"}),
            KEY,
            ["v1", "v2"],
            ["permessage-deflate; client_max_window_bits, x-a"],
        )
        is None
    )
    # Header names in any case, Connection with other tokens, Upgrade in any case.
    headers = [
        (b"upgrade", b"WebSocket"),
        (b"connection", b"keep-alive, Upgrade"),
        (b"sec-websocket-accept", accept_token(KEY)),
    ]
    assert upgrade_answer_problem(101, headers, KEY, [], []) is None


@pytest.mark.parametrize(
    ("status", "headers", "protocols", "extensions", "problem"),
    [
        (200, answer(), [], [], "status 200, not 101"),
        (101, answer(Upgrade=None), [], [], "no Upgrade: websocket"),
        (101, answer(Upgrade=b"h2c"), [], [], "no Upgrade: websocket"),
        (101, answer(Connection=b"keep-alive"), [], [], "no Connection: upgrade"),
        (101, answer(Sec_WebSocket_Accept=None), [], [], "does not match"),
        (101, answer(Sec_WebSocket_Accept=accept_token(b"x" * 24)), [], [], "does not match"),
        (101, answer(Sec_WebSocket_Protocol=b"v3"), ["v1"], [], "'v3' was not offered"),
        (101, answer(Sec_WebSocket_Protocol=b"v1"), [], [], "'v1' was not offered"),
        (101, answer(Sec_WebSocket_Protocol=b"v1, v2"), ["v1", "v2"], [], "more than one"),
        (
            101,
            answer(Sec_WebSocket_Extensions=b"permessage-deflate"),
            [],
            [],
            "'permessage-deflate' was not offered",
        ),
        (
            101,
            answer(Sec_WebSocket_Extensions=b"x-a, x-b"),
            [],
            ["x-a"],
            "'x-b' was not offered",
        ),
    ],
)
def test_an_invalid_answer_says_why(
    status: int,
    headers: list[tuple[bytes, bytes]],
    protocols: list[str],
    extensions: list[str],
    problem: str,
) -> None:
    found = upgrade_answer_problem(status, headers, KEY, protocols, extensions)
    assert found is not None
    assert problem in found


def test_two_accept_headers_are_refused() -> None:
    headers = [*answer(), (b"Sec-WebSocket-Accept", accept_token(KEY))]
    assert upgrade_answer_problem(101, headers, KEY, [], []) is not None


# -- purity ---------------------------------------------------------------------------------


def test_frames_imports_no_io() -> None:
    path = Path(_frames.__file__)
    names = imported_modules(path, set())
    assert "hashlib" in names  # the walk does see its imports
    assert not names & FORBIDDEN, names & FORBIDDEN


def test_the_import_walk_follows_relative_imports() -> None:
    # _splice imports trio itself and reaches socket only through its own imports.
    names = imported_modules(Path(_frames.__file__).with_name("_splice.py"), set())
    assert {"trio", "h11", "hashlib"} <= names


@given(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]), st.sampled_from([1, 2]))
def test_frame_header_makes_the_frame_a_client_reads(length: int, opcode: int) -> None:
    payload = b"a" * length
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(frame_header(opcode, length) + payload)
    [event] = list(client.events())
    assert isinstance(event, TextMessage if opcode == 1 else BytesMessage)
    assert event.data == (payload.decode() if opcode == 1 else payload)
    assert event.message_finished
