"""What we change in hypercorn's WebSocket stream: a Close frame on bad input; large messages in parts.

**A Close frame, not a bare TCP close.**

wsproto reports a frame it cannot accept (a text message that is not UTF-8: 1007; a protocol
error such as an unmasked client frame: 1002) as a ``CloseConnection`` event while the
connection is still OPEN; a real Close frame from the peer moves it to REMOTE_CLOSING first.
hypercorn 0.17 and 0.18 answer only the latter with a Close frame and then drop the TCP
connection either way, so the client sees 1006 and never learns why. RFC 6455 says to send a
Close frame with the code first (8.1 and 7.4.1 for invalid UTF-8: 1007).

It also answers the peer's Close after refusing a message over ``websocket_max_message_size``
(1009): hypercorn stopped reading the events there, so a client that sent a message well over
the limit waited for a TCP close that never came.

**Large text messages in parts, for the app that asks.** hypercorn gathers a message in a
``StringIO`` and hands the app one ``str``: for a 55 MB message (a 40 MiB tunnelled upload)
``getvalue()`` alone holds the event loop, every other socket, ~55 ms. An app whose
``websocket.accept`` carries ``PARTS_KEY: True`` gets a text message over ``PART_SIZE`` as
several ``websocket.receive`` events instead, each marked ``MORE_KEY: True`` but the last
(``MORE_KEY: False``); a message that fits in one part comes whole, without the key.
``websocket_max_message_size`` still bounds the whole message (1009). Parts go through
hypercorn's bounded app queue like messages, so a slow app still stops the socket's reads.
Apps that do not ask (any other app in the process) see no change.

``install()`` puts a ``WSStream`` subclass with these branches added where hypercorn's
protocols look the class up. It is process-wide (every hypercorn server in the process gets
it). Other hypercorn versions are left alone (no Close frame, messages always whole): the
override copies 0.17/0.18's event loop, which a later version may change.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import version
from typing import Any

from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

log = logging.getLogger("trio_httpws")

#: hypercorn versions whose ``WSStream._handle_events`` the override below reproduces.
FIXED_VERSIONS = ("0.17.", "0.18.")

#: In an app's ``websocket.accept``: True asks for large text messages in parts.
PARTS_KEY = "trio_httpws.message_parts"
#: In a ``websocket.receive`` carrying a part: whether more parts of the message follow.
MORE_KEY = "trio_httpws.more"
#: A text message is handed over whenever this many characters of it are buffered.
PART_SIZE = 1 << 20

_original = ws_stream.WSStream


class PatchedWSStream(ws_stream.WSStream):
    """hypercorn's WebSocket stream, with a Close frame on bad input and messages in parts."""

    #: The app asked for parts (PARTS_KEY in its accept).
    _in_parts = False
    #: Characters of the current message already handed over in parts.
    _handed = 0
    #: A message over the size limit was refused (1009): the rest of it is dropped.
    _refused = False

    async def app_send(self, message: Any) -> None:
        if message is not None and message.get("type") == "websocket.accept":
            self._in_parts = bool(message.get(PARTS_KEY))
        await super().app_send(message)

    async def _handle_events(self) -> None:
        # hypercorn 0.18's loop as it is, plus the branches marked "added".
        for event in self.connection.events():
            if isinstance(event, Message):
                if self._refused:  # added
                    continue
                try:
                    self.buffer.extend(event)
                    if self._handed + self.buffer.length > self.buffer.max_length:  # added
                        raise ws_stream.FrameTooLargeError
                except ws_stream.FrameTooLargeError:
                    log.warning(  # added
                        "closing a WebSocket with 1009: a message over %d characters",
                        self.buffer.max_length,
                    )
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    # Changed from "break": hypercorn then left the rest of the message and the
                    # peer's Close answer unread, so the TCP connection stayed open for good.
                    self._refused = True
                    self.buffer.clear()
                    continue

                assert self.app_put is not None
                if event.message_finished:
                    message = self.buffer.to_message()
                    if self._handed:  # added: the last part
                        message[MORE_KEY] = False
                        self._handed = 0
                    await self.app_put(message)
                    self.buffer.clear()
                elif (  # added
                    self._in_parts
                    and isinstance(event, TextMessage)
                    and self.buffer.length >= PART_SIZE
                ):
                    message = self.buffer.to_message()
                    message[MORE_KEY] = True
                    self._handed += self.buffer.length
                    self.buffer.clear()
                    await self.app_put(message)
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                elif self.connection.state == ConnectionState.OPEN:  # added
                    # Not the peer's Close but wsproto failing the connection on bad input.
                    log.warning(
                        "closing a WebSocket with %d: %s", event.code, event.reason or "bad frame"
                    )
                    await self._send_wsproto_event(
                        CloseConnection(code=event.code, reason=event.reason)
                    )
                await self.send(StreamClosed(stream_id=self.stream_id))


def install() -> bool:
    """Make hypercorn use :class:`PatchedWSStream`; True if it does (idempotent)."""
    if not version("hypercorn").startswith(FIXED_VERSIONS):
        return False
    ws_stream.WSStream = PatchedWSStream  # type: ignore[misc]
    # The protocol modules imported the class by name: replace it there too. h3 needs aioquic
    # and is imported only for QUIC; once ws_stream is patched it picks up the subclass itself.
    for name in ("hypercorn.protocol.h11", "hypercorn.protocol.h2", "hypercorn.protocol.h3"):
        module = sys.modules.get(name)
        if module is None and not name.endswith("h3"):
            module = importlib.import_module(name)
        if module is not None and getattr(module, "WSStream", None) is _original:
            module.WSStream = PatchedWSStream  # type: ignore[attr-defined]
    return True
