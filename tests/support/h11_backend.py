"""A scripted h11 backend for the backend pool, on ``trio.testing`` memory streams: every byte on
the wire is the test's to script, and no socket is involved."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import h11
import trio
import trio.testing

from trio_httpws._backend import BackendPool
from trio_httpws._config import BackendURL

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


#: What a scripted backend does with a request: answer with these events; send these raw bytes
#: and hang up; or (None) hang up without a word.
Answer = list[h11.Event] | bytes | None


async def serve_h11(
    stream: trio.abc.Stream,
    respond: Callable[[h11.Request, bytes], Answer | Awaitable[Answer]],
    *,
    max_requests: int = 100,
) -> None:
    """Answer up to ``max_requests`` requests on one connection with ``respond``'s answer."""
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
            answer = respond(request, body)
            if inspect.isawaitable(answer):
                answer = await answer
            if not isinstance(answer, list):
                await stream.send_all(answer or b"")
                return
            for out in answer:
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
