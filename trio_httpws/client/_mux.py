"""Many requests on one ``/http_over_websocket`` socket: the Client, its reader and writer
tasks, and streamed Responses (see the package docs on head-of-line blocking)."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import secrets
import ssl
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn

import trio
import trio_websocket

from .._protocol import (
    AUTH_URL_PARAM,
    CLOSE_CODE_OFFSET,
    HTTP_OVER_WS_PATH,
    MIN_VERSION_PARAM,
    close_of,
)
from ._errors import (
    BodyTruncated,
    ClientConnectionError,
    ClientError,
    ConnectionLost,
    ConnectionRefused,
    ProtocolError,
    ResponseStalled,
)
from ._ws import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    Headers,
    _check_min_version,
    _endpoint,
    _header_list,
    _open_ws,
    decode_frame,
    diagnose,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("trio_httpws.client")

#: Frames buffered per response before the reader waits for its consumer.
DEFAULT_BUFFER_FRAMES = 16
#: Seconds the reader waits on one response's full buffer before giving that response up.
DEFAULT_STALL_TIMEOUT = 10.0

#: The close code wsproto reports when the peer's close code is not a valid one (e.g. 400).
_PROTOCOL_ERROR = 1002


@dataclass
class _Chunk:
    """One frame of a response, decoded by the reader task."""

    data: bytes
    #: The last frame of the response.
    done: bool
    #: The parsed first frame (status, statusText, headers); None for later frames.
    head: dict[str, Any] | None = None
    #: The response ends with this error (a malformed frame, or a truncated body).
    error: ClientError | None = None


@dataclass(eq=False)
class _Flight:
    """A request the client waits on. The reader owns ``send`` while it is in the table."""

    message_id: str
    send: trio.MemorySendChannel[_Chunk]
    #: The request message has been handed to the socket (so a cancel must follow it).
    sent: bool = False
    #: Cancelled before it was sent: the writer skips it.
    withdrawn: bool = False
    #: The first frame has arrived (later frames carry no status, unless they end the body).
    head_seen: bool = False
    #: Why the response ended early, for the consumer who finds its channel closed.
    error: ClientError | None = None


@dataclass(eq=False)
class _Outgoing:
    text: str
    flight: _Flight | None = None


@dataclass
class _CloseInfo:
    code: int | None
    reason: str
    received_any: bool
    by_us: bool


def _raise_unwrapped(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the lone exception of a nursery's group, as trio-websocket does.

    The client's background tasks never raise, so a group from the client's nursery holds the
    exception of the user's ``async with`` body (or our own), which callers expect unwrapped.
    """
    if len(group.exceptions) != 1:
        raise group
    exc = group.exceptions[0]
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


