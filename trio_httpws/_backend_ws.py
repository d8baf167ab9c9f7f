"""The relay's WebSocket client to the backend: wsproto over a stream from the backend pool.

No reader task and no queue: the relay's backend pump reads (``receive_message``) only when it
wants the next message, so a slow client pushes back on the backend through TCP, and a message
costs no hop between tasks. Any task may send, under a lock taken before the frame is built, so
frames go out in the order wsproto numbered them and the reader can answer a ping while the
other pump is forwarding.

A message from the client may be sent a part at a time (``send(part, finished=False)``): a huge
message that hypercorn hands over in parts is then masked and written as WebSocket fragments, a
part per step, instead of being joined and masked whole on the event loop (491 ms for 55 MB
here, during which every other socket of the process waits).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError

#: Close code for a connection that ended without a Close frame (receive-only, RFC 6455 7.4.1).
ABNORMAL_CLOSURE = 1006
MESSAGE_TOO_BIG = 1009

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class HandshakeRejected(Exception):
    """The backend answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"backend answered the upgrade with HTTP {status}")
        self.status = status


class HandshakeFailed(Exception):
    """The upgrade failed otherwise: the connection broke, or the answer was not valid."""


class BackendClosed(Exception):
    """The backend WebSocket is closed (or broke); ``code`` is what to tell the client."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"backend WebSocket closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class BackendWebSocket:
    """A client WebSocket on ``stream``; call ``handshake`` first, ``aclose`` last."""

    def __init__(
        self, stream: trio.abc.Stream, *, max_message_size: int, read_size: int = 256 * 1024
    ) -> None:
        self._stream = stream
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._max_message_size = max_message_size
        self._read_size = read_size
        self._send_lock = trio.Lock()
        self._events: deque[Event] = deque()
        #: Set once the connection is over; every later call raises it again.
        self._closed: BackendClosed | None = None
        #: Our close frame went out: what the backend still sends before its answer is dropped.
        self._close_sent = False
        #: The message being gathered, kept here so that a cancelled receive loses nothing.
        self._parts: list[str | bytes | bytearray] = []
        self._size = 0
        self.subprotocol: str | None = None

    # -- handshake ---------------------------------------------------------------------------

    async def handshake(
        self,
        host: str,
        target: str,
        subprotocols: Sequence[str],
        extra_headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        """Upgrade; raises ``HandshakeRejected`` or ``HandshakeFailed``. No deadline of its own."""
        request = Request(
            host=host,
            target=target,
            subprotocols=list(subprotocols),
            extra_headers=list(extra_headers),
        )
        try:
            await self._stream.send_all(self._ws.send(request))
            while True:
                for event in self._ws.events():
                    if isinstance(event, AcceptConnection):
                        self.subprotocol = event.subprotocol
                        # Frames that came in the same read as the 101 are parsed now, or they
                        # would wait for the next read.
                        self._events.extend(self._ws.events())
                        return
                    if isinstance(event, RejectConnection):
                        raise HandshakeRejected(event.status_code)
                data = await self._stream.receive_some(self._read_size)
                if not data:
                    raise HandshakeFailed("the backend closed the connection during the upgrade")
                self._ws.receive_data(bytes(data))
        except _STREAM_ERRORS as exc:
            raise HandshakeFailed(f"connection lost during the upgrade: {exc!r}") from exc
        except ProtocolError as exc:
            raise HandshakeFailed(f"invalid upgrade answer: {exc}") from exc

    # -- messages ----------------------------------------------------------------------------

    async def send(self, message: str | bytes, finished: bool = True) -> None:
        """Send a message, or a part of one (``finished=False``: more parts follow).

        Raises ``BackendClosed`` once the connection is closing or closed.
        """
        if isinstance(message, str):
            await self._send_event(TextMessage(data=message, message_finished=finished))
        else:
            await self._send_event(BytesMessage(data=message, message_finished=finished))

    async def receive_message(self) -> str | bytes:
        """The next whole message; pings and the backend's close are answered on the way.

        Raises ``BackendClosed`` once the backend closed (after we answered), the connection
        broke, a frame broke the protocol (with its code, after our close), or a message grew
        past ``max_message_size`` (1009, after our close). Once we sent our own close, messages
        still on their way are dropped: this waits for the backend's answer.
        """
        while True:
            while self._events:
                event = self._events.popleft()
                kind = type(event)
                if kind is TextMessage or kind is BytesMessage:
                    assert isinstance(event, (TextMessage, BytesMessage))
                    # Not wsproto's state: it is already past a Close further on in the same
                    # read, and the messages before that Close are still the backend's to say.
                    if self._close_sent:
                        continue
                    self._size += len(event.data)
                    if self._size > self._max_message_size:
                        reason = f"message over {self._max_message_size} bytes"
                        await self.start_close(MESSAGE_TOO_BIG, reason)
                        self._closed = BackendClosed(MESSAGE_TOO_BIG, reason)
                        raise self._closed
                    self._parts.append(event.data)
                    if event.message_finished:
                        message = _joined(self._parts)
                        self._parts, self._size = [], 0
                        return message
                elif kind is Ping:
                    assert isinstance(event, Ping)
                    await self._send_event(event.response(), quiet=True)
                elif kind is CloseConnection:
                    assert isinstance(event, CloseConnection)
                    await self._closed_by_backend(event)
            if self._closed is not None:
                raise self._closed
            try:
                data = await self._stream.receive_some(self._read_size)
            except _STREAM_ERRORS:
                data = b""
            # b"" is the end of the stream: wsproto reports it as an abnormal closure.
            self._ws.receive_data(bytes(data) if data else None)
            self._events.extend(self._ws.events())

    async def _closed_by_backend(self, event: CloseConnection) -> None:
        # REMOTE_CLOSING: the backend began and waits for our answer. OPEN: wsproto refused a
        # frame and reports the code to close with; we send the close. LOCAL_CLOSING became
        # CLOSED by this event (our close was answered), CLOSED also when the stream ended: then
        # there is nothing to send, and _send_event sends nothing.
        await self._send_event(event.response(), quiet=True)
        code = int(event.code) if event.code is not None else ABNORMAL_CLOSURE
        # The end of the stream comes with no reason: say what happened.
        reason = event.reason or ("backend connection lost" if code == ABNORMAL_CLOSURE else "")
        self._closed = BackendClosed(code, reason)

    async def start_close(self, code: int = 1000, reason: str | None = None) -> None:
        """Send our close frame, if the connection is still open; ``receive_message`` reads the
        answer. Never raises: a connection that broke has nothing left to close politely."""
        await self._send_event(CloseConnection(code=code, reason=reason), quiet=True)

    async def aclose(self) -> None:
        """Close the stream (shielded: a cancelled relay must still free its socket).

        A connection nobody closed politely (the relay was cancelled) gets a going-away close
        frame first if the socket is free at once; its answer is not awaited.
        """
        with trio.CancelScope(shield=True):
            if self._closed is None and not self._send_lock.locked():
                with trio.move_on_after(1):
                    await self.start_close(1001, "proxy closing")
            if self._closed is None:
                self._closed = BackendClosed(ABNORMAL_CLOSURE, "closed by the proxy")
            await trio.aclose_forcefully(self._stream)

    def _may_send(self, event: Event) -> bool:
        state = self._ws.state
        if isinstance(event, CloseConnection):
            return state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)
        return state is ConnectionState.OPEN

    async def _send_event(self, event: Event, *, quiet: bool = False) -> None:
        """Frame and write ``event``. ``quiet``: a pong or close that can no longer be sent
        (the connection closed or began closing meanwhile) is dropped; a failed write is only
        recorded. Otherwise raises ``BackendClosed``."""
        # The lock is taken before wsproto builds the frame: frames reach the wire in the order
        # they were built (fragments of one message stay in order, a pong goes between them).
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            # Judged with the lock held: another task's close may have gone out while we waited.
            if self._closed is not None or not self._may_send(event):
                if quiet:
                    return
                raise self._closed or BackendClosed(ABNORMAL_CLOSURE, "closing")
            data = self._ws.send(event)
            if isinstance(event, CloseConnection):
                self._close_sent = True
            try:
                await self._stream.send_all(data)
            except _STREAM_ERRORS as exc:
                self._closed = BackendClosed(ABNORMAL_CLOSURE, "backend connection lost")
                if not quiet:
                    raise self._closed from exc
            except BaseException:
                # Cancelled in the middle of a frame: what is on the wire is unknown, so the
                # connection cannot carry another frame.
                self._closed = BackendClosed(ABNORMAL_CLOSURE, "a frame was cut short")
                raise
        finally:
            self._send_lock.release()


def _joined(parts: list[str | bytes | bytearray]) -> str | bytes:
    if len(parts) == 1:
        part = parts[0]
        return part if isinstance(part, str) else bytes(part)
    if isinstance(parts[0], str):
        return "".join(parts)  # type: ignore[arg-type]  # a message's parts share one type
    return b"".join(parts)  # type: ignore[arg-type]
