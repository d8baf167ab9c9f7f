"""WebSocket handshake checks and frame boundaries for a byte relay, with no I/O.

A spliced WebSocket's payload is the endpoints' business: the relay copies it as it arrives and
never unmasks, joins or copies it. What the relay must still know is where each frame ends, so
that it can stop a direction exactly between two frames (to send a Close of its own at shutdown)
and tell a Close from a dropped connection. ``FrameScanner`` learns that from the frame headers
alone (2 to 14 bytes, split across reads as the wire splits them) and the payload lengths they
state: a read that lies wholly inside a payload costs one subtraction.

What it sees of a broken peer (a reserved opcode, a large or fragmented control frame, a
continuation out of place, a 64-bit length with its top bit set, a frame masked the wrong way)
is reported, not acted on: the endpoints judge their own protocol, as they would without us.

Nothing here imports trio, sockets or ssl.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence

#: RFC 6455 section 1.3: appended to the client's key before hashing.
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CLOSE_OPCODE = 8
#: Largest payload of a control frame (RFC 6455 5.5), and of a Close's reason after its code.
MAX_CONTROL_PAYLOAD = 125
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2

_RESERVED_OPCODES = frozenset({3, 4, 5, 6, 7, 11, 12, 13, 14, 15})


def accept_token(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value that answers ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


def valid_key(key: bytes) -> bool:
    """Whether ``key`` is the base64 of exactly 16 bytes, spelled canonically (RFC 6455 4.1)."""
    if len(key) != 24:
        return False
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return False
    # Canonical: 16 random bytes always encode this way; "AAAA...AB==" decodes but is not one.
    return len(raw) == 16 and base64.b64encode(raw) == key


def _tokens(values: Iterable[bytes]) -> list[str]:
    """The comma-separated items of repeated header values, trimmed, lower-cased."""
    return [
        item.strip().lower()
        for value in values
        for item in value.decode("latin-1").split(",")
        if item.strip()
    ]


def extension_names(offers: Iterable[str]) -> set[str]:
    """``permessage-deflate; client_max_window_bits, x-foo`` -> {"permessage-deflate", "x-foo"}."""
    return {
        item.split(";", 1)[0].strip().lower()
        for offer in offers
        for item in offer.split(",")
        if item.split(";", 1)[0].strip()
    }


def upgrade_answer_problem(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    key: bytes,
    offered_protocols: Sequence[str],
    offered_extensions: Sequence[str],
) -> str | None:
    """Why the backend's answer to our upgrade is not a 101 the client may be handed, or None.

    ``offered_protocols`` are the subprotocols and ``offered_extensions`` the extension offers
    (whole header values or single items) that our upgrade request carried: the backend may
    only pick from those (RFC 6455 4.1, the client's checks, which the client itself will make
    again on what we pass on).
    """
    if status != 101:
        return f"status {status}, not 101"
    by_name: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    if "websocket" not in _tokens(by_name.get(b"upgrade", [])):
        return "no Upgrade: websocket"
    if "upgrade" not in _tokens(by_name.get(b"connection", [])):
        return "no Connection: upgrade"
    accepts = by_name.get(b"sec-websocket-accept", [])
    if len(accepts) != 1 or accepts[0].strip() != accept_token(key):
        return "Sec-WebSocket-Accept does not match the key"
    protocols = by_name.get(b"sec-websocket-protocol", [])
    if protocols:
        chosen = [p.strip() for p in protocols[0].decode("latin-1").split(",")]
        if len(protocols) != 1 or len(chosen) != 1:
            return "more than one subprotocol chosen"
        if chosen[0] not in offered_protocols:
            return f"subprotocol {chosen[0]!r} was not offered"
    offered = extension_names(offered_extensions)
    chosen_extensions = extension_names(
        v.decode("latin-1") for v in by_name.get(b"sec-websocket-extensions", [])
    )
    if not chosen_extensions <= offered:
        return f"extension {sorted(chosen_extensions - offered)[0]!r} was not offered"
    return None


def _masked(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


TEXT_OPCODE = 1
BINARY_OPCODE = 2


def frame_header(opcode: int, length: int) -> bytes:
    """The header of a whole, unmasked frame (a server's) of ``length`` payload bytes."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


def close_frame(code: int, reason: str, *, masked: bool) -> bytes:
    """A whole Close frame; ``masked`` (with a fresh random key) for the client-to-server way.

    A reason longer than a control frame allows is cut at a character boundary.
    """
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON:
        encoded = encoded[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    payload = code.to_bytes(2, "big") + encoded
    if not masked:
        return bytes((0x80 | CLOSE_OPCODE, len(payload))) + payload
    mask = os.urandom(4)
    return bytes((0x80 | CLOSE_OPCODE, 0x80 | len(payload))) + mask + _masked(payload, mask)


class FrameError(ValueError):
    """A frame header breaks RFC 6455 (raised only by a ``strict`` scanner)."""


class FrameScanner:
    """Frame boundaries of one direction of a WebSocket, from its bytes as they pass.

    Feed every byte of the direction, in order, exactly once (``feed`` or ``until_boundary``).
    ``masked`` says how the direction's frames must be masked (True from a client, False from
    a server, None: not checked).
    """

    __slots__ = (
        "_close_left",
        "_code_bytes",
        "_fragmented",
        "_head",
        "_in_close",
        "_left",
        "_mask_key",
        "close_code",
        "close_seen",
        "frames",
        "masked",
        "payload",
        "problem",
        "strict",
    )

    def __init__(self, *, masked: bool | None = None, strict: bool = False) -> None:
        self.masked = masked
        self.strict = strict
        #: Payload bytes of the current frame still to pass.
        self._left = 0
        #: The start of a frame header split across feeds (empty between frames).
        self._head = b""
        #: Whether a fragmented data message is in progress (its continuations may follow).
        self._fragmented = False
        #: The current frame is a Close; the first two bytes of its payload are its code.
        self._in_close = False
        self._close_left = 0
        self._code_bytes = b""
        self._mask_key = b""
        #: Frames that passed whole.
        self.frames = 0
        #: Payload bytes of the data frames (text, binary, continuation) that began: a
        #: message's size as the frame-parsing relays count it, read from the headers alone.
        self.payload = 0
        #: A whole Close frame has passed.
        self.close_seen = False
        #: The first Close's status code (None: it had none).
        self.close_code: int | None = None
        #: The first violation seen, if any.
        self.problem: str | None = None

    @property
    def at_boundary(self) -> bool:
        """Whether everything fed so far ends exactly at the end of a frame."""
        return not self._left and not self._head

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Account for ``data``, the next bytes of this direction."""
        left = self._left
        if left > len(data):  # wholly inside a payload: the hot path for large messages
            if self._in_close:
                self._close_bytes(data)
            self._left = left - len(data)
            return
        self._scan(data, False)

    def until_boundary(self, data: bytes | bytearray | memoryview) -> int:
        """Account for the bytes of ``data`` up to the end of the frame in progress; how many.

        0 when everything fed so far ends at a frame boundary; ``len(data)`` (and not
        ``at_boundary``) when the frame goes on past ``data``.
        """
        if self.at_boundary:
            return 0
        return self._scan(data, True)

    def _scan(self, data: bytes | bytearray | memoryview, stop: bool) -> int:
        end = len(data)
        pos = 0
        while pos < end:
            left = self._left
            if left:
                take = min(left, end - pos)
                if self._in_close:
                    self._close_bytes(data[pos : pos + take])
                self._left = left - take
                pos += take
                if self._left:
                    return pos
                self._frame_end()
                if stop:
                    return pos
                continue
            pos = self._header(data, pos, end)
            if pos < 0:  # the header goes on in the next feed
                return end
            if not self._left:  # an empty payload: the frame ends with its header
                self._frame_end()
                if stop:
                    return pos
        return pos

    def _header(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> int:
        """Parse the header starting at ``pos`` (after any held part): where its payload starts,
        or -1 when the rest of ``data`` is held as the start of a header still incomplete."""
        head = self._head
        buf: bytes | bytearray | memoryview
        if head:
            # The held part is at most 13 bytes: joined with at most 14 more, never a payload.
            buf = head + bytes(data[pos : pos + 14])
            base = -len(head)
        else:
            buf = data[pos : pos + 14]
            base = 0
        size = len(buf)
        if size < 2:
            self._head = bytes(buf)
            return -1
        b0 = buf[0]
        b1 = buf[1]
        length = b1 & 0x7F
        need = 2 + (4 if b1 & 0x80 else 0) + (2 if length == 126 else 8 if length == 127 else 0)
        if size < need:
            self._head = bytes(buf)
            return -1
        if length == 126:
            length = int.from_bytes(buf[2:4], "big")
        elif length == 127:
            length = int.from_bytes(buf[2:10], "big")
            if length >> 63:
                self._violation("64-bit payload length with its top bit set")
        self._head = b""
        self._left = length
        self._check(b0, b1, length)
        if b0 & 0x0F < 8:
            self.payload += length
        if b0 & 0x0F == CLOSE_OPCODE and not self.close_seen:
            self._in_close = True
            self._close_left = min(length, 2)
            self._code_bytes = b""
            self._mask_key = bytes(buf[need - 4 : need]) if b1 & 0x80 else b""
        return pos + base + need

    def _check(self, b0: int, b1: int, length: int) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if self.masked is not None and bool(b1 & 0x80) is not self.masked:
            self._violation("a frame masked" if b1 & 0x80 else "a frame not masked")
        if opcode in _RESERVED_OPCODES:
            self._violation(f"reserved opcode {opcode}")
        elif opcode >= 8:
            if length > MAX_CONTROL_PAYLOAD:
                self._violation(f"control frame of {length} bytes")
            if not fin:
                self._violation("fragmented control frame")
            if opcode == CLOSE_OPCODE and length == 1:
                self._violation("Close frame with a 1-byte payload")
        elif opcode == 0:
            if not self._fragmented:
                self._violation("continuation frame outside a fragmented message")
            self._fragmented = not fin
        else:
            if self._fragmented:
                self._violation("new data frame inside a fragmented message")
            self._fragmented = not fin

    def _violation(self, text: str) -> None:
        if self.problem is None:
            self.problem = text
        if self.strict:
            raise FrameError(text)

    def _close_bytes(self, data: bytes | bytearray | memoryview) -> None:
        # Only a Close's code is read: at most two bytes, unmasked with their two mask bytes.
        want = self._close_left
        if want:
            got = bytes(data[:want])
            self._code_bytes += got
            self._close_left = want - len(got)

    def _frame_end(self) -> None:
        self.frames += 1
        if self._in_close:
            self._in_close = False
            self.close_seen = True
            code = self._code_bytes
            if len(code) == 2:
                if self._mask_key:
                    code = bytes(c ^ m for c, m in zip(code, self._mask_key[:2], strict=True))
                self.close_code = int.from_bytes(code, "big")
