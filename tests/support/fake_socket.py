"""A client socket without a network, for session and relay tests that script time.

Sessions and relays talk to the client only through ``ClientSocket``/``PendingSocket``
(``trio_httpws._socket``); these stand-ins are fed from a memory channel and record what is sent.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from trio_httpws._errors import ClientDisconnected
from trio_httpws._socket import Upgrade


class FakeSocket:
    """A client socket: messages from ``inbox``; frames sent are kept; ``paused`` stops sending."""

    def __init__(self, paused: bool = False) -> None:
        self.inbox, self._inbox_out = trio.open_memory_channel[str](1000)
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.paused = paused
        self.got_frame = trio.Event()

    async def receive(self) -> str:
        try:
            return await self._inbox_out.receive()
        except trio.EndOfChannel:
            raise ClientDisconnected(1000) from None

    async def receive_part(self) -> tuple[str, bool]:
        return await self.receive(), False

    async def send(self, message: str | bytes) -> None:
        if self.paused:
            await trio.sleep_forever()
        self.sent.append(json.loads(message))
        self.got_frame.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
        self.inbox.close()

    def finals(self) -> dict[str, dict[str, Any]]:
        return {f["message_id"]: f for f in self.sent if f.get("done")}

    async def wait_finals(self, count: int) -> None:
        while len(self.finals()) < count:
            self.got_frame = trio.Event()
            await self.got_frame.wait()


class FakePending:
    def __init__(self, sock: FakeSocket) -> None:
        self.sock = sock
        self.rejected: tuple[int, str] | None = None

    async def accept(
        self, subprotocol: str | None = None, *, message_parts: bool = False
    ) -> FakeSocket:
        return self.sock

    async def reject(self, status: int, body: str = "") -> None:
        self.rejected = (status, body)

    async def wait_gone(self) -> None:
        await trio.sleep_forever()  # the fake client never leaves before an answer


#: The upgrade a session on a fake socket was opened with.
UPGRADE = Upgrade("ws", "/http_over_websocket", "", [(b"host", b"localhost")])
