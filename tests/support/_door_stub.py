"""A stand-in for the proxy's own door, WebSocket upgrades only: enough to serve the tunnel,
``/diagnose`` and the relays through ``StreamPendingSocket`` on real sockets.

It accepts on 127.0.0.1, reads the request head with h11 and hands the upgrade to the proxy
(or to a test's own handler), then calls ``finish()`` and closes the stream, as the real door
does. Anything that is not a WebSocket upgrade gets a 400.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import h11
import trio

import trio_httpws
from trio_httpws._socket import PendingSocket, Upgrade
from trio_httpws._wsserver import StreamPendingSocket

Handler = Callable[[PendingSocket, Upgrade], Awaitable[None]]


async def read_upgrade(stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
    """The request head and what came past it; None if the client left first."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            return event, conn.trailing_data[0]
        else:
            return None


def upgrade_of(request: h11.Request, stream: trio.SocketStream) -> Upgrade:
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    return Upgrade(
        scheme="ws",
        raw_path=path,
        query=query,
        headers=list(request.headers),
        local_address=str(stream.socket.getsockname()[0]),
    )


async def serve_connection(
    stream: trio.SocketStream,
    handler: Handler,
    config: trio_httpws.Config,
    close_timeout: float,
) -> None:
    async with stream:
        head = await read_upgrade(stream)
        if head is None:
            return
        request, extra = head
        if (dict(request.headers).get(b"upgrade") or b"").lower() != b"websocket":
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            return
        pending = StreamPendingSocket(
            stream,
            request,
            extra,
            max_message_size=config.max_message_size,
            compression=config.ws_compression,
            close_timeout=close_timeout,
        )
        await handler(pending, upgrade_of(request, stream))
        await pending.finish()


@asynccontextmanager
async def running_stub_door(
    config: trio_httpws.Config,
    handler: Handler | None = None,
    *,
    close_timeout: float = 5.0,
) -> AsyncIterator[str]:
    """Serve ``config``'s WebSockets (or ``handler``'s) on 127.0.0.1; yields
    ``http://127.0.0.1:PORT``."""
    proxy = trio_httpws.Proxy(config)
    try:
        async with trio.open_nursery() as nursery:
            serve = partial(
                serve_connection,
                handler=handler or proxy.handle_websocket,
                config=config,
                close_timeout=close_timeout,
            )
            listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            yield f"http://127.0.0.1:{port}"
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await proxy.aclose()
