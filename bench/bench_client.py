"""The benchmark's clients, written here so the measurement depends on nothing under test.

- :class:`HttpOverWs`: the HTTP-over-WebSocket protocol as a browser front end speaks it, on a
  wsproto socket of its own (:class:`_LeanWs`): one JSON message per request, frames routed by
  ``message_id``, any number of requests in flight on one socket.
- :class:`RawHttp`: the "direct" baseline, plain HTTP/1.1 over one keep-alive trio socket with
  pipelining (several requests written before their responses are read, answered in order), so
  "N in flight on one socket" means the same thing for the backend as for the proxies.

Both offer ``request()`` (whole body) and ``stream()`` (body chunks as they arrive; a caller that
stops iterating stops reading from the socket, so TCP pushes back on the server).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import SplitResult, quote, urlsplit

import pybase64
import trio
import trio_websocket
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
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

#: Read size of the WebSocket clients (trio-websocket's default of 4 KiB would make the client
#: the bottleneck of a download).
RECEIVE_BUFFER = 256 * 1024
#: Largest message the WebSocket clients accept (the 1 MB echo needs more than the default).
MAX_MESSAGE = 8 * 1024 * 1024
#: Frames buffered per request before the frame reader blocks (and so stops reading the socket).
FRAMES_PER_REQUEST = 8
#: The Origin a browser front end (Colab) sends on its WebSocket upgrades.
BROWSER_ORIGIN = "https://colab.research.google.com"

Headers = Sequence[tuple[str, str]]

#: A frame's body key; ``json.dumps`` (the original) writes a space after the colon, trio_httpws
#: none.
_DATA_KEY = '"data":'
#: What :func:`parse_frame` puts where the body was, to find it again: a NUL, JSON-escaped.
_MARKER = "\\u0000"
#: Frames at least this long take the fast path of :func:`parse_frame`.
_FAST_FRAME = 4096


def parse_frame(message: str) -> dict[str, Any]:
    """``json.loads(message)``, with the long base64 ``data`` string cut out by hand first.

    json's scanner reads a string one character at a time: a 64 KiB body's frame cost this
    client a third of its CPU in a download (py-spy), CPU the servers it measures then lack.
    The string after the first ``"data":`` is taken out when it is valid base64 (which has no
    quote, backslash or control character, so json would read it as it stands) and json parses
    the rest with a marker in its place; the cut is used only if json then finds the marker as
    the top-level ``data``, so a nested, repeated, escaped or lookalike key falls back to
    ``json.loads(message)``, as does anything else unexpected. The result is always json's.
    """
    start = message.find(_DATA_KEY) if len(message) >= _FAST_FRAME else -1
    if start < 0:
        return json.loads(message)  # type: ignore[no-any-return]
    begin = start + len(_DATA_KEY)
    while message[begin : begin + 1] == " ":
        begin += 1
    end = message.find('"', begin + 1) if message[begin : begin + 1] == '"' else -1
    # The marker must be new to the text (outside the cut: base64 has no backslash).
    if end < 0 or message.find(_MARKER, 0, begin) >= 0 or message.find(_MARKER, end) >= 0:
        return json.loads(message)  # type: ignore[no-any-return]
    data = message[begin + 1 : end]
    try:
        pybase64.b64decode(data, validate=True)  # 7 us for 64 KiB; the callers decode it again
        frame = json.loads(message[: begin + 1] + _MARKER + message[end:])
    except ValueError:  # binascii.Error and json's errors are ValueErrors
        return json.loads(message)  # type: ignore[no-any-return]
    if not isinstance(frame, dict) or frame.get("data") != "\x00":
        return json.loads(message)  # type: ignore[no-any-return]
    frame["data"] = data
    return frame


class BenchFailure(Exception):
    """A target failed a step: the cell of the table says ``fails (<message>)``."""


@dataclass
class Reply:
    status: int
    body: bytes


class Api(Protocol):
    """What a scenario needs of a target's connection."""

    #: Largest single message the server sent for a response (WebSocket targets), else 0.
    max_frame: int

    async def request(self, method: str, path: str, body: bytes | None = None) -> Reply: ...

    def stream(self, path: str) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


