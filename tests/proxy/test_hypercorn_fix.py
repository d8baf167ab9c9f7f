"""``_hypercorn_fix``: where it puts the WSStream subclass, when it stays away, messages in parts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import hypercorn.protocol.h2
import hypercorn.protocol.h11
import pytest
import trio
import trio_websocket
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ws_stream
from hypercorn.trio import serve as hypercorn_serve

import trio_httpws
from trio_httpws import _hypercorn_fix
from trio_httpws._hypercorn_fix import PatchedWSStream


def test_building_the_app_installs_it_where_hypercorn_looks() -> None:
    trio_httpws.create_app(trio_httpws.Config())
    for module in (ws_stream, hypercorn.protocol.h11, hypercorn.protocol.h2):
        assert module.WSStream is PatchedWSStream  # type: ignore[attr-defined]
    assert _hypercorn_fix.install() is True  # again: nothing changes
    assert hypercorn.protocol.h11.WSStream is PatchedWSStream  # type: ignore[attr-defined]


def test_other_hypercorn_versions_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (ws_stream, hypercorn.protocol.h11, hypercorn.protocol.h2):
        monkeypatch.setattr(module, "WSStream", _hypercorn_fix._original)
    monkeypatch.setattr(_hypercorn_fix, "version", lambda name: "0.19.0")
    assert _hypercorn_fix.install() is False
    assert hypercorn.protocol.h11.WSStream is _hypercorn_fix._original  # type: ignore[attr-defined]


# -- large text messages in parts, for the app that asks ------------------------------------------


class RecordingApp:
    """An ASGI app that accepts (asking for parts or not) and records every receive event."""

    def __init__(self, parts: bool) -> None:
        self.parts = parts
        self.events: list[dict[str, Any]] = []
        self.disconnected = trio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()  # websocket.connect
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if self.parts:
            accept[_hypercorn_fix.PARTS_KEY] = True
        await send(accept)
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                self.disconnected.set()
                return
            self.events.append(event)
            if not event.get(_hypercorn_fix.MORE_KEY):
                await send({"type": "websocket.send", "text": "got it"})


@asynccontextmanager
async def hypercorn_with(app: RecordingApp, max_size: int = 1 << 26) -> AsyncIterator[str]:
    _hypercorn_fix.install()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.websocket_max_message_size = max_size
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config))
        yield binds[0].replace("http://", "ws://")
        nursery.cancel_scope.cancel()


async def test_an_app_that_asks_gets_a_large_text_message_in_parts() -> None:
    app = RecordingApp(parts=True)
    large = "".join(chr(0x41 + i % 26) for i in range(100)) * 35_000 + "\u00e9"  # 3.5 MB
    with trio.fail_after(30):
        async with hypercorn_with(app) as url, trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message("small")
            assert await ws.get_message() == "got it"
            await ws.send_message(large)
            assert await ws.get_message() == "got it"
    small, *parts = app.events
    assert small == {"type": "websocket.receive", "text": "small", "bytes": None}
    assert len(parts) >= 3
    assert [p[_hypercorn_fix.MORE_KEY] for p in parts] == [True] * (len(parts) - 1) + [False]
    assert all(len(p["text"]) >= _hypercorn_fix.PART_SIZE for p in parts[:-1])
    assert "".join(p["text"] for p in parts) == large


async def test_an_app_that_does_not_ask_gets_whole_messages() -> None:
    app = RecordingApp(parts=False)
    large = "x" * (3 * _hypercorn_fix.PART_SIZE)
    with trio.fail_after(30):
        async with hypercorn_with(app) as url, trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message(large)
            assert await ws.get_message() == "got it"
    assert app.events == [{"type": "websocket.receive", "text": large, "bytes": None}]


@pytest.mark.parametrize("parts", [True, False])
async def test_a_message_over_the_limit_closes_1009_and_the_connection_ends(parts: bool) -> None:
    app = RecordingApp(parts=parts)
    limit = 2 * _hypercorn_fix.PART_SIZE + 10
    with trio.fail_after(20):
        async with hypercorn_with(app, max_size=limit) as url:
            async with trio_websocket.open_websocket_url(url) as ws:
                # Well over the limit: hypercorn alone left the rest of it and the client's Close
                # unread, and this block's closing handshake never ended.
                await ws.send_message("x" * (2 * limit))
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            await app.disconnected.wait()
    assert info.value.reason is not None
    assert info.value.reason.code == 1009
    # With parts the limit counts the parts handed over too: some came, never a last one.
    more = [e.get(_hypercorn_fix.MORE_KEY) for e in app.events]
    assert (more and all(more)) if parts else not more
