"""An HTTP/1.1 client for the one backend: h11 over trio streams, with a keep-alive pool.

A connection goes back to the pool only after a request and its response were both completely
exchanged. Anything else (an exception, a cancellation, a half-read body, a protocol error) means
we no longer know what is on the wire, so the connection is closed instead: it is never reused
half-read.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import h11
import trio

from ._config import BackendURL
from ._errors import BackendError, BackendTimeout

log = logging.getLogger("trio_httpws.backend")

Headers = list[tuple[bytes, bytes]]
StreamOpener = Callable[[BackendURL], Awaitable[trio.abc.Stream]]
Body = bytes | AsyncIterable[bytes] | None

#: Bytes asked of the socket per read. 64 KiB matches the frame size, so a busy download fills
#: each frame from one read without a second copy into a join.
READ_SIZE = 65536


def make_ssl_context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


class _Connection:
    __slots__ = ("h11", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE


class BackendResponse:
    """The status and headers of a backend response, and an iterator over its body."""

    def __init__(self, pool: BackendPool, conn: _Connection, response: h11.Response) -> None:
        self._pool = pool
        self._conn = conn
        self.status: int = response.status_code
        self.reason: str = response.reason.decode("latin-1")
        self.headers: Headers = list(response.headers.raw_items())

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives: each chunk is all the body bytes one read produced.

        The next read from the backend happens only when the consumer asks for the next chunk,
        so a slow consumer slows the backend down instead of filling memory.
        """
        conn = self._conn
        parts: list[bytes] = []
        while True:
            event = self._pool._next_buffered_event(conn)
            if type(event) is h11.Data:
                parts.append(bytes(event.data))
                continue
            if parts and (event is h11.NEED_DATA or type(event) is h11.EndOfMessage):
                chunk = parts[0] if len(parts) == 1 else b"".join(parts)
                parts = []
                yield chunk
            if type(event) is h11.EndOfMessage:
                return
            if event is h11.NEED_DATA:
                await self._pool._feed(conn)
                continue
            raise BackendError(f"backend sent an unexpected {type(event).__name__} in a body")

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (for small responses such as the auth URL's)."""
        parts = []
        size = 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if limit is not None and size > limit:
                raise BackendError(f"backend response is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


class BackendPool:
    """Keep-alive HTTP/1.1 connections to one backend.

    ``opener`` makes a new stream to the backend; tests inject one that returns memory streams or
    slow streams. The default opens TCP, and TLS for an https backend.
    """

    def __init__(
        self,
        backend: BackendURL,
        *,
        opener: StreamOpener | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 32,
        max_connections: int = 100,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
    ) -> None:
        self.backend = backend
        self._opener = opener or self._open_stream
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[_Connection] = []
        # Requests beyond this many at once wait for a slot instead of opening ever more
        # connections: 2000 requests in flight must not become a burst of 2000 connects that
        # overflows the backend's listen queue (measured in the soak: connect timeouts, 502s).
        self._active = trio.Semaphore(max_connections)
        #: Connections opened so far: a test hook to check reuse and discard.
        self.opened = 0

    # -- streams -----------------------------------------------------------------------------

    async def _open_stream(self, backend: BackendURL) -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream(backend.host, backend.port)
        if backend.scheme != "https":
            return tcp
        if self._ssl_context is None:
            self._ssl_context = make_ssl_context(None)
        tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=backend.host)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls

    async def open_stream(self) -> trio.abc.Stream:
        """A fresh stream to the backend, with the connect timeout and a clear error."""
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await self._opener(self.backend)
        except trio.TooSlowError:
            raise BackendTimeout(
                f"timed out connecting to backend {self.backend} after {self.connect_timeout:g}s",
                before_response=True,
            ) from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            # trio reports a failed TLS handshake as BrokenResourceError from the SSL error:
            # the cause is the part that says what went wrong (e.g. certificate verify failed).
            detail = exc.__cause__ if exc.__cause__ is not None and not str(exc) else exc
            raise BackendError(
                f"cannot connect to backend {self.backend}: {detail}", before_response=True
            ) from exc
        self.opened += 1
        return stream

    async def _acquire(self) -> tuple[_Connection, bool]:
        if self._idle:
            return self._idle.pop(), True
        return _Connection(await self.open_stream()), False

    async def _release(self, conn: _Connection) -> None:
        if conn.reusable() and len(self._idle) < self._max_idle:
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            await _discard(conn)

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await _discard(conn)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    # -- wire --------------------------------------------------------------------------------

    async def _send(self, conn: _Connection, *events: h11.Event) -> None:
        data = b"".join(conn.h11.send(event) or b"" for event in events)
        if data:
            try:
                await conn.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise BackendError(
                    f"connection to backend {self.backend} lost while sending: {exc}",
                    before_response=True,
                ) from exc

    async def _feed(self, conn: _Connection) -> None:
        # A bare CancelScope rather than trio.fail_after: this runs for every read, and the
        # generator-based context manager was ~6% of a small request's profile.
        data: bytes | bytearray = b""
        with trio.CancelScope(deadline=trio.current_time() + self.read_timeout) as scope:
            try:
                data = await conn.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise BackendError(f"connection to backend {self.backend} lost: {exc}") from exc
        if scope.cancelled_caught:
            raise BackendTimeout(f"backend {self.backend} sent nothing for {self.read_timeout:g}s")
        conn.h11.receive_data(bytes(data))

    def _next_buffered_event(self, conn: _Connection) -> h11.Event | type[h11.NEED_DATA]:
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise BackendError(f"backend {self.backend} sent invalid HTTP: {exc}") from exc
        assert event is not h11.PAUSED  # a client never pipelines, so h11 never pauses it
        return event  # type: ignore[return-value]

    async def _next_event(self, conn: _Connection) -> h11.Event:
        while True:
            event = self._next_buffered_event(conn)
            if event is h11.NEED_DATA:
                await self._feed(conn)
                continue
            assert not isinstance(event, type)
            return event

    async def _exchange(
        self, conn: _Connection, request: h11.Request, body: Body
    ) -> BackendResponse:
        if body is None or isinstance(body, bytes):
            # One write for the whole request: a small request costs one syscall, not three.
            data = [h11.Data(data=body)] if body else []
            await self._send(conn, request, *data, h11.EndOfMessage())
        else:
            await self._send(conn, request)
            async for piece in body:
                if piece:
                    await self._send(conn, h11.Data(data=piece))
            await self._send(conn, h11.EndOfMessage())
        while True:
            try:
                event = await self._next_event(conn)
            except BackendError as exc:
                # Nothing of a response yet: the request may be retried on a fresh connection
                # when the failure was a pooled connection the backend had already closed.
                exc.before_response = True
                raise
            if type(event) is h11.Response:
                return BackendResponse(self, conn, event)
            if type(event) is h11.InformationalResponse:
                continue  # 100 Continue and friends: the final response follows
            if type(event) is h11.ConnectionClosed:
                raise BackendError(
                    f"backend {self.backend} closed the connection without a response",
                    before_response=True,
                )
            raise BackendError(f"backend sent an unexpected {type(event).__name__}")

    @asynccontextmanager
    async def request(
        self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: Body = None
    ) -> AsyncIterator[BackendResponse]:
        """Send one request and yield its response; the body is read inside the block.

        ``headers`` must include Host. Content-Length is set here for a ``bytes`` body; a
        streamed body is sent chunked unless the caller gave a Content-Length.
        """
        all_headers: Headers = list(headers)
        if isinstance(body, bytes) or body is None:
            if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
                all_headers.append((b"content-length", str(len(body or b"")).encode()))
        elif not any(name.lower() == b"content-length" for name, _ in all_headers):
            all_headers.append((b"transfer-encoding", b"chunked"))
        try:
            request = h11.Request(method=method, target=target, headers=all_headers)
        except h11.LocalProtocolError as exc:
            raise BackendError(f"cannot send this request: {exc}") from exc
        # A pooled connection may have been closed by the backend while idle; that is only
        # known once we use it. Retrying is safe when the body can be sent again.
        replayable = isinstance(body, bytes) or body is None
        await self._active.acquire()
        try:
            while True:
                conn, reused = await self._acquire()
                try:
                    response = await self._exchange(conn, request, body)
                except BackendError as exc:
                    await _discard(conn)
                    if reused and replayable and exc.before_response:
                        log.debug("pooled connection to %s was stale; retrying", self.backend)
                        continue
                    raise
                except BaseException:
                    await _discard(conn)
                    raise
                break
            try:
                yield response
            except BaseException:
                await _discard(conn)
                raise
            if conn.h11.their_state is h11.SEND_BODY:
                # The caller left the body unread: nobody knows where the next response starts.
                await _discard(conn)
            else:
                await self._release(conn)
        finally:
            self._active.release()


async def _discard(conn: _Connection) -> None:
    # Shielded: a cancelled request must still close its socket, or it would leak.
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(conn.stream)
