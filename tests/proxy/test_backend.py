"""The h11 backend pool on a real socket: what only a real socket shows (the pool looks at it).

The rest of the pool's rules run over memory streams in tests/unit/test_backend.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import h11
import trio

from trio_httpws._backend import BackendPool
from trio_httpws._config import BackendURL

from ..support.h11_backend import Answer, get, ok, serve_h11


@asynccontextmanager
async def tcp_backend(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[BackendURL]:
    """``handler`` serving each connection of a real listener on 127.0.0.1."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield BackendURL("http", "127.0.0.1", port)
        nursery.cancel_scope.cancel()


async def test_idle_connection_closed_by_the_backend_is_dropped_before_sending() -> None:
    """Found by looking at the socket, not by losing a request: even a streamed POST works."""
    requests_per_connection: list[int] = []
    closed = trio.Event()

    async def one_request_then_close(stream: trio.SocketStream) -> None:
        requests_per_connection.append(0)

        def respond(req: h11.Request, body: bytes) -> Answer:
            requests_per_connection[-1] += 1
            return ok(b"ok")  # keep-alive, yet closed right after

        await serve_h11(stream, respond, max_requests=1)
        closed.set()

    async def streamed() -> AsyncIterator[bytes]:
        yield b"cannot be sent twice"

    async with tcp_backend(one_request_then_close) as url:
        pool = BackendPool(url)
        assert await get(pool) == (200, b"ok")
        await closed.wait()
        assert pool.idle_count == 1
        async with pool.request("POST", "/", [(b"host", b"b")], streamed()) as resp:
            assert (resp.status, await resp.read()) == (200, b"ok")
        assert requests_per_connection == [1, 1]
        assert pool.opened == 2
        await pool.aclose()