async def open_ws(
    nursery: trio.Nursery,
    url: str,
    headers: Headers = (),
    *,
    deflate: bool = False,
    max_message: int = MAX_MESSAGE,
) -> trio_websocket.WebSocketConnection:
    """A client WebSocket whose background reader runs in ``nursery``.

    ``deflate``: offer permessage-deflate, as browsers always do (trio-websocket has no
    parameter for it, so its handshake request gets wsproto's extension here; what
    ``connect_websocket_url`` does otherwise).
    """
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise BenchFailure(f"not a ws://host:port URL: {url}")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    ws = trio_websocket.WebSocketConnection(
        stream,
        WSConnection(ConnectionType.CLIENT),
        host=parts.netloc,
        path=parts.path + (f"?{parts.query}" if parts.query else ""),
        client_extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        message_queue_size=1,
        max_message_size=max_message,
        receive_buffer_size=RECEIVE_BUFFER,
    )
    if deflate:
        request = ws._initial_request
        assert request is not None
        ws._initial_request = dataclasses.replace(request, extensions=[PerMessageDeflate()])
    nursery.start_soon(ws._reader_task)
    await ws._open_handshake.wait()
    return ws


def protocol_url(http_base: str, endpoint: str, token: str, *, min_version: bool = True) -> str:
    """The WebSocket URL of a protocol endpoint on ``http_base``, with the front end's auth URL.

    The auth URL is the server's own token URL (same scheme, host and port), as the user pastes
    it into Colab; the server fetches it and forwards the cookies it sets.
    """
    parts = urlsplit(http_base)
    token_url = f"{http_base}/?token={token}"
    query = "jupyter_http_over_ws_auth_url=" + quote(token_url, safe="")
    if min_version:
        query = "min_version=0.0.7&" + query
    sep = "&" if "?" in endpoint else "?"
    return f"ws://{parts.netloc}{endpoint}{sep}{query}"


