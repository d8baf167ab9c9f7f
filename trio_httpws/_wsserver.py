"""The server side of a client WebSocket on a stream the proxy's own door accepted.

The door reads the upgrade request head with h11 and checks that it is a valid WebSocket
upgrade; :class:`StreamPendingSocket` answers it (101 or an HTTP refusal) and frames the
connection with wsproto, implementing the ``PendingSocket``/``ClientSocket`` seam
(``_socket``) with what the hypercorn door gives (``_hypercorn_fix``, ``_compression``):

- a frame wsproto refuses gets a Close frame with its code (1007 for a text message that is not
  UTF-8, 1002 for a protocol error such as an unmasked frame), a message over
  ``max_message_size`` gets 1009;
- a socket accepted with ``message_parts`` hands a large text message over in parts of at least
  ``PART_SIZE`` characters, so a 55 MB upload never sits whole on the event loop;
- permessage-deflate only when the setting allows it and the client offered it.

No task of its own: the handler's receiving task reads (and answers pings and the client's
Close), any task sends. A lock taken before a frame is built keeps frames whole and in order,
pongs included. A small message costs one ``receive_some`` or one ``send_all``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError, generate_accept_token

from ._backend import socket_stream_of
from ._errors import ClientDisconnected
from ._frames import BINARY_OPCODE, TEXT_OPCODE, frame_header
from ._hypercorn_fix import PART_SIZE
from ._socket import ClientSocket

log = logging.getLogger("trio_httpws")

#: What one read asks of the stream: a 55 MB upload in ~220 reads, a small message in one.
READ_SIZE = 256 * 1024
#: The ``Server`` header of the answers written here.
SERVER_HEADER = b"trio-httpws"
MESSAGE_TOO_BIG = 1009
NORMAL_CLOSURE = 1000

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_CLOSED = ConnectionState.CLOSED


#: The event a frame built by ``send`` stands for, for ``_send_event``'s checks.
_WHOLE_MESSAGE = BytesMessage(data=b"")


class StreamClientSocket:
    """An accepted client WebSocket on a stream (``ClientSocket``). Built by ``accept``."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: Connection,
        *,
        max_message_size: int,
        message_parts: bool,
        close_timeout: float,
        plain_frames: bool = True,
        on_too_big: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream
        self._on_too_big = on_too_big
        self._ws = connection
        self._max_message_size = max_message_size
        self._message_parts = message_parts
        self._close_timeout = close_timeout
        self._send_lock = trio.Lock()
        #: No extension on the frames: whole messages are framed here, not by wsproto.
        self._plain_frames = plain_frames
        # Kept here, not in the receiving call: a receive cut short by cancellation loses nothing.
        self._events: deque[Event] = deque(connection.events())  # frames sent behind the upgrade
        self._parts: list[str | bytes | bytearray] = []
        #: Characters (bytes) of the current message so far, parts handed over included.
        self._size = 0
        #: Characters of the current message already handed over in parts.
        self._handed = 0
        #: Set once the socket is closed for the handler: (code, reason) of every later raise.
        self._error: tuple[int | None, str] | None = None
        #: The connection needs no more reading: the closing handshake is over, or it broke.
        self._done = False
        #: Our Close went out: messages still on their way are dropped, reads end at the deadline.
        self._close_sent = False
        self._close_deadline: float | None = None
        #: wsproto refused a frame: what follows cannot be parsed, only drained.
        self._unparsable = False
        #: A write failed or was cut short: no frame may follow.
        self._write_broken = False

    # -- receiving (one task) ----------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next whole message; raises ``ClientDisconnected`` once the socket is closed."""
        message, _ = await self._next(False)
        return message

    async def receive_part(self) -> tuple[str | bytes, bool]:
        """The next message, or part of a large text message if accepted with message_parts.

        Do not mix with ``receive`` within one message.
        """
        return await self._next(self._message_parts)

    async def _next(self, in_parts: bool) -> tuple[str | bytes, bool]:
        events = self._events
        while True:
            while events:
                event = events.popleft()
                kind = type(event)
                if kind is TextMessage or kind is BytesMessage:
                    assert isinstance(event, (TextMessage, BytesMessage))
                    if self._close_sent:
                        continue  # the client's answer to our Close is all we still wait for
                    data = event.data
                    size = self._size + len(data)
                    if size > self._max_message_size:
                        await self._refuse_too_big(kind is TextMessage)
                        break
                    if event.message_finished:
                        self._size = self._handed = 0
                        if not self._parts:
                            return (bytes(data) if isinstance(data, bytearray) else data), False
                        self._parts.append(data)
                        message = _joined(self._parts)
                        self._parts = []
                        return message, False
                    self._parts.append(data)
                    self._size = size
                    if in_parts and kind is TextMessage and size - self._handed >= PART_SIZE:
                        part = "".join(self._parts)  # type: ignore[arg-type]  # text parts
                        self._parts = []
                        self._handed = size
                        return part, True
                elif kind is Ping:
                    assert isinstance(event, Ping)
                    await self._send_event(event.response(), quiet=True)
                elif kind is CloseConnection:
                    assert isinstance(event, CloseConnection)
                    await self._on_close(event)
                # A Pong needs nothing.
            if self._error is not None:
                raise ClientDisconnected(*self._error)
            await self._read()

    async def _read(self) -> None:
        """One read from the stream, parsed into ``_events``; the end of the stream, a broken
        connection, or no answer to our Close by its deadline end the connection."""
        deadline = self._close_deadline
        try:
            if deadline is None:
                data = await self._stream.receive_some(READ_SIZE)
            else:
                data = b""
                with trio.move_on_at(deadline) as scope:
                    data = await self._stream.receive_some(READ_SIZE)
                if scope.cancelled_caught:
                    self._end(None, "no answer to our close")
                    return
        except _STREAM_ERRORS:
            data = b""
        if not data:
            self._end(None, "connection lost")
            return
        if self._unparsable:
            return
        try:
            self._ws.receive_data(bytes(data))
        except LocalProtocolError:  # pragma: no cover - CLOSED always ends the reading first
            self._end(None, "data after the closing handshake")
            return
        self._events.extend(self._ws.events())

    async def _on_close(self, event: CloseConnection) -> None:
        # Judged by wsproto's state now: our own sends move it only from OPEN to LOCAL_CLOSING
        # and from REMOTE_CLOSING to CLOSED, which keeps the three cases apart.
        state = self._ws.state
        code = int(event.code)
        reason = event.reason or ""
        if state is _REMOTE_CLOSING:  # the client began closing: answer
            await self._send_event(event.response(), quiet=True)
            self._end(code, reason)
        elif state is _CLOSED:  # the client answered our Close (or we answered its own)
            self._end(code, reason)
        else:
            # Not the client's Close but wsproto failing the connection on bad input, with the
            # code to close with (RFC 6455 7.4.1: 1007 for text that is not UTF-8, 1002 ...).
            log.warning("closing a WebSocket with %d: %s", code, reason or "bad frame")
            self._unparsable = True
            self._events.clear()
            self._parts = []
            await self._send_event(CloseConnection(code=code, reason=event.reason), quiet=True)
            if self._error is None:
                self._error = (code, reason)

    async def _refuse_too_big(self, text: bool) -> None:
        unit = "characters" if text else "bytes"
        log.warning(
            "closing a WebSocket with 1009: a message over %d %s", self._max_message_size, unit
        )
        reason = f"message over {self._max_message_size} {unit}"
        if self._on_too_big is not None:
            self._on_too_big()
        self._parts = []
        self._size = self._handed = 0
        await self._send_event(CloseConnection(code=MESSAGE_TOO_BIG, reason=reason), quiet=True)
        if self._error is None:
            self._error = (MESSAGE_TOO_BIG, reason)

    def _end(self, code: int | None, reason: str) -> None:
        self._done = True
        if self._error is None:
            self._error = (code, reason)

    # -- sending (any task) ------------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send one message; waits while the client is slow. Raises ``ClientDisconnected``
        once the socket is closing or closed."""
        if self._plain_frames:
            # A whole message needs no state of wsproto's, and wsproto copies a payload four
            # times on the way (a third of a tunnelled download's CPU): one copy here.
            if isinstance(message, str):
                data = message.encode()
                frame = frame_header(TEXT_OPCODE, len(data)) + data
            else:
                frame = frame_header(BINARY_OPCODE, len(message)) + message
            await self._send_event(_WHOLE_MESSAGE, frame)
        elif isinstance(message, str):
            await self._send_event(TextMessage(data=message))
        else:
            await self._send_event(BytesMessage(data=message))

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Send our Close (once; nothing if the socket is closed). The receiving task then
        reads until the client answers, ``close_timeout`` at most (a read already waiting
        when the Close goes out is bounded by whoever cancels it, or by ``finish``)."""
        await self._send_event(CloseConnection(code=code, reason=reason or None), quiet=True)

    async def _send_event(
        self, event: Event, frame: bytes | None = None, *, quiet: bool = False
    ) -> None:
        """Frame and write ``event``. ``quiet``: a pong or Close that can no longer be sent is
        dropped and a failed write only recorded; otherwise both raise ``ClientDisconnected``."""
        # Taken before wsproto builds the frame: frames reach the wire in the order they were
        # built, and a pong from the receiving task never lands inside another task's frame.
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        try:
            # Judged with the lock held: another task's Close may have gone out meanwhile.
            state = self._ws.state
            if (
                self._write_broken
                or (self._error is not None and not quiet)
                or not (
                    state is _OPEN or (state is _REMOTE_CLOSING and type(event) is CloseConnection)
                )
            ):
                if quiet:
                    return
                raise ClientDisconnected(*(self._error or (None, "closed")))
            data = frame if frame is not None else self._ws.send(event)
            if type(event) is CloseConnection:
                self._close_sent = True
                self._close_deadline = trio.current_time() + self._close_timeout
            try:
                await self._stream.send_all(data)
            except _STREAM_ERRORS as exc:
                self._write_broken = True
                if self._error is None:
                    self._error = (None, "connection lost")
                if not quiet:
                    raise ClientDisconnected(*self._error) from exc
            except BaseException:
                # Cut short (cancelled) in the middle of a frame: what is on the wire is
                # unknown, so the connection cannot carry another frame.
                self._write_broken = True
                if self._error is None:
                    self._error = (None, "a frame was cut short")
                raise
        finally:
            lock.release()

    # -- the end -----------------------------------------------------------------------------

    async def _finish(self) -> None:
        with trio.move_on_after(self._close_timeout):
            if self._error is None and self._ws.state is _OPEN:
                # What hypercorn does for an app that returns without closing.
                await self._send_event(CloseConnection(code=NORMAL_CLOSURE), quiet=True)
            # The handler is gone: read on for the client's Close (or its answer to ours),
            # dropping messages, until the connection ends or the deadline.
            while not self._done and not self._write_broken:
                if not self._events:
                    await self._read()
                    continue
                event = self._events.popleft()
                kind = type(event)
                if kind is CloseConnection:
                    assert isinstance(event, CloseConnection)
                    await self._on_close(event)
                elif kind is Ping:
                    assert isinstance(event, Ping)
                    await self._send_event(event.response(), quiet=True)


