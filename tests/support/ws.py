"""The tunnel from a test's side: a WebSocket to a proxy, request messages, response frames; and
a bare wsproto client for what trio-websocket will not send."""

from __future__ import annotations

import base64
import collections
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket
import wsproto
import wsproto.events as wse


def ws_url(http_url: str, path: str) -> str:
    return http_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + path


@asynccontextmanager
async def connect(
    base: str,
    path: str = "/http_over_websocket",
    *,
    headers: list[tuple[str, str]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    extra = [(k.encode(), v.encode()) for k, v in (headers or [])]
    async with trio_websocket.open_websocket_url(
        ws_url(base, path), extra_headers=extra, max_message_size=2**26, **kwargs
    ) as ws:
        yield ws


def request_json(message_id: Any, method: str, path: str, **fields: Any) -> str:
    return json.dumps({"message_id": message_id, "method": method, "path": path, **fields})


async def read_frame(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str), "the server must send text frames"
    frame: dict[str, Any] = json.loads(message)
    return frame


@dataclass
class Response:
    frames: list[dict[str, Any]]

    @property
    def first(self) -> dict[str, Any]:
        return self.frames[0]

    @property
    def status(self) -> int:
        return int(self.first["status"])

    @property
    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = self.first.get("headers", {})
        return headers

    @property
    def body(self) -> bytes:
        return b"".join(base64.b64decode(f["data"]) for f in self.frames if "data" in f)


async def read_response(ws: trio_websocket.WebSocketConnection, message_id: Any) -> Response:
    """Frames of one request until done; fails on a frame of another request."""
    frames = []
    while True:
        frame = await read_frame(ws)
        assert frame.get("message_id") == message_id, frame
        frames.append(frame)
        if frame["done"]:
            return Response(frames)


async def fetch(
    ws: trio_websocket.WebSocketConnection, message_id: Any, method: str, path: str, **fields: Any
) -> Response:
    await ws.send_message(request_json(message_id, method, path, **fields))
    return await read_response(ws, message_id)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class RawWebSocket:
    """A bare wsproto client, for what trio-websocket will not do: any Host header, raw frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self._events: collections.deque[wse.Event] = collections.deque()

    async def next_event(self) -> wse.Event:
        while not self._events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    async def send(self, event: wse.Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def handshake(self, host: str, target: str) -> int:
        """The upgrade's HTTP status: 101 when accepted."""
        await self.send(wse.Request(host=host, target=target))
        event = await self.next_event()
        if isinstance(event, wse.AcceptConnection):
            return 101
        assert isinstance(event, wse.RejectConnection), event
        return event.status_code

    async def fetch(self, message_id: str, method: str, path: str) -> dict[str, Any]:
        """One request whose response fits in one frame."""
        await self.send(wse.TextMessage(request_json(message_id, method, path)))
        text = ""
        while True:
            event = await self.next_event()
            assert isinstance(event, wse.TextMessage), event
            text += event.data
            if event.message_finished:
                frame: dict[str, Any] = json.loads(text)
                return frame


@asynccontextmanager
async def raw_websocket(url: str) -> AsyncIterator[RawWebSocket]:
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
    async with stream:
        yield RawWebSocket(stream)
