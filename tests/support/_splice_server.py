"""A stand-in door for the splice tests: a trio TCP server that reads one WebSocket upgrade head
with h11 and hands the connection to ``splice_websocket``, as the proxy's own door will.

It checks what the door checks before the relay (GET, ``Upgrade: websocket``,
``Connection: upgrade``, version 13, a valid key; else 400) and builds the backend's headers the
door's way; nothing else (no Host or Origin policy). Each finished splice's result is sent on
``SpliceServer.results``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import trio

from trio_httpws._backend import BackendPool
from trio_httpws._config import Config
from trio_httpws._cors import OriginClass, backend_request_headers
from trio_httpws._frames import valid_key
from trio_httpws._protocol import first_header, strip_hop_by_hop
from trio_httpws._splice import SpliceResult, splice_websocket

HEAD_LIMIT = 64 * 1024


@dataclass
class SpliceServer:
    port: int
    config: Config
    pool: BackendPool
    shutdown: trio.Event
    results: trio.MemoryReceiveChannel[SpliceResult]
    #: The accepted client streams, in order (a test may look at their sockets).
    client_streams: list[trio.abc.Stream] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def result(self, within: float = 10.0) -> SpliceResult:
        with trio.fail_after(within):
            return await self.results.receive()


def _tokens(request: h11.Request, name: bytes) -> list[bytes]:
    return [
        token.strip().lower()
        for n, v in request.headers
        if n == name
        for token in v.split(b",")
        if token.strip()
    ]


async def read_upgrade(stream: trio.abc.Stream) -> tuple[h11.Request, bytes] | None:
    """The request head and the bytes read past it; None when the client left first."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return None
            conn.receive_data(bytes(data))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            assert request is not None
            return request, conn.trailing_data[0]
        else:
            return None


def is_websocket_upgrade(request: h11.Request) -> bool:
    key = first_header(request.headers, b"sec-websocket-key")
    return (
        request.method == b"GET"
        and b"websocket" in _tokens(request, b"upgrade")
        and b"upgrade" in _tokens(request, b"connection")
        and first_header(request.headers, b"sec-websocket-version") == "13"
        and key is not None
        and valid_key(key.encode("latin-1"))
    )


async def splice_connection(
    stream: trio.abc.Stream,
    pool: BackendPool,
    config: Config,
    shutdown: trio.Event,
    *,
    close_timeout: float = 5.0,
) -> SpliceResult | None:
    """Serve one connection as the door would: the splice's result, or None if it never ran."""
    read = await read_upgrade(stream)
    if read is None:
        return None
    request, extra = read
    if not is_websocket_upgrade(request):
        await stream.send_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        return None
    host = first_header(request.headers, b"host") or ""
    headers = backend_request_headers(
        strip_hop_by_hop(list(request.headers.raw_items())), OriginClass.NONE, "http", host
    )
    return await splice_websocket(
        stream,
        request,
        extra,
        request.target.decode("ascii"),
        headers,
        pool,
        config,
        shutdown,
        close_timeout=close_timeout,
    )


@asynccontextmanager
async def splice_server(
    backend: str,
    *,
    config: Config | None = None,
    pool: BackendPool | None = None,
    close_timeout: float = 5.0,
) -> AsyncIterator[SpliceServer]:
    """Serve on 127.0.0.1 (a free port) in front of ``backend``."""
    config = config or Config(backend=backend)
    own_pool = pool is None
    pool = pool or BackendPool(config.backend_url, connect_timeout=config.connect_timeout)
    send, receive = trio.open_memory_channel[SpliceResult](math.inf)

    async def handle(server: SpliceServer, stream: trio.SocketStream) -> None:
        server.client_streams.append(stream)
        try:
            result = await splice_connection(
                stream, server.pool, config, server.shutdown, close_timeout=close_timeout
            )
            if result is not None:
                send.send_nowait(result)
        finally:
            await trio.aclose_forcefully(stream)

    try:
        async with trio.open_nursery() as nursery:
            server = SpliceServer(0, config, pool, trio.Event(), receive)
            listeners = await nursery.start(
                partial(trio.serve_tcp, partial(handle, server), 0, host="127.0.0.1")
            )
            server.port = listeners[0].socket.getsockname()[1]
            yield server
            nursery.cancel_scope.cancel()
    finally:
        if own_pool:
            await pool.aclose()