class StreamPendingSocket:
    """A client's WebSocket upgrade, read by the door, not answered yet (``PendingSocket``).

    ``extra`` is what the door read past the request head: frames the client sent right behind
    its upgrade, the first input of the connection. The door has checked that ``request`` is a
    valid upgrade (GET, ``Upgrade: websocket``, ``Connection: upgrade``, version 13, a key).
    After the handler returns the door calls ``finish`` and then closes the stream.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        request: h11.Request,
        extra: bytes,
        *,
        max_message_size: int,
        compression: bool,
        close_timeout: float = 5.0,
        on_too_big: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream
        self._on_too_big = on_too_big
        self._headers: list[tuple[bytes, bytes]] = [
            (bytes(n), bytes(v)) for n, v in request.headers
        ]
        self._extra = extra
        self._max_message_size = max_message_size
        self._compression = compression
        self._close_timeout = close_timeout
        self._answered = False
        self._socket: StreamClientSocket | None = None

    async def accept(
        self, subprotocol: str | None = None, *, message_parts: bool = False
    ) -> ClientSocket:
        """Write the 101 and return the socket. A client already gone shows on the socket's
        first use (``ClientDisconnected``), as under hypercorn."""
        if self._answered:
            raise RuntimeError("this WebSocket handshake was already answered")
        key = _first(self._headers, b"sec-websocket-key")
        if key is None:  # pragma: no cover - the door refuses an upgrade without a key
            raise ValueError("no Sec-WebSocket-Key in the upgrade request")
        lines = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + generate_accept_token(key),
        ]
        if subprotocol is not None:
            if subprotocol not in _comma_values(self._headers, b"sec-websocket-protocol"):
                raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
            lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1"))
        extensions: list[Extension] = []
        if self._compression:
            offers = _comma_values(self._headers, b"sec-websocket-extensions")
            if offers:
                deflate = PerMessageDeflate()
                accepted = server_extensions_handshake(offers, [deflate])
                if accepted:
                    lines.append(b"Sec-WebSocket-Extensions: " + accepted)
                    extensions.append(deflate)
        head = b"\r\n".join([*lines, *_server_headers()]) + b"\r\n\r\n"
        self._answered = True
        sock = StreamClientSocket(
            self._stream,
            Connection(ConnectionType.SERVER, extensions, trailing_data=self._extra),
            max_message_size=self._max_message_size,
            message_parts=message_parts,
            close_timeout=self._close_timeout,
            plain_frames=not extensions,
            on_too_big=self._on_too_big,
        )
        self._socket = sock
        self._extra = b""
        try:
            await self._stream.send_all(head)
        except _STREAM_ERRORS:
            sock._write_broken = True
            sock._end(None, "connection lost")
        except BaseException:
            sock._write_broken = True
            sock._end(None, "the handshake answer was cut short")
            raise
        return sock

    async def reject(self, status: int, body: str = "") -> None:
        """Answer the upgrade with an HTTP ``status`` and a text ``body``, then the connection
        ends (``Connection: close``). A client already gone is not an error."""
        if self._answered:
            raise RuntimeError("this WebSocket handshake was already answered")
        self._answered = True
        payload = body.encode("utf-8")
        try:
            phrase = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b""
        head = [
            b"HTTP/1.1 %d %s" % (status, phrase),
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Length: %d" % len(payload),
            b"Connection: close",
            *_server_headers(),
        ]
        with contextlib.suppress(*_STREAM_ERRORS):
            await self._stream.send_all(b"\r\n".join(head) + b"\r\n\r\n" + payload)

    async def wait_gone(self) -> None:
        """Return once the client's connection ends (``PendingSocket.wait_gone``)."""
        await wait_connection_gone(self._stream)

    async def finish(self) -> None:
        """After the handler returned: close an accepted socket it left open with 1000 and wait
        (``close_timeout`` at most) for the client's Close answer or the end of the stream.
        Raises nothing but cancellation; the door closes the stream afterwards."""
        if self._socket is not None:
            await self._socket._finish()


async def wait_connection_gone(stream: trio.abc.Stream) -> None:
    """Return when the TCP connection under ``stream`` ends; wait forever once it has bytes to
    read, or for a stream that is no socket (nothing can tell then). It only peeks: what the
    client sent stays in the socket for whoever reads next. Under TLS a close_notify is bytes:
    only a connection that ends without one shows as ended."""
    under = socket_stream_of(stream)
    if under is not None:
        try:
            peeked = await under.socket.recv(1, socket.MSG_PEEK)
        except OSError:
            peeked = b""
        if not peeked:
            return
    await trio.sleep_forever()


def _server_headers() -> list[bytes]:
    return [b"Date: " + formatdate(usegmt=True).encode("ascii"), b"Server: " + SERVER_HEADER]


def _first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _comma_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every comma-separated value of every ``name`` header, in order."""
    values: list[str] = []
    for n, v in headers:
        if n.lower() == name:
            values.extend(p.strip() for p in v.decode("latin-1").split(",") if p.strip())
    return values


def _joined(parts: list[str | bytes | bytearray]) -> str | bytes:
    if isinstance(parts[0], str):
        return "".join(parts)  # type: ignore[arg-type]  # a message's parts share one type
    return b"".join(parts)  # type: ignore[arg-type]