async def _open_tcp(url: str) -> tuple[SplitResult, trio.SocketStream]:
    """A TCP connection to the host and port of ``url`` (which must name both)."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise BenchFailure(f"not a scheme://host:port URL: {url}")
    try:
        return parts, await trio.open_tcp_stream(parts.hostname, parts.port)
    except OSError as exc:
        raise BenchFailure(f"connect failed: {exc}") from exc


class _LeanWs:
    """A client WebSocket for one reading task: wsproto straight on a trio socket.

    As lean as :class:`RawHttp` is for plain HTTP: the client shares the machine's cores with
    the server it measures, so every task hop it saves is CPU the server gets. (trio-websocket
    adds a reader task and a message queue: two hops per message before ours.)
    """

    def __init__(self, stream: trio.SocketStream, ws: WSConnection, early: list[Event]) -> None:
        self._stream = stream
        self._ws = ws
        self._early = early
        self._send_lock = trio.Lock()

    @classmethod
    async def connect(cls, url: str, headers: Headers, *, deflate: bool) -> _LeanWs:
        parts, stream = await _open_tcp(url)
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=parts.netloc,
            target=parts.path + (f"?{parts.query}" if parts.query else ""),
            extra_headers=[(k.encode(), v.encode()) for k, v in headers],
            extensions=[PerMessageDeflate()] if deflate else [],
        )
        try:
            await stream.send_all(ws.send(request))
            while True:
                data = await stream.receive_some(RECEIVE_BUFFER)
                if not data:
                    raise BenchFailure("WebSocket upgrade failed: connection closed")
                ws.receive_data(data)
                events = list(ws.events())
                for i, event in enumerate(events):
                    if isinstance(event, AcceptConnection):
                        return cls(stream, ws, events[i + 1 :])
                    if isinstance(event, RejectConnection):
                        raise BenchFailure(f"WebSocket upgrade failed: HTTP {event.status_code}")
        except (trio.BrokenResourceError, RemoteProtocolError) as exc:
            await trio.aclose_forcefully(stream)
            raise BenchFailure(f"WebSocket upgrade failed: {exc!r}") from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def send(self, message: str) -> None:
        await self._write(TextMessage(data=message))

    async def _write(self, event: Event) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(self._ws.send(event))
            except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError) as exc:
                raise BenchFailure(f"socket closed: {exc!r}") from exc

    async def messages(self) -> AsyncIterator[str]:
        """Whole text messages until the server closes (then BenchFailure with its code)."""
        parts: list[str] = []
        size = 0
        events: list[Event] = self._early
        while True:
            for event in events:
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    size += len(event.data)
                    if size > MAX_MESSAGE:
                        raise BenchFailure(f"a message over {MAX_MESSAGE} characters")
                    if event.message_finished:
                        message = parts[0] if len(parts) == 1 else "".join(parts)
                        parts, size = [], 0
                        yield message
                elif isinstance(event, Ping):
                    await self._write(event.response())
                elif isinstance(event, CloseConnection):
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        with suppress(BenchFailure):
                            await self._write(event.response())
                    raise BenchFailure(f"socket closed: {event.code} {event.reason or ''}".rstrip())
                elif isinstance(event, BytesMessage):
                    raise BenchFailure("a binary message on the tunnel")
            try:
                data = await self._stream.receive_some(RECEIVE_BUFFER)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise BenchFailure(f"socket closed: {exc!r}") from exc
            self._ws.receive_data(data or None)  # b"": the end of the stream (1006)
            events = list(self._ws.events())

    async def aclose(self) -> None:
        with trio.move_on_after(2):
            if self._ws.state is ConnectionState.OPEN:
                with suppress(BenchFailure):
                    await self._write(CloseConnection(code=1000))
        await trio.aclose_forcefully(self._stream)


class HttpOverWs:
    """One ``/http_over_websocket`` socket; ``request``/``stream`` may run concurrently."""

    def __init__(self, ws: _LeanWs) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._broken: str | None = None
        #: Set when the frame reader stopped (``_broken`` says why).
        self._reader_done = trio.Event()
        self.max_frame = 0

    @classmethod
    async def connect(
        cls, nursery: trio.Nursery, http_base: str, token: str, *, deflate: bool = False
    ) -> HttpOverWs:
        url = protocol_url(http_base, "/http_over_websocket", token)
        ws = await _LeanWs.connect(url, [("Origin", BROWSER_ORIGIN)], deflate=deflate)
        self = cls(ws)
        nursery.start_soon(self._read_frames)
        return self

    async def _read_frames(self) -> None:
        # The only reader: a frame goes from the socket to its request's task in one hop.
        try:
            async for message in self._ws.messages():
                if len(message) > self.max_frame:
                    self.max_frame = len(message)
                frame = parse_frame(message)
                channel = self._waiting.get(str(frame.get("message_id")))
                if channel is None:
                    continue  # a request we gave up on
                await channel.send(frame)
                if frame.get("done"):
                    channel.close()
        except BenchFailure as exc:
            self._broken = str(exc)
        finally:
            for channel in self._waiting.values():
                channel.close()
            self._reader_done.set()

    async def _send(
        self, method: str, path: str, body: bytes | None, as_base64: bool = False
    ) -> tuple[str, trio.MemoryReceiveChannel[dict[str, Any]]]:
        if self._broken:
            raise BenchFailure(self._broken)
        mid = str(next(self._ids))
        send, receive = trio.open_memory_channel[dict[str, Any]](FRAMES_PER_REQUEST)
        self._waiting[mid] = send
        message: dict[str, Any] = {"message_id": mid, "method": method, "path": path}
        if body is not None and as_base64:
            message["body_base64"] = pybase64.b64encode_as_string(body)
        elif body is not None:
            # Text bodies: the original decodes body_base64 as UTF-8, so the bench sends text.
            message["body"] = body.decode()
        try:
            await self._ws.send(json.dumps(message))
        except BenchFailure:
            # A server that refuses a message closes with a reason (1009 for one too large)
            # and may reset the socket under the rest of it: say the reason if it arrives.
            with trio.move_on_after(1):
                await self._reader_done.wait()
            if self._broken:
                raise BenchFailure(self._broken) from None
            raise
        return mid, receive

    async def _frames(
        self, mid: str, receive: trio.MemoryReceiveChannel[dict[str, Any]]
    ) -> AsyncIterator[tuple[dict[str, Any], str]]:
        try:
            async with receive:
                done = False
                async for frame in receive:
                    yield frame, frame.get("data") or ""
                    if frame.get("done"):
                        done = True
                        break
                if not done:
                    raise BenchFailure(self._broken or "response ended without done:true")
        finally:
            self._waiting.pop(mid, None)

    async def request(
        self, method: str, path: str, body: bytes | None = None, as_base64: bool = False
    ) -> Reply:
        """``as_base64``: send the body as body_base64 (the original then decodes it as UTF-8)."""
        mid, receive = await self._send(method, path, body, as_base64)
        status = 0
        parts: list[bytes] = []
        async for frame, data in self._frames(mid, receive):
            if "status" in frame:
                status = int(frame["status"])
            parts.append(pybase64.b64decode(data, validate=True))
        return Reply(status, b"".join(parts))

    async def stream(self, path: str) -> AsyncIterator[bytes]:
        """Body slices, one per frame. Decoded with pybase64 (SIMD): the stdlib's decoder cost
        this client as much CPU as the proxy spent on the same 2 cores."""
        mid, receive = await self._send("GET", path, None)
        first = True
        async for frame, data in self._frames(mid, receive):
            if first:
                if frame.get("status") != 200:
                    raise BenchFailure(f"HTTP {frame.get('status')} {frame.get('statusText')}")
                first = False
            elif "status" in frame:  # a final error frame after part of the body
                raise BenchFailure(f"HTTP {frame['status']} {frame.get('statusText')}")
            if data:
                yield pybase64.b64decode(data, validate=True)

    async def aclose(self) -> None:
        await self._ws.aclose()


# -- plain HTTP/1.1 ----------------------------------------------------------------------------


class RawHttp:
    """A keep-alive HTTP/1.1 connection; concurrent ``request`` calls are pipelined.

    A response with ``Connection: close`` (hypercorn sends it on a connection's 1000th
    response) makes the next request open a new connection, as a browser does; with requests
    pipelined behind it that is a failure (they were lost with the connection).
    """

    def __init__(self, stream: trio.SocketStream, host: str, cookie: str) -> None:
        self._stream = stream
        self.reconnects = 0
        self._host = host
        self._cookie = cookie
        self._xsrf = _cookie_value(cookie, "_xsrf")
        self._buf = bytearray()
        self._send_lock = trio.Lock()
        self._next_ticket = 0
        self._reading = 0
        self._turns: dict[int, trio.Event] = {}
        self.max_frame = 0

    @classmethod
    async def connect(cls, http_base: str, cookie: str) -> RawHttp:
        parts, stream = await _open_tcp(http_base)
        return cls(stream, parts.netloc, cookie)

    def _encode(self, method: str, path: str, body: bytes | None) -> bytes:
        if self._xsrf and method in ("POST", "PUT", "PATCH", "DELETE"):
            path += ("&" if "?" in path else "?") + "_xsrf=" + quote(self._xsrf, safe="")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}", "Accept: */*"]
        if self._cookie:
            lines.append(f"Cookie: {self._cookie}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    async def _wait_turn(self, method: str, path: str, body: bytes | None) -> int:
        data = self._encode(method, path, body)
        async with self._send_lock:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._turns[ticket] = trio.Event()
            await self._send_all(data)
        if self._reading != ticket:
            await self._turns[ticket].wait()
        return ticket

    def _end_turn(self, ticket: int) -> None:
        del self._turns[ticket]
        self._reading = ticket + 1
        successor = self._turns.get(ticket + 1)
        if successor is not None:
            successor.set()

    async def _send_all(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise BenchFailure(f"connection lost: {exc}") from exc

    async def _fill(self) -> None:
        try:
            data = await self._stream.receive_some(RECEIVE_BUFFER)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise BenchFailure(f"connection lost: {exc}") from exc
        if not data:
            raise BenchFailure("connection closed by the server")
        self._buf += data

    async def _head(self) -> tuple[int, dict[str, str], list[str]]:
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            await self._fill()
        lines = self._buf[:end].decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "set-cookie":
                cookies.append(value.strip().split(";", 1)[0])
            headers[name] = value.strip()
        return status, headers, cookies

    async def _body(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                while (eol := self._buf.find(b"\r\n")) < 0:
                    await self._fill()
                size = int(bytes(self._buf[:eol]).split(b";", 1)[0], 16)
                del self._buf[: eol + 2]
                while len(self._buf) < size + 2:
                    await self._fill()
                if size == 0:
                    # A trailer section is not sent by tornado; the empty line ends the body.
                    del self._buf[:2]
                    return
                yield bytes(self._buf[:size])
                del self._buf[: size + 2]
        left = int(headers.get("content-length", "0"))
        while left > 0:
            if not self._buf:
                await self._fill()
            piece = bytes(self._buf[:left])
            del self._buf[: len(piece)]
            left -= len(piece)
            yield piece

    async def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        ticket = await self._wait_turn(method, path, body)
        try:
            status, headers, _ = await self._head()
            parts = [piece async for piece in self._body(headers)]
            if "close" in headers.get("connection", "").lower():
                await self._reconnect(ticket)
        finally:
            self._end_turn(ticket)
        return Reply(status, b"".join(parts))

    async def _reconnect(self, ticket: int) -> None:
        if self._next_ticket != ticket + 1:
            raise BenchFailure("the server closed a connection with requests pipelined on it")
        host, _, port = self._host.rpartition(":")
        await self._stream.aclose()
        self._stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        self._buf.clear()
        self.reconnects += 1

    async def stream(self, path: str) -> AsyncIterator[bytes]:
        ticket = await self._wait_turn("GET", path, None)
        try:
            status, headers, _ = await self._head()
            if status != 200:
                raise BenchFailure(f"HTTP {status}")
            async for piece in self._body(headers):
                yield piece
        finally:
            self._end_turn(ticket)

    async def aclose(self) -> None:
        await self._stream.aclose()


def _cookie_value(cookie: str, name: str) -> str | None:
    for pair in cookie.split(";"):
        key, _, value = pair.strip().partition("=")
        if key == name:
            return value
    return None


async def login_cookie(http_base: str, token: str) -> str:
    """Follow the token URL as a browser does and return the cookies it set, as a Cookie header."""
    cookies: dict[str, str] = {}
    target = f"/?token={token}"
    conn = await RawHttp.connect(http_base, "")
    try:
        for _ in range(5):
            ticket = await conn._wait_turn("GET", target, None)
            try:
                status, headers, set_cookies = await conn._head()
                async for _piece in conn._body(headers):
                    pass
            finally:
                conn._end_turn(ticket)
            for pair in set_cookies:
                key, _, value = pair.partition("=")
                cookies[key] = value
            if status in (301, 302, 303, 307, 308):
                target = headers["location"]
                continue
            break
    finally:
        await conn.aclose()
    if not any(key.startswith("username-") for key in cookies):
        raise BenchFailure(f"the token URL set no login cookie (got {sorted(cookies)})")
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


async def start_kernel(http_base: str, cookie: str) -> str:
    """Start a kernel on the backend (REST, with the login cookies) and return its id."""
    api = await RawHttp.connect(http_base, cookie)
    try:
        reply = await api.request("POST", "/api/kernels", b"{}")
    finally:
        await api.aclose()
    if reply.status != 201:
        raise BenchFailure(f"POST /api/kernels: HTTP {reply.status} {reply.body[:200]!r}")
    return str(json.loads(reply.body)["id"])


def execute_request(session: str, msg_id: str, code: str) -> str:
    """A Jupyter ``execute_request`` on the shell channel, as a kernel WebSocket text message."""
    header = {"msg_id": msg_id, "username": "bench", "session": session,
              "msg_type": "execute_request", "version": "5.3"}  # fmt: skip
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}  # fmt: skip
    return json.dumps({"header": header, "parent_header": {}, "metadata": {},
                       "content": content, "channel": "shell", "buffers": []})  # fmt: skip
