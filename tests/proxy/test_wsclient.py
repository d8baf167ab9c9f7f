"""The relay's WebSocket client to the backend (``_wsclient``) through a door and a real socket:
a large message from the client reaches the backend as fragments, byte-exact.

What a real Jupyter does not do on demand is scripted in tests/unit/test_wsclient.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio
import wsproto
import wsproto.events as wse

import trio_httpws

from ..support.proxies import running_proxy
from ..support.ws import connect

MiB = 1024 * 1024


async def _fragment_recording_backend(
    received: list[tuple[int, int]], stream: trio.SocketStream
) -> None:
    """Accepts one WebSocket; per message, records (frames, length) and echoes it whole."""
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    parts: list[str] = []
    frames = 0
    async with stream:
        while True:
            data = await stream.receive_some(256 * 1024)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wse.Request):
                    await stream.send_all(ws.send(wse.AcceptConnection()))
                elif isinstance(event, wse.TextMessage):
                    parts.append(event.data)
                    frames += event.frame_finished
                    if event.message_finished:
                        message = "".join(parts)
                        received.append((frames, len(message)))
                        parts, frames = [], 0
                        await stream.send_all(ws.send(wse.TextMessage(data=message)))
                elif isinstance(event, wse.CloseConnection):
                    await stream.send_all(ws.send(event.response()))
                    return


async def test_a_large_message_reaches_the_backend_in_fragments_byte_exact(door: str) -> None:
    """Through ``serve()`` (hypercorn hands the message over in parts) and a plain relay."""
    received: list[tuple[int, int]] = []
    handler: Callable[[trio.SocketStream], Awaitable[None]] = partial(
        _fragment_recording_backend, received
    )
    message = "".join(chr(0x41 + i % 26) for i in range(5 * MiB)) + "\u00e9\u20ac"
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        config = trio_httpws.Config(backend=f"http://127.0.0.1:{port}")
        with trio.fail_after(30):
            async with running_proxy(config, door) as url, connect(url, "/kernel-ws") as ws:
                await ws.send_message(message)
                assert await ws.get_message() == message
                await ws.send_message("small")
                assert await ws.get_message() == "small"
        nursery.cancel_scope.cancel()
    (big_frames, big_length), (small_frames, _) = received
    assert big_length == len(message)
    if door == "hypercorn":
        assert big_frames > 1  # fragments, a part at a time
    else:
        assert big_frames == 1  # spliced: the client's one frame, untouched
    assert small_frames == 1
