"""WebSocket compression (permessage-deflate) is ``Config.ws_compression``: off by default.

Browsers always offer permessage-deflate and hypercorn accepts every offer; our app declines it
unless the setting is on (see ``trio_httpws._compression``). Checked with raw handshakes, which
offer exactly what Chromium offers, and the first bit of the server's answer frame. How the
environment and the command line set it: tests/unit/test_ws_compression.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio_websocket

import trio_httpws
from trio_httpws._compression import install

from ..support._http import websocket_handshake
from ..support.fake_backend import FakeBackend
from ..support.proxies import running_proxy
from ..support.ws import connect

#: What Chromium sends on every WebSocket upgrade.
CHROMIUM_OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
RSV1 = 0x40
DIAGNOSE = "/http_over_websocket/diagnose"


@pytest.fixture(params=[False, True], ids=["off", "on"])
async def compression(
    request: pytest.FixtureRequest, fake_backend: FakeBackend, door: str
) -> AsyncIterator[tuple[bool, str]]:
    on: bool = request.param
    config = trio_httpws.Config(backend=fake_backend.url, ws_compression=on)
    async with running_proxy(config, door) as url:
        yield on, url


async def test_the_setting_decides_the_answer_to_the_offer(compression: tuple[bool, str]) -> None:
    on, url = compression
    response, first = await websocket_handshake(url, DIAGNOSE, [CHROMIUM_OFFER], then_send="hi")
    assert response.status == 101
    if on:
        assert response.all("sec-websocket-extensions") == [
            "permessage-deflate; client_max_window_bits=15"
        ]
        assert first is not None
        assert first & RSV1  # the answer frame is compressed
    else:
        assert response.all("sec-websocket-extensions") == []
        assert first == 0x81  # FIN, text, not compressed


async def test_the_setting_holds_for_relayed_websockets(
    compression: tuple[bool, str], door: str
) -> None:
    # Colab's kernel channels: a plain WebSocket relayed to the backend.
    on, url = compression
    response, _ = await websocket_handshake(url, "/headers-ws", [CHROMIUM_OFFER])
    assert response.status == 101
    if door == "hypercorn":
        # The proxy answers the browser's offer itself: the setting decides.
        assert bool(response.all("sec-websocket-extensions")) is on
        return
    # Spliced byte for byte: the setting decides whether the offer reaches the backend, whose
    # answer the browser gets (the fake backend declines compression, as Jupyter does).
    assert response.all("sec-websocket-extensions") == []
    async with connect(url, "/headers-ws", headers=[CHROMIUM_OFFER]) as ws:
        seen = json.loads(await ws.get_message())
    assert any(name.lower() == "sec-websocket-extensions" for name, _ in seen) is on


async def test_other_asgi_apps_keep_hypercorns_default() -> None:
    """The hook changes nothing for an app that does not ask (hypercorn accepts the offer)."""
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve

    install()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await receive()

    hc = HypercornConfig()
    hc.bind = ["127.0.0.1:0"]
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, hc)  # type: ignore[arg-type]
        response, _ = await websocket_handshake(binds[0], "/", [CHROMIUM_OFFER])
        nursery.cancel_scope.cancel()
    assert response.status == 101
    assert response.all("sec-websocket-extensions") != []


async def test_handler_never_negotiates_compression(fake_backend: FakeBackend) -> None:
    """trio-websocket's server accepts no extension, whatever the setting."""
    config = trio_httpws.Config(backend=fake_backend.url, ws_compression=True)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            trio_websocket.serve_websocket, trio_httpws.handler(config), "127.0.0.1", 0, None
        )
        url = f"http://127.0.0.1:{server.port}"
        response, first = await websocket_handshake(url, DIAGNOSE, [CHROMIUM_OFFER], "hi")
        nursery.cancel_scope.cancel()
    assert response.status == 101
    assert response.all("sec-websocket-extensions") == []
    assert first == 0x81
