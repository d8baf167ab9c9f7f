"""A fix we carry for hypercorn: fail a WebSocket with a Close frame, not a bare TCP close.

wsproto reports a frame it cannot accept (a text message that is not UTF-8: 1007; a protocol
error such as an unmasked client frame: 1002) as a ``CloseConnection`` event while the
connection is still OPEN; a real Close frame from the peer moves it to REMOTE_CLOSING first.
hypercorn 0.17 and 0.18 answer only the latter with a Close frame and then drop the TCP
connection either way, so the client sees 1006 and never learns why. RFC 6455 says to send a
Close frame with the code first (8.1 and 7.4.1 for invalid UTF-8: 1007).

``install()`` puts a ``WSStream`` subclass with that one branch added where hypercorn's
protocols look the class up. It is process-wide (every hypercorn server in the process gets
it) and changes nothing but that case. Other hypercorn versions are left alone: the override
copies 0.17/0.18's event loop, which a later version may change.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import version

from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

log = logging.getLogger("trio_httpws")

#: hypercorn versions whose ``WSStream._handle_events`` the override below reproduces.
FIXED_VERSIONS = ("0.17.", "0.18.")

_original = ws_stream.WSStream


class FailWithCloseWSStream(ws_stream.WSStream):
    """hypercorn's WebSocket stream, sending a Close frame when wsproto fails the connection."""

    async def _handle_events(self) -> None:
        # hypercorn 0.18's loop as it is, plus the branch marked "added".
        for event in self.connection.events():
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except ws_stream.FrameTooLargeError:
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    break

                if event.message_finished:
                    assert self.app_put is not None
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
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
    """Make hypercorn use :class:`FailWithCloseWSStream`; True if it does (idempotent)."""
    if not version("hypercorn").startswith(FIXED_VERSIONS):
        return False
    ws_stream.WSStream = FailWithCloseWSStream  # type: ignore[misc]
    # The protocol modules imported the class by name: replace it there too. h3 needs aioquic
    # and is imported only for QUIC; once ws_stream is patched it picks up the subclass itself.
    for name in ("hypercorn.protocol.h11", "hypercorn.protocol.h2", "hypercorn.protocol.h3"):
        module = sys.modules.get(name)
        if module is None and not name.endswith("h3"):
            module = importlib.import_module(name)
        if module is not None and getattr(module, "WSStream", None) is _original:
            module.WSStream = FailWithCloseWSStream  # type: ignore[attr-defined]
    return True