class Response:
    """One response: status and headers from its first frame, then a body streamed in frames.

    Use it as an async context manager (``async with await client.request(...) as resp``) or call
    :meth:`aclose`, so that a response left unread is cancelled on the server and stops holding
    the socket (see the module docs on head-of-line blocking). Reading the whole body also ends it.
    """

    def __init__(
        self,
        client: Client,
        flight: _Flight,
        receive: trio.MemoryReceiveChannel[_Chunk],
        first: _Chunk,
    ) -> None:
        head = first.head
        assert head is not None
        self._client = client
        self._flight = flight
        self._receive = receive
        #: The ``message_id`` this client gave the request.
        self.message_id: str = flight.message_id
        #: The HTTP status (of the backend's response, or of the proxy's error).
        self.status: int = head["status"]
        #: The reason phrase.
        self.status_text: str = head["statusText"]
        #: Response headers as the server sent them (Http-Header-Case, repeats joined by ",").
        self.headers: dict[str, str] = head["headers"]
        #: The proxy answered with an error frame of its own: no backend response, empty body.
        self.is_proxy_error: bool = head["proxy_error"]
        self._pending: list[bytes] = [first.data] if first.data else []
        self._finished = first.done
        self._failure: ClientError | None = None
        if self._finished:
            receive.close()

    def __repr__(self) -> str:
        return (
            f"<Response {self.message_id} {self.status} {self.status_text!r}"
            f"{' proxy-error' if self.is_proxy_error else ''}>"
        )

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300

    def body(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as the frames arrive (never empty chunks).

        Raises :exc:`BodyTruncated` when the server ends it with an error, :exc:`ResponseStalled`
        when it was given up for being read too slowly, :exc:`ConnectionLost` when the socket
        closes first. Iterating again continues where the last iteration stopped.
        """
        return _BodyIterator(self)

    async def read(self) -> bytes:
        """The whole (remaining) body."""
        return b"".join([chunk async for chunk in self.body()])

    async def aclose(self) -> None:
        """Stop the response: cancel it on the server unless it is complete, drop its frames."""
        self._close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _close(self) -> None:
        self._pending.clear()
        self._failure = None
        if not self._finished:
            self._finished = True
            self._client._abandon(self._flight)
        self._receive.close()

    async def _next(self) -> bytes:
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._finished:
                raise StopAsyncIteration
            try:
                chunk = await self._receive.receive()
            except trio.EndOfChannel:
                self._finished = True
                raise self._flight.error or ProtocolError(
                    "response ended without a final frame"
                ) from None
            except BaseException:
                # Cancelled (or interrupted) while waiting for the body: give the request up.
                self._close()
                raise
            if chunk.data:
                self._pending.append(chunk.data)
            if chunk.error is not None or chunk.done:
                self._finished = True
                self._failure = chunk.error
                self._receive.close()


class _BodyIterator(AsyncIterator[bytes]):
    def __init__(self, response: Response) -> None:
        self._response = response

    async def __anext__(self) -> bytes:
        return await self._response._next()


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


@dataclass
class _Settings:
    url: str
    auth_url: str | None
    min_version: str | None
    origin: str | None
    extra_headers: list[tuple[str, str]]
    max_message_size: int
    buffer_frames: int
    stall_timeout: float | None
    ssl_context: ssl.SSLContext | None
    connect_timeout: float
    prefix: str = field(default_factory=lambda: secrets.token_hex(4) + "-")


class Client:
    """An open ``/http_over_websocket`` socket. Make one with :func:`open_client`."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, settings: _Settings) -> None:
        self._ws = ws
        self._settings = settings
        self._ids = itertools.count(1)
        self._flights: dict[str, _Flight] = {}
        # Unbounded, but never longer than the number of requests and cancels callers made:
        # every request message is already held in memory by the task that awaits its answer.
        self._out_send, self._out_receive = trio.open_memory_channel[_Outgoing](float("inf"))
        self._closed = trio.Event()
        self._close_info: _CloseInfo | None = None
        self._received_any = False

    @property
    def url(self) -> str:
        """The base URL this client was opened with."""
        return self._settings.url

    @property
    def closed(self) -> bool:
        """The socket is closed: new requests raise :exc:`ClientConnectionError`."""
        return self._close_info is not None

    @property
    def in_flight(self) -> int:
        """Requests sent whose final frame has not arrived (and that were not given up)."""
        return len(self._flights)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one HTTP request through the socket; return once its first frame arrives.

        ``path`` is the path and query on the backend (``/api/sessions?x=1``). A ``str`` body is
        sent as text; ``bytes`` as base64 (the original extension decodes that as UTF-8, so only
        trio_httpws carries binary bodies). ``headers`` go in the message's ``headers`` field,
        which jupyter_http_over_ws 0.0.8 ignores, and so does trio_httpws: headers meant for
        the backend belong in ``open_client(extra_headers=...)``, which both servers forward.

        Raises :exc:`ConnectionRefused` or :exc:`ConnectionLost` when the socket is or becomes
        closed before the first frame, :exc:`ProtocolError` for a malformed first frame.
        """
        if self._close_info is not None:
            raise self._closed_error()
        message_id = f"{self._settings.prefix}{next(self._ids)}"
        message: dict[str, Any] = {"message_id": message_id, "method": method, "path": path}
        if isinstance(body, str):
            message["body"] = body
        elif body:
            message["body_base64"] = base64.b64encode(body).decode("ascii")
        elif body is not None:
            message["body"] = ""
        if headers is not None:
            message["headers"] = dict(headers)
        text = json.dumps(message)

        send, receive = trio.open_memory_channel[_Chunk](self._settings.buffer_frames)
        flight = _Flight(message_id, send)
        self._flights[message_id] = flight
        self._out_send.send_nowait(_Outgoing(text, flight))
        try:
            first = await receive.receive()
        except trio.EndOfChannel:
            raise flight.error or ProtocolError("response ended before its first frame") from None
        except BaseException:
            self._abandon(flight)
            receive.close()
            raise
        if first.error is not None:
            receive.close()
            raise first.error
        return Response(self, flight, receive, first)

    async def diagnose(self) -> dict[str, Any]:
        """Ask ``/http_over_websocket/diagnose`` (a socket of its own) about this connection.

        Returns the server's answer: ``extension_version``, ``has_authentication_cookie`` and
        ``is_outdated_extension`` (judged against this client's ``min_version``).
        """
        s = self._settings
        return await diagnose(
            s.url,
            min_version=s.min_version,
            origin=s.origin,
            extra_headers=s.extra_headers,
            ssl_context=s.ssl_context,
            connect_timeout=s.connect_timeout,
        )

    # -- background tasks --------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason: trio_websocket.CloseReason | None = None
        try:
            while True:
                message = await self._ws.get_message()
                self._received_any = True
                await self._dispatch(message)
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
        finally:
            # Also reached when the client's nursery is cancelled on exit.
            self._mark_closed(reason, by_us=reason is None)

    async def _write_loop(self) -> None:
        async for item in self._out_receive:
            if item.flight is not None:
                if item.flight.withdrawn:
                    continue
                item.flight.sent = True
            try:
                await self._ws.send_message(item.text)
            except trio_websocket.ConnectionClosed:
                # The reader sees the close too and ends every request.
                return

    async def _dispatch(self, message: str | bytes) -> None:
        frame = decode_frame(message)
        if frame is None:
            return
        message_id = frame.get("message_id")
        flight = self._flights.get(message_id) if isinstance(message_id, str) else None
        if flight is None:
            # Frames of requests we gave up or finished, answers to our cancel messages, and
            # errors about messages the server could not read (we never send those).
            log.debug("ignoring frame for message_id %r", message_id)
            return
        chunk = self._chunk(frame, first=not flight.head_seen)
        flight.head_seen = True
        final = chunk.done or chunk.error is not None
        delivered = await self._deliver(flight, chunk)
        if self._flights.get(flight.message_id) is not flight:
            return  # the consumer gave the response up meanwhile
        if not delivered:
            stall = self._settings.stall_timeout
            log.warning(
                "response %s not read for %s s; giving it up so the socket can move on",
                flight.message_id,
                stall,
            )
            error = ResponseStalled(
                f"response {flight.message_id} was not read for {stall} s while its buffer was "
                "full; it was given up so that other responses could proceed"
            )
            # After its final frame the server has nothing left to cancel.
            self._abandon(flight, error, cancel=not final)
        elif final:
            del self._flights[flight.message_id]
            flight.send.close()

    async def _deliver(self, flight: _Flight, chunk: _Chunk) -> bool:
        """Hand ``chunk`` to its consumer; False if the buffer stayed full for stall_timeout."""
        try:
            try:
                flight.send.send_nowait(chunk)
                return True
            except trio.WouldBlock:
                pass
            stall = self._settings.stall_timeout
            with trio.move_on_after(float("inf") if stall is None else stall):
                await flight.send.send(chunk)
                return True
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The consumer closed the response meanwhile; it has been given up already.
            return True

    @staticmethod
    def _chunk(frame: dict[str, Any], *, first: bool) -> _Chunk:
        done = frame.get("done") is True
        data = b""
        raw = frame.get("data")
        if raw is not None:
            if not isinstance(raw, str):
                return _Chunk(b"", True, error=ProtocolError("frame data is not a string"))
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                return _Chunk(b"", True, error=ProtocolError("frame data is not valid base64"))
        status = frame.get("status")
        if first:
            if not isinstance(status, int) or isinstance(status, bool):
                # The keys only: the frame may hold cookies (Set-Cookie) and a body.
                return _Chunk(
                    b"", True, error=ProtocolError(f"first frame has no status: {sorted(frame)}")
                )
            headers = frame.get("headers")
            head = {
                "status": status,
                "statusText": str(frame.get("statusText", "")),
                "headers": {str(k): str(v) for k, v in headers.items()}
                if isinstance(headers, dict)
                else {},
                # The proxy's own errors are one final frame without headers.
                "proxy_error": done and headers is None,
            }
            return _Chunk(data, done, head=head)
        if status is not None:
            # A status after the first frame: the server ends a body it could not finish.
            text = str(frame.get("statusText", ""))
            code = status if isinstance(status, int) else 0
            return _Chunk(data, True, error=BodyTruncated(code, text))
        return _Chunk(data, done)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _abandon(
        self, flight: _Flight, error: ClientError | None = None, *, cancel: bool = True
    ) -> None:
        """Stop waiting for ``flight``: drop its later frames and cancel it on the server."""
        if self._flights.get(flight.message_id) is not flight:
            return  # finished, or given up already
        del self._flights[flight.message_id]
        flight.error = error
        flight.send.close()
        if not flight.sent:
            flight.withdrawn = True
        elif cancel and self._close_info is None:
            message = json.dumps({"message_id": flight.message_id, "cancel": True})
            self._out_send.send_nowait(_Outgoing(message))

    def _mark_closed(self, reason: trio_websocket.CloseReason | None, *, by_us: bool) -> None:
        if self._close_info is None:
            code, text = close_of(reason)
            self._close_info = _CloseInfo(
                code=code,
                reason=text,
                received_any=self._received_any,
                by_us=by_us,
            )
        self._out_send.close()
        flights, self._flights = self._flights, {}
        for flight in flights.values():
            flight.error = self._closed_error()
            flight.send.close()
        self._closed.set()

    def _closed_error(self) -> ClientConnectionError:
        info = self._close_info
        assert info is not None
        code, reason = info.code, info.reason
        if info.by_us:
            return ConnectionLost("the client is closed")
        if code is not None and not info.received_any:
            if CLOSE_CODE_OFFSET + 100 <= code < CLOSE_CODE_OFFSET + 600:
                status = code - CLOSE_CODE_OFFSET
                return ConnectionRefused(
                    f"server refused the connection ({code}): {reason}",
                    code=code,
                    reason=reason,
                    status=status,
                )
            if code == _PROTOCOL_ERROR:
                hint = ""
                if self._settings.min_version is not None:
                    hint = (
                        f"; the original jupyter_http_over_ws refuses a min_version newer than "
                        f"its protocol version ({self._settings.min_version} was asked for) "
                        "that way"
                    )
                return ConnectionRefused(
                    "server closed the connection with an invalid close code (its reason is lost: "
                    f"{reason}){hint}",
                    code=code,
                    reason=reason,
                )
        return ConnectionLost(f"connection closed ({code}): {reason}", code=code, reason=reason)


@asynccontextmanager
async def open_client(
    url: str,
    *,
    auth_url: str | None = None,
    min_version: str | None = None,
    origin: str | None = None,
    extra_headers: Headers | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    buffer_frames: int = DEFAULT_BUFFER_FRAMES,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[Client]:
    """Open ``{url}/http_over_websocket`` and yield a :class:`Client` for requests over it.

    ``url`` is the server's base URL (``http://127.0.0.1:8888``, ``https://...``, ``ws://...``),
    with the server's base path if it has one. ``auth_url`` is the URL with the token that logs in
    (``http://127.0.0.1:8888/?token=...``): the server fetches it and sends its cookies with every
    request. ``min_version`` (``"0.0.7"``) makes the server refuse the socket unless it speaks at
    least that protocol version: the first :meth:`Client.request` raises :exc:`ConnectionRefused`
    (see the module docs; an unparseable version raises ``ValueError`` here). A refused
    ``origin`` raises :exc:`ConnectionRefused` from ``open_client`` itself. ``extra_headers`` go
    on the upgrade request, and both servers pass them on to the backend. Other failures to
    connect raise :exc:`ClientConnectionError`.

    ``buffer_frames`` and ``stall_timeout`` bound what an unread response may hold (see the
    module docs). On exit, requests still in flight are cancelled and their responses fail with
    :exc:`ConnectionLost`.
    """
    _check_min_version(min_version)
    if buffer_frames < 1:
        raise ValueError("buffer_frames must be at least 1")
    headers = list(
        extra_headers.items() if isinstance(extra_headers, Mapping) else extra_headers or ()
    )
    settings = _Settings(
        url=url,
        auth_url=auth_url,
        min_version=min_version,
        origin=origin,
        extra_headers=headers,
        max_message_size=max_message_size,
        buffer_frames=buffer_frames,
        stall_timeout=stall_timeout,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
    )
    endpoint = _endpoint(
        url, HTTP_OVER_WS_PATH, {MIN_VERSION_PARAM: min_version, AUTH_URL_PARAM: auth_url}
    )
    async with _open_ws(
        endpoint,
        extra_headers=_header_list(headers, origin),
        max_message_size=max_message_size,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
    ) as ws:
        try:
            async with trio.open_nursery() as nursery:
                client = Client(ws, settings)
                nursery.start_soon(client._read_loop)
                nursery.start_soon(client._write_loop)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _raise_unwrapped(group)
