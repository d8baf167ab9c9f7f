"""``BackendResponse.iter_pieces`` and ``discard``: body pieces that follow the backend's chunks.

The backend's bytes are scripted read by read, so each test can cut the same response into
reads in many ways and check that the pieces never change.
"""

from __future__ import annotations

import random
from collections import deque

import h11
import pytest
import trio
import trio.testing

from trio_httpws._backend import RAW_BODY_MIN, BackendPool
from trio_httpws._config import BackendURL
from trio_httpws._errors import BackendError

from ..support.h11_backend import BACKEND, Opener, ok, serve_h11


class ScriptedStream(trio.abc.Stream):
    """A backend connection whose every ``receive_some`` returns the next scripted read."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = deque(reads)
        self.reads_done = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._reads:
            return b""
        data = self._reads.popleft()
        assert max_bytes is None or len(data) <= max_bytes
        self.reads_done += 1
        return data

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def cut(wire: bytes, how: str) -> list[bytes]:
    """The same bytes as reads: all at once, byte by byte, or at random points (seeded)."""
    if how == "whole":
        return [wire]
    if how == "bytes":
        return [wire[i : i + 1] for i in range(len(wire))]
    rng = random.Random(how)
    points = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randint(1, 12))))
    return [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]


CUTS = ["whole", "bytes", *(f"seed{i}" for i in range(12))]


def chunked(*chunks: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def with_length(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def pieces_of(reads: list[bytes], limit: int) -> list[bytes]:
    stream = ScriptedStream(reads)

    async def opener(backend: BackendURL) -> trio.abc.Stream:
        return stream

    pool = BackendPool(BACKEND, opener=opener)
    async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
        return [piece async for piece in resp.iter_pieces(limit)]


@pytest.mark.parametrize("how", CUTS)
async def test_one_piece_per_chunk_however_the_reads_fall(how: str) -> None:
    # The original's own test: a handler that flushes "first", then "last".
    assert await pieces_of(cut(chunked(b"first", b"last"), how), 65536) == [b"first", b"last"]


@pytest.mark.parametrize("how", CUTS)
async def test_a_chunk_over_the_limit_is_sliced(how: str) -> None:
    wire = chunked(b"abcdefghij", b"xy", b"1234", b"z")
    expected = [b"abcd", b"efgh", b"ij", b"xy", b"1234", b"z"]
    assert await pieces_of(cut(wire, how), 4) == expected


@pytest.mark.parametrize("how", CUTS)
async def test_a_content_length_body_comes_in_limit_sized_pieces(how: str) -> None:
    assert await pieces_of(cut(with_length(b"abcdefghij"), how), 4) == [b"abcd", b"efgh", b"ij"]


@pytest.mark.parametrize("how", CUTS)
async def test_a_body_ended_by_close_comes_in_limit_sized_pieces(how: str) -> None:
    wire = b"HTTP/1.0 200 OK\r\n\r\nabcdefghij"
    assert await pieces_of(cut(wire, how), 4) == [b"abcd", b"efgh", b"ij"]


async def test_empty_bodies_give_no_piece() -> None:
    assert await pieces_of([with_length(b"")], 4) == []
    assert await pieces_of([chunked()], 4) == []


@pytest.mark.parametrize("how", ["whole", "bytes", "seed1"])
async def test_a_body_that_breaks_off_yields_what_arrived_then_fails(how: str) -> None:
    # Content-Length promises 10 bytes; the backend closes after 6.
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcdef"
    stream = ScriptedStream(cut(wire, how))

    async def opener(backend: BackendURL) -> trio.abc.Stream:
        return stream

    pool = BackendPool(BACKEND, opener=opener)
    pieces: list[bytes] = []

    async def read_all() -> None:
        async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
            async for piece in resp.iter_pieces(4):
                pieces.append(piece)

    with pytest.raises(BackendError):
        await read_all()
    assert pieces == [b"abcd", b"ef"]


async def test_a_piece_is_yielded_as_soon_as_it_is_complete() -> None:
    # A big chunk arriving a read at a time is not held until its end: memory stays at one
    # piece, and the client sees data while the rest is still on its way.
    limit = 1000
    body = bytes(range(256)) * 40  # 10240 bytes: one chunk, eleven pieces
    wire = chunked(body)
    stream = ScriptedStream([wire[i : i + limit] for i in range(0, len(wire), limit)])

    async def opener(backend: BackendURL) -> trio.abc.Stream:
        return stream

    pool = BackendPool(BACKEND, opener=opener)
    async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
        pieces = []
        async for piece in resp.iter_pieces(limit):
            # Piece n needs n x limit bytes of body, i.e. at most n + 1 reads (head included).
            assert stream.reads_done <= len(pieces) + 2
            pieces.append(piece)
    assert b"".join(pieces) == body
    assert [len(p) for p in pieces] == [limit] * 10 + [240]


async def test_discard_reads_a_small_body_away_and_keeps_the_connection() -> None:
    def respond(req: h11.Request, body: bytes) -> list[h11.Event]:
        return ok(b"moved" if req.target == b"/old" else b"here")

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, lambda s: serve_h11(s, respond)))
        async with pool.request("GET", "/old", [(b"host", b"b")]) as resp:
            await resp.discard(100)
        async with pool.request("GET", "/new", [(b"host", b"b")]) as resp:
            assert await resp.read() == b"here"
        assert pool.opened == 1
        await pool.aclose()


async def test_discard_leaves_a_big_body_and_drops_the_connection() -> None:
    async with trio.open_nursery() as nursery:
        opener = Opener(nursery, lambda s: serve_h11(s, lambda req, body: ok(b"x" * 500_000)))
        pool = BackendPool(BACKEND, opener=opener)
        async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
            await resp.discard(100)
        assert pool.idle_count == 0
        async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
            assert await resp.read() == b"x" * 500_000
        assert pool.opened == 2
        await pool.aclose()


class TrickleStream(ScriptedStream):
    """``wire`` in reads of random sizes (seeded), never more than the reader asks for."""

    def __init__(self, wire: bytes, seed: int, stop_at: int | None = None) -> None:
        super().__init__([])
        self._wire = wire[:stop_at]
        self._pos = 0
        self._rng = random.Random(seed)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        size = self._rng.choice([1, 7, 1000, 65536, 200_000, self._rng.randint(1, 100_000)])
        if max_bytes is not None:
            size = min(size, max_bytes)
        data = self._wire[self._pos : self._pos + size]
        self._pos += len(data)
        self.reads_done += 1
        return data


def _pool_on(stream: trio.abc.Stream) -> BackendPool:
    async def opener(backend: BackendURL) -> trio.abc.Stream:
        return stream

    return BackendPool(BACKEND, opener=opener)


@pytest.mark.parametrize("seed", range(6))
async def test_a_large_content_length_body_read_past_h11_keeps_its_pieces(seed: int) -> None:
    # Past RAW_BODY_MIN the body is read from the stream itself: the pieces are the same as
    # h11 would have made, whatever the reads, and the connection is not reused afterwards.
    limit = 65536
    body = random.Random(seed).randbytes(3 * RAW_BODY_MIN + 5)
    pool = _pool_on(TrickleStream(with_length(body), seed))
    async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
        pieces = [piece async for piece in resp.iter_pieces(limit)]
    assert b"".join(pieces) == body
    assert {len(p) for p in pieces[:-1]} == {limit}
    assert len(pieces[-1]) == len(body) % limit
    assert pool.idle_count == 0


@pytest.mark.parametrize("seed", range(3))
async def test_a_large_body_that_breaks_off_past_h11_yields_what_arrived(seed: int) -> None:
    body = b"z" * (3 * RAW_BODY_MIN)
    wire = with_length(body)
    sent = 2 * RAW_BODY_MIN + 12345
    pool = _pool_on(TrickleStream(wire, seed, stop_at=len(wire) - len(body) + sent))
    pieces: list[bytes] = []

    async def read_all() -> None:
        async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
            async for piece in resp.iter_pieces(65536):
                pieces.append(piece)

    with pytest.raises(BackendError, match="bytes before the end of the body"):
        await read_all()
    assert sum(map(len, pieces)) == sent
    assert pool.idle_count == 0
