"""The h11 backend pool, over in-memory streams: reuse, discard, retry, timeouts, cancellation.

A tiny h11 server runs on the other end of a ``trio.testing`` memory stream pair, so every byte on
the wire is ours to script; no sockets involved (what needs one: tests/proxy/test_backend.py).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import h11
import pytest
import trio
import trio.testing

from trio_httpws._backend import (
    RAW_BODY_MIN,
    BackendPool,
    Body,
    _ConnectionLost,
    _socket_readable,
    may_replay,
)
from trio_httpws._config import BackendURL
from trio_httpws._errors import BackendBusy, BackendError, BackendTimeout

from ..support.h11_backend import BACKEND, Answer, Opener, get, ok, serve_h11


async def test_connection_is_reused_after_a_complete_exchange() -> None:
    async with trio.open_nursery() as nursery:
        opener = Opener(nursery, lambda s: serve_h11(s, lambda req, body: ok(req.target)))
        pool = BackendPool(BACKEND, opener=opener)
        assert await get(pool, "/a") == (200, b"/a")
        assert await get(pool, "/b") == (200, b"/b")
        assert pool.opened == 1
        assert pool.idle_count == 1
        await pool.aclose()
        assert pool.idle_count == 0


async def test_request_body_and_framing() -> None:
    seen: list[tuple[bytes, bytes, list[tuple[bytes, bytes]]]] = []

    def respond(req: h11.Request, body: bytes) -> list[h11.Event]:
        seen.append((req.method, body, list(req.headers)))
        return ok(body)

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, lambda s: serve_h11(s, respond)))
        payload = bytes(range(256)) * 10
        assert await get(pool, "/echo", payload) == (200, payload)
        method, body, headers = seen[0]
        assert (method, body) == (b"POST", payload)
        assert (b"content-length", str(len(payload)).encode()) in headers
        await pool.aclose()


async def test_connection_close_response_is_not_reused() -> None:
    async with trio.open_nursery() as nursery:
        opener = Opener(
            nursery, lambda s: serve_h11(s, lambda req, body: ok(b"x", ("Connection", "close")))
        )
        pool = BackendPool(BACKEND, opener=opener)
        await get(pool)
        await get(pool)
        assert pool.opened == 2
        assert pool.idle_count == 0


async def test_half_read_body_discards_the_connection() -> None:
    async with trio.open_nursery() as nursery:
        opener = Opener(nursery, lambda s: serve_h11(s, lambda req, body: ok(b"y" * 500_000)))
        pool = BackendPool(BACKEND, opener=opener)
        async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
            async for _chunk in resp.iter_chunks():
                break  # leave the rest unread
        assert pool.idle_count == 0
        # The next request gets a fresh connection and a whole, correct body.
        assert await get(pool) == (200, b"y" * 500_000)
        assert pool.opened == 2
        await pool.aclose()


def _big(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"!" * (size % 256)


async def test_large_content_length_body_is_read_past_h11_and_byte_exact() -> None:
    """Past RAW_BODY_MIN a body is read from the stream itself: exact bytes, then a new
    connection for the next request (h11 never saw that body end); small bodies still reuse."""
    big = _big(3 * RAW_BODY_MIN + 123)
    sizes: list[int] = []

    def respond(req: h11.Request, body: bytes) -> list[h11.Event]:
        return ok(big if req.target == b"/big" else b"small")

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, lambda s: serve_h11(s, respond)))
        assert await get(pool, "/small") == (200, b"small")
        async with pool.request("GET", "/big", [(b"host", b"b")]) as resp:
            received = []
            async for chunk in resp.iter_chunks(256 * 1024):
                sizes.append(len(chunk))
                received.append(chunk)
        assert b"".join(received) == big
        assert max(sizes) <= 256 * 1024  # one read's worth at most: backpressure holds
        assert await get(pool, "/small") == (200, b"small")
        assert await get(pool, "/small") == (200, b"small")
        assert pool.opened == 2  # the big body's connection was not reused, the next one is
        await pool.aclose()


async def _read_into(pool: BackendPool, received: list[bytes]) -> None:
    """GET / and keep each chunk of the body, until it ends or fails."""
    async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
        async for chunk in resp.iter_chunks():
            received.append(chunk)


async def test_large_body_cut_short_is_a_backend_error_that_says_so() -> None:
    def respond(req: h11.Request, body: bytes) -> bytes:
        head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (3 * RAW_BODY_MIN)
        return head + b"x" * (2 * RAW_BODY_MIN)  # then hangs up

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, lambda s: serve_h11(s, respond)))
        received: list[bytes] = []
        with pytest.raises(BackendError, match=f"{RAW_BODY_MIN} bytes before the end of the body"):
            await _read_into(pool, received)
        assert len(b"".join(received)) == 2 * RAW_BODY_MIN
        assert pool.idle_count == 0


async def test_large_body_that_stalls_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def stalls(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (3 * RAW_BODY_MIN)
        await stream.send_all(head + b"x" * (2 * RAW_BODY_MIN))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, stalls), read_timeout=7)
        with pytest.raises(BackendTimeout, match="sent nothing for 7s"):
            await _read_into(pool, [])
        assert pool.idle_count == 0
        nursery.cancel_scope.cancel()


async def test_stale_pooled_connection_is_retried_once() -> None:
    async with trio.open_nursery() as nursery:
        # Each connection answers one request, then the server closes it (without saying so).
        opener = Opener(nursery, lambda s: serve_h11(s, lambda req, body: ok(b"z"), max_requests=1))
        pool = BackendPool(BACKEND, opener=opener)
        assert await get(pool) == (200, b"z")
        await trio.testing.wait_all_tasks_blocked()
        assert pool.idle_count == 1  # looked reusable: keep-alive response
        assert await get(pool) == (200, b"z")  # stale -> retried on a new connection
        assert pool.opened == 2


async def test_backend_that_closes_without_response_is_a_backend_error() -> None:
    async def hang_up(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, hang_up))
        with pytest.raises(BackendError, match=r"without a response|lost|invalid"):
            await get(pool)
        assert pool.idle_count == 0


async def test_invalid_http_from_backend() -> None:
    async def garbage(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, garbage))
        with pytest.raises(BackendError, match="invalid HTTP"):
            await get(pool)


async def test_connect_failure_names_the_backend() -> None:
    async def refuse(backend: BackendURL) -> trio.abc.Stream:
        raise OSError("connection refused")

    pool = BackendPool(BACKEND, opener=refuse)
    with pytest.raises(BackendError, match=r"cannot connect to backend http://backend.test"):
        await get(pool)


async def test_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def never(backend: BackendURL) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    pool = BackendPool(BACKEND, opener=never, connect_timeout=3)
    start = trio.current_time()
    with pytest.raises(BackendTimeout, match="timed out connecting"):
        await get(pool)
    assert trio.current_time() - start == pytest.approx(3)


async def test_read_timeout_discards(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        opener = Opener(nursery, silent)
        pool = BackendPool(BACKEND, opener=opener, read_timeout=7)
        with pytest.raises(BackendTimeout, match="sent nothing for 7s"):
            await get(pool)
        assert pool.idle_count == 0
        nursery.cancel_scope.cancel()


async def test_cancellation_mid_body_discards_and_closes_the_stream() -> None:
    """A slow body cancelled halfway: the connection is closed, never pooled."""
    started = trio.Event()

    async def slow_body(stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(await stream.receive_some(65536))
        await stream.send_all(
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "1000")]))
            + conn.send(h11.Data(data=b"a" * 10))
        )
        started.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        opener = Opener(nursery, slow_body)
        pool = BackendPool(BACKEND, opener=opener)
        with trio.move_on_after(5) as scope:
            async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
                async for chunk in resp.iter_chunks():
                    assert chunk == b"a" * 10
                    scope.cancel()
        assert scope.cancelled_caught
        assert pool.idle_count == 0
        # The client end was closed: using it now fails.
        with pytest.raises(trio.ClosedResourceError):
            await opener.client_streams[0].send_all(b"x")
        nursery.cancel_scope.cancel()


async def test_streamed_request_body_is_chunked() -> None:
    seen: list[tuple[list[tuple[bytes, bytes]], bytes]] = []

    def respond(req: h11.Request, body: bytes) -> list[h11.Event]:
        seen.append((list(req.headers), body))
        return ok(b"done")

    async def pieces():  # type: ignore[no-untyped-def]
        for piece in (b"one,", b"", b"two,", b"three"):
            yield piece

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, lambda s: serve_h11(s, respond)))
        async with pool.request("PUT", "/up", [(b"host", b"b")], pieces()) as resp:
            assert await resp.read() == b"done"
        headers, body = seen[0]
        assert (b"transfer-encoding", b"chunked") in headers
        assert body == b"one,two,three"
        await pool.aclose()


async def test_informational_response_is_skipped() -> None:
    def respond(req: h11.Request, body: bytes) -> list[h11.Event]:
        return [h11.InformationalResponse(status_code=100, headers=[]), *ok(b"after")]

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=Opener(nursery, lambda s: serve_h11(s, respond)))
        assert await get(pool) == (200, b"after")
        await pool.aclose()


async def test_read_limit() -> None:
    async with trio.open_nursery() as nursery:
        opener = Opener(nursery, lambda s: serve_h11(s, lambda req, body: ok(b"q" * 1000)))
        pool = BackendPool(BACKEND, opener=opener)
        async with pool.request("GET", "/", [(b"host", b"b")]) as resp:
            with pytest.raises(BackendError, match="larger than 100 bytes"):
                await resp.read(limit=100)
        # Whatever was left unread decides reuse; the next request is answered correctly.
        assert await get(pool) == (200, b"q" * 1000)
        await pool.aclose()


async def test_requests_beyond_max_connections_wait_for_a_slot() -> None:
    """At most max_connections requests reach the backend at once; the rest queue, none fail."""
    running = 0
    peak = 0
    release = trio.Event()

    async def slow_server(stream: trio.abc.Stream) -> None:
        nonlocal running, peak
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(await stream.receive_some(65536))
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        answer = ok(b"done", ("Connection", "close"))
        await stream.send_all(b"".join(conn.send(e) or b"" for e in answer))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        opener = Opener(nursery, slow_server)
        pool = BackendPool(BACKEND, opener=opener, max_connections=3)
        results: list[tuple[int, bytes]] = []

        async def one() -> None:
            results.append(await get(pool))

        async with trio.open_nursery() as clients:
            for _ in range(8):
                clients.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            assert (running, pool.opened) == (3, 3)  # five requests wait for a slot
            release.set()
        assert results == [(200, b"done")] * 8
        assert peak == 3
        nursery.cancel_scope.cancel()


# -- never replayed ---------------------------------------------------------------------------


async def test_post_that_times_out_is_sent_once(autojump_clock: trio.testing.MockClock) -> None:
    """With idle connections in the pool, a POST without an answer is still sent only once."""
    received: list[bytes] = []

    async def post_hangs(req: h11.Request, body: bytes) -> Answer:
        received.append(req.method)
        if req.method == b"POST":
            await trio.sleep_forever()
        return ok(b"fine")

    async with trio.open_nursery() as nursery:
        pool = BackendPool(
            BACKEND, opener=Opener(nursery, lambda s: serve_h11(s, post_hangs)), read_timeout=1
        )
        # Four idle keep-alive connections, as a busy socket leaves behind.
        async with trio.open_nursery() as warm:
            for _ in range(4):
                warm.start_soon(get, pool)
        assert pool.idle_count == 4
        start = trio.current_time()
        with pytest.raises(BackendTimeout, match="sent nothing for 1s"):
            await get(pool, "/api/contents", b"payload")
        assert trio.current_time() - start == pytest.approx(1)
        assert received.count(b"POST") == 1
        nursery.cancel_scope.cancel()


class SecondRequestHangsUp:
    """Connection 1 answers its first request, then closes as the second arrives (the race
    of a keep-alive timeout); later connections answer everything. Records (connection, method).
    """

    def __init__(self, nursery: trio.Nursery, last_words: bytes | None = None) -> None:
        self.opener = Opener(nursery, self.serve)
        self.last_words = last_words
        self.seen: list[tuple[int, bytes]] = []

    async def serve(self, stream: trio.abc.Stream) -> None:
        number = len(self.opener.client_streams)

        def respond(req: h11.Request, body: bytes) -> Answer:
            self.seen.append((number, req.method))
            if len(self.seen) == 2:
                return self.last_words
            return ok(b"" if req.method == b"HEAD" else b"ok")

        await serve_h11(stream, respond)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])
async def test_idempotent_request_on_a_reset_connection_is_retried_once(method: str) -> None:
    async with trio.open_nursery() as nursery:
        backend = SecondRequestHangsUp(nursery)
        pool = BackendPool(BACKEND, opener=backend.opener)
        await get(pool)
        body = b"same again" if method in ("PUT", "DELETE") else None
        async with pool.request(method, "/", [(b"host", b"b")], body) as resp:
            assert resp.status == 200
            await resp.read()
        assert backend.seen == [(1, b"GET"), (1, method.encode()), (2, method.encode())]
        assert pool.opened == 2
        await pool.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT-streamed", "CUSTOM"])
async def test_other_requests_on_a_reset_connection_are_not_retried(method: str) -> None:
    async def streamed() -> AsyncIterator[bytes]:
        yield b"piece"

    async with trio.open_nursery() as nursery:
        backend = SecondRequestHangsUp(nursery)
        pool = BackendPool(BACKEND, opener=backend.opener)
        await get(pool)
        name = method.split("-")[0]
        body: Body = streamed() if method.endswith("streamed") else b"body"
        with pytest.raises(BackendError, match="without a response"):
            async with pool.request(name, "/", [(b"host", b"b")], body):
                pass
        assert backend.seen == [(1, b"GET"), (1, name.encode())]
        assert pool.opened == 1
        nursery.cancel_scope.cancel()


async def test_get_with_response_bytes_before_the_reset_is_not_retried() -> None:
    async with trio.open_nursery() as nursery:
        backend = SecondRequestHangsUp(nursery, last_words=b"HTTP/1.1 200 OK\r\nContent-Le")
        pool = BackendPool(BACKEND, opener=backend.opener)
        await get(pool)
        with pytest.raises(BackendError) as info:
            await get(pool)
        assert not info.value.before_response
        assert backend.seen == [(1, b"GET"), (1, b"GET")]
        nursery.cancel_scope.cancel()


async def test_socket_readable_sees_through_tls() -> None:
    a, b = trio.socket.socketpair()
    stream = trio.SSLStream(trio.SocketStream(a), ssl.create_default_context())
    assert not _socket_readable(stream)
    b.close()
    assert _socket_readable(stream)
    a.close()


@pytest.mark.parametrize(
    ("method", "body", "reused", "lost", "expected"),
    [
        ("GET", None, True, True, True),
        ("PUT", b"x", True, True, True),
        ("GET", None, False, True, False),  # a fresh connection failing is not the race
        ("POST", b"x", True, True, False),
        ("GET", None, True, False, False),  # a timeout
    ],
)
def test_may_replay(
    method: str, body: bytes | None, reused: bool, lost: bool, expected: bool
) -> None:
    exc = _ConnectionLost("x", before_response=True) if lost else BackendTimeout("t")
    assert may_replay(method, body, reused, exc) is expected


# -- deadlines ---------------------------------------------------------------------------------


async def test_backend_that_stops_reading_the_body_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def reads_headers_only(stream: trio.abc.Stream) -> None:
        await stream.receive_some(100)
        await trio.sleep_forever()

    async def lockstep_opener(backend: BackendURL) -> trio.abc.Stream:
        client, server = trio.testing.lockstep_stream_pair()
        nursery.start_soon(reads_headers_only, server)
        return client

    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=lockstep_opener, write_timeout=9)
        start = trio.current_time()
        with pytest.raises(BackendTimeout, match="stopped reading the request for 9s"):
            await get(pool, "/upload", b"x" * 1_000_000)
        assert trio.current_time() - start == pytest.approx(9)
        assert pool.idle_count == 0
        nursery.cancel_scope.cancel()


async def test_waiting_for_a_connection_slot_ends_in_backend_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def never_answers(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        pool = BackendPool(
            BACKEND, opener=Opener(nursery, never_answers), max_connections=1, pool_timeout=4
        )
        nursery.start_soon(get, pool)  # holds the only slot
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with pytest.raises(BackendBusy, match=r"all 1 connections .* stayed busy for 4s") as info:
            await get(pool)
        assert trio.current_time() - start == pytest.approx(4)
        assert info.value.status == 503
        nursery.cancel_scope.cancel()
