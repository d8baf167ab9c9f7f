"""The h11 backend pool, over in-memory streams: reuse, discard, retry, timeouts, cancellation.

A tiny h11 server runs on the other end of a ``trio.testing`` memory stream pair, so every byte on
the wire is ours to script; no sockets involved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
import pytest
import trio
import trio.testing

from trio_httpws._backend import BackendPool
from trio_httpws._config import BackendURL
from trio_httpws._errors import BackendError, BackendTimeout

BACKEND = BackendURL("http", "backend.test", 80)
Server = Callable[[trio.abc.Stream], Awaitable[None]]


class Opener:
    """A stream opener that connects each new "connection" to ``server`` in the nursery."""

    def __init__(self, nursery: trio.Nursery, server: Server) -> None:
        self.nursery = nursery
        self.server = server
        self.client_streams: list[trio.testing.MemoryStapledStream] = []  # type: ignore[name-defined]

    async def __call__(self, backend: BackendURL) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self.client_streams.append(client)
        self.nursery.start_soon(self.server, server)
        return client


async def serve_h11(
    stream: trio.abc.Stream,
    respond: Callable[[h11.Request, bytes], list[h11.Event]],
    *,
    max_requests: int = 100,
) -> None:
    """Answer up to ``max_requests`` requests on one connection with ``respond``'s events."""
    conn = h11.Connection(h11.SERVER)
    try:
        for _ in range(max_requests):
            request: h11.Request | None = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            for out in respond(request, body):
                await stream.send_all(conn.send(out) or b"")
            if conn.our_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


def ok(body: bytes = b"hello", *extra: tuple[str, str]) -> list[h11.Event]:
    headers = [("Content-Length", str(len(body))), *extra]
    return [h11.Response(status_code=200, headers=headers), h11.Data(data=body), h11.EndOfMessage()]


async def get(pool: BackendPool, target: str = "/", body: bytes | None = None) -> tuple[int, bytes]:
    async with pool.request(
        "POST" if body else "GET", target, [(b"host", b"backend.test")], body
    ) as resp:
        return resp.status, await resp.read()


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
