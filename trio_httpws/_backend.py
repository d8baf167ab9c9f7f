"""An HTTP/1.1 client for the one backend: h11 over trio streams, with a keep-alive pool.

A connection goes back to the pool only after a request and its response were both completely
exchanged. Anything else (an exception, a cancellation, a half-read body, a protocol error) means
we no longer know what is on the wire, so the connection is closed instead: it is never reused
half-read.

A request reaches the backend at most once unless replaying it is harmless: an idle connection
the backend already closed is found (its socket is readable) and dropped before anything is sent
on it, and a failed request is sent again only when it is idempotent, its body is still in hand,
the pooled connection was lost before a single byte of a response came back, and no timeout
was involved.
"""

from __future__ import annotations

import logging
import select
import ssl
import sys
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager

import h11
import trio

from ._config import BackendURL
from ._errors import BackendBusy, BackendError, BackendTimeout
from ._fastsocket import FastSocketStream
from ._stats import Phase, PoolStats

log = logging.getLogger("trio_httpws.backend")

Headers = list[tuple[bytes, bytes]]
StreamOpener = Callable[[BackendURL], Awaitable[trio.abc.Stream]]
Body = bytes | AsyncIterable[bytes] | None

#: Bytes asked of the socket per read. 64 KiB matches the frame size, so a busy download fills
#: each frame from one read without a second copy into a join.
READ_SIZE = 65536
#: Bytes handed to the socket under one write deadline: ``write_timeout`` bounds the time the
#: backend may take to accept this much, so a large body is not one all-or-nothing deadline.
WRITE_SIZE = 256 * 1024

#: A Content-Length body with more than this many bytes still to come is read past h11.
RAW_BODY_MIN = 1024 * 1024

#: Methods whose repetition has the effect of one request (RFC 9110 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def make_ssl_context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


class _ConnectionLost(BackendError):
    """The connection was reset or closed by the backend (not a timeout, not invalid HTTP)."""


def may_replay(method: str, body: Body, reused: bool, exc: BaseException) -> bool:
    """Whether a request that failed with ``exc`` may be sent again on a fresh connection.

    Only the race of a keep-alive connection the backend closed just as we reused it: anything
    else (a timeout, a response already begun, a streamed body we no longer hold, a method whose
    repetition has effects) could run the request twice or cannot be repeated at all.
    """
    return (
        reused
        and method in IDEMPOTENT_METHODS
        and (body is None or isinstance(body, bytes))
        and isinstance(exc, _ConnectionLost)
        and exc.before_response
    )


def socket_stream_of(stream: trio.abc.Stream) -> trio.SocketStream | FastSocketStream | None:
    """The socket stream under ``stream`` (under its TLS layers), or None for a stream that is
    no socket (memory streams in tests)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream if isinstance(stream, (trio.SocketStream, FastSocketStream)) else None


def _socket_readable(stream: trio.abc.Stream) -> bool:
    """True when an idle connection's socket has something to read: EOF, a reset, or stray bytes.

    An idle keep-alive connection should have nothing to say; when it has, the backend closed it
    (or broke the protocol) and sending a request on it would be lost. Streams that are not
    sockets (memory streams in tests) cannot be checked and count as not readable.
    """
    under = socket_stream_of(stream)
    if under is None:
        return False
    fd = under.socket.fileno()
    if fd < 0:
        return True
    if sys.platform != "win32":
        # poll, not select: select cannot watch a descriptor above FD_SETSIZE (1024), which a
        # proxy holding many sockets reaches. (A platform check, not hasattr: mypy then checks
        # each branch for its own platform.)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # Windows: select takes any socket
    return bool(readable)


class _Connection:
    __slots__ = ("closed", "h11", "response_bytes", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        #: Whether any byte arrived since the current request was sent.
        self.response_bytes = False
        self.closed = False

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
        #: The body's length when h11 frames it by Content-Length (it validated the header);
        #: None for a chunked body. A response without a body (to HEAD, a 304) may still name a
        #: length here: h11 ends that body before any read.
        self.content_length: int | None = None
        #: Body bytes h11 handed over so far (on the response, not per iteration of it).
        self._body_seen = 0
        if conn.h11.their_state is h11.SEND_BODY:
            lengths = [v for n, v in self.headers if n.lower() == b"content-length"]
            chunked = any(n.lower() == b"transfer-encoding" for n, _ in self.headers)
            if lengths and not chunked:
                self.content_length = int(lengths[0])

    async def iter_chunks(self, read_size: int = READ_SIZE) -> AsyncGenerator[bytes, None]:
        """Yield the body as it arrives: each chunk is all the body bytes one read produced.

        The next read from the backend happens only when the consumer asks for the next chunk,
        so a slow consumer slows the backend down instead of filling memory. Chunk sizes follow
        the reads; see ``iter_pieces`` for sizes that follow the backend's own chunks.

        A Content-Length body with more than ``RAW_BODY_MIN`` bytes still to come is read
        straight from the stream, past h11: h11 would copy every read into its buffer and out
        again (14 % of a reverse-proxied download's CPU). h11 then never sees the body end, so
        the connection is closed afterwards instead of reused: one new connection per large
        body.
        """
        while True:
            chunk, ended = self.take_buffered()
            if chunk:
                yield chunk
            if ended:
                return
            left = self._raw_body_left()
            if left is not None and left > RAW_BODY_MIN:
                while left > 0:
                    raw = await self._raw_read(read_size, left)
                    left -= len(raw)
                    yield bytes(raw)
                return
            await self._pool._feed(self._conn, read_size)

    def take_buffered(self) -> tuple[bytes, bool]:
        """The body bytes that already arrived (no I/O), and whether the body ended with them.

        Lets a caller write a small response's head and body at once. After ``True`` the body
        is over: do not iterate it again. After ``False``, ``iter_chunks`` goes on from here.
        """
        conn = self._conn
        parts: list[bytes] = []
        while True:
            event = self._pool._next_buffered_event(conn)
            if type(event) is h11.Data:
                data = bytes(event.data)
                self._body_seen += len(data)
                parts.append(data)
                continue
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            if type(event) is h11.EndOfMessage:
                return body, True
            if event is h11.NEED_DATA:
                return body, False
            raise BackendError(f"backend sent an unexpected {type(event).__name__} in a body")

    def _raw_body_left(self) -> int | None:
        """Body bytes still to come when h11 frames the body by Content-Length, else None."""
        if self.content_length is None:
            return None
        return self.content_length - self._body_seen

    async def _raw_read(self, max_bytes: int, left: int) -> bytes | bytearray:
        """One read of a body past h11, ``left`` bytes before its end; never empty."""
        raw = await self._pool._receive(self._conn, min(max_bytes, left))
        if not raw:
            raise BackendError(
                f"backend {self._pool.backend} closed the connection {left} bytes before the "
                "end of the body"
            )
        return raw

    async def iter_pieces(self, limit: int) -> AsyncGenerator[bytes, None]:
        """Yield the body in pieces of the backend's making, none over ``limit`` bytes.

        A chunked body gives one piece per HTTP chunk, a chunk over ``limit`` bytes in
        ``limit``-sized pieces and a shorter last one; any other body (Content-Length, or
        delimited by the connection closing) in ``limit``-sized pieces and a shorter last one.
        Either way the pieces depend only on the bytes the backend sent, never on how the
        network cut them into reads, and a piece is yielded as soon as it is complete. If the
        body breaks off, the bytes that arrived are yielded before the ``BackendError``. Reads
        are pulled by the consumer, as in ``iter_chunks``, and a large Content-Length body is
        read past h11 as there (each read asks for the rest of the current piece, so a read
        that is a whole piece by itself goes on without a copy).
        """
        conn = self._conn
        held = bytearray()
        try:
            while True:
                event = self._pool._next_buffered_event(conn)
                if type(event) is h11.Data:
                    data = event.data
                    self._body_seen += len(data)
                    if not held and (len(data) == limit or (event.chunk_end and len(data) < limit)):
                        yield bytes(data)  # a whole piece in one event: no copy into ``held``
                        continue
                    held += data
                    while len(held) >= limit:
                        with memoryview(held) as view:
                            piece = bytes(view[:limit])
                        del held[:limit]
                        yield piece
                    if event.chunk_end and held:
                        piece = bytes(held)
                        held.clear()
                        yield piece
                    continue
                if type(event) is h11.EndOfMessage:
                    if held:
                        yield bytes(held)
                    return
                if event is h11.NEED_DATA:
                    left = self._raw_body_left()
                    if left is not None and left > RAW_BODY_MIN:
                        while left > 0:
                            raw = await self._raw_read(limit - len(held), left)
                            left -= len(raw)
                            # A piece is complete at ``limit`` bytes, or at the end of the body.
                            if not held and (len(raw) == limit or not left):
                                yield bytes(raw)  # no copy when the read gave bytes
                                continue
                            held += raw
                            if len(held) == limit or not left:
                                piece = bytes(held)
                                held.clear()
                                yield piece
                        return
                    await self._pool._feed(conn)
                    continue
                raise BackendError(f"backend sent an unexpected {type(event).__name__} in a body")
        except BackendError:
            # The body broke off: what did arrive still goes to the consumer, then the error.
            if held:
                yield bytes(held)
            raise

    async def discard(self, limit: int) -> None:
        """Read the body away (a redirect's) so that the connection can be reused.

        Past ``limit`` bytes it stops reading: the connection is then closed, not reused.
        """
        size = 0
        async with aclosing(self.iter_chunks()) as chunks:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    return

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
        write_timeout: float = 60.0,
        pool_timeout: float = 60.0,
        stats: PoolStats | None = None,
    ) -> None:
        self.backend = backend
        #: What the metrics show of this pool (the ``Proxy``'s ``Stats`` holds it).
        self.stats = stats if stats is not None else PoolStats()
        self._opener = opener or self._open_stream
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.pool_timeout = pool_timeout
        self._max_connections = max_connections
        self._idle: list[_Connection] = []
        # Requests beyond this many at once wait for a slot instead of opening ever more
        # connections: 2000 requests in flight must not become a burst of 2000 connects that
        # overflows the backend's listen queue (measured in the soak: connect timeouts, 502s).
        # The wait is bounded by pool_timeout, then answered with a 503.
        self._active = trio.Semaphore(max_connections)
        #: Connections opened so far: a test hook to check reuse and discard.
        self.opened = 0

    # -- streams -----------------------------------------------------------------------------

    async def _open_stream(self, backend: BackendURL) -> trio.abc.Stream:
        tcp = FastSocketStream.taking_over(await trio.open_tcp_stream(backend.host, backend.port))
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
            self.stats.timeouts[Phase.CONNECT] += 1
            raise BackendTimeout(
                f"timed out connecting to backend {self.backend} after {self.connect_timeout:g}s",
                before_response=True,
            ) from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            # trio reports a failed TLS handshake as BrokenResourceError from the SSL error:
            # the cause is the part that says what went wrong (e.g. certificate verify failed).
            detail = exc.__cause__ if exc.__cause__ is not None and not str(exc) else exc
            self.stats.connect_failures += 1
            raise BackendError(
                f"cannot connect to backend {self.backend}: {detail}", before_response=True
            ) from exc
        self.opened += 1
        return stream

    async def _connect(self) -> _Connection:
        conn = _Connection(await self.open_stream())
        self.stats.open += 1
        return conn

    async def _acquire(self) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            self.stats.idle -= 1
            if not _socket_readable(conn.stream):
                return conn, True
            log.debug("idle connection to %s was closed by the backend; dropped", self.backend)
            await self._discard(conn)
        return await self._connect(), False

    async def _acquire_slot(self) -> None:
        # A free slot is the common case: taken without a cancel scope and a trip through the
        # scheduler (~4% of a small request's CPU); a request already cancelled still stops
        # here, before it takes a connection.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._active.acquire_nowait()
            return
        except trio.WouldBlock:
            pass
        started = time.perf_counter()
        try:
            with trio.move_on_after(self.pool_timeout):
                await self._active.acquire()
                return
        finally:
            self.stats.slot_wait.observe(time.perf_counter() - started)
        self.stats.timeouts[Phase.SLOT] += 1
        raise BackendBusy(
            f"all {self._max_connections} connections to backend {self.backend} stayed busy "
            f"for {self.pool_timeout:g}s",
            before_response=True,
        )

    async def _release(self, conn: _Connection) -> None:
        if conn.reusable() and len(self._idle) < self._max_idle:
            conn.h11.start_next_cycle()
            self._idle.append(conn)
            self.stats.idle += 1
        else:
            await self._discard(conn)

    async def _discard(self, conn: _Connection) -> None:
        # Once per connection in the count, however many ways out close it.
        if not conn.closed:
            conn.closed = True
            self.stats.open -= 1
        await _discard(conn)

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        self.stats.idle -= len(idle)
        for conn in idle:
            await self._discard(conn)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    # -- wire --------------------------------------------------------------------------------

    async def _send(self, conn: _Connection, *events: h11.Event) -> None:
        # h11 hands a body back uncopied (passthrough); joining only small pieces keeps a small
        # request to one write without copying a large body on the event loop.
        pieces = [p for e in events for p in conn.h11.send_with_data_passthrough(e) or ()]
        if sum(map(len, pieces)) <= WRITE_SIZE:
            pieces = [b"".join(pieces)]
        for piece in pieces:
            await self._send_piece(conn, memoryview(piece))

    async def _send_piece(self, conn: _Connection, view: memoryview) -> None:
        for start in range(0, len(view), WRITE_SIZE):
            with trio.CancelScope(deadline=trio.current_time() + self.write_timeout) as scope:
                try:
                    await conn.stream.send_all(view[start : start + WRITE_SIZE])
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise _ConnectionLost(
                        f"connection to backend {self.backend} lost while sending: {exc}",
                        before_response=True,
                    ) from exc
            if scope.cancelled_caught:
                self.stats.timeouts[Phase.WRITE] += 1
                raise BackendTimeout(
                    f"backend {self.backend} stopped reading the request for "
                    f"{self.write_timeout:g}s",
                    before_response=True,
                )

    async def _receive(self, conn: _Connection, read_size: int) -> bytes | bytearray:
        """One read from the backend under ``read_timeout``; empty at the end of the stream."""
        # A bare CancelScope rather than trio.fail_after: this runs for every read, and the
        # generator-based context manager was ~6% of a small request's profile.
        data: bytes | bytearray = b""
        with trio.CancelScope(deadline=trio.current_time() + self.read_timeout) as scope:
            try:
                data = await conn.stream.receive_some(read_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise _ConnectionLost(f"connection to backend {self.backend} lost: {exc}") from exc
        if scope.cancelled_caught:
            self.stats.timeouts[Phase.READ] += 1
            raise BackendTimeout(f"backend {self.backend} sent nothing for {self.read_timeout:g}s")
        return data

    async def _feed(self, conn: _Connection, read_size: int = READ_SIZE) -> None:
        data = await self._receive(conn, read_size)
        if data:
            conn.response_bytes = True
        elif not conn.response_bytes:
            # h11 calls this invalid HTTP; it is the backend closing a kept-alive connection.
            raise _ConnectionLost(
                f"backend {self.backend} closed the connection without a response",
                before_response=True,
            )
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
        conn.response_bytes = False
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
                exc.before_response = not conn.response_bytes
                raise
            if type(event) is h11.Response:
                return BackendResponse(self, conn, event)
            if type(event) is h11.InformationalResponse:
                continue  # 100 Continue and friends: the final response follows
            if type(event) is h11.ConnectionClosed:
                raise _ConnectionLost(
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
        await self._acquire_slot()
        try:
            started = time.perf_counter()
            conn, reused = await self._acquire()
            try:
                try:
                    response = await self._exchange(conn, request, body)
                except BackendError as exc:
                    # The backend may close an idle connection just after our readability
                    # check: the one case where sending the request again is right.
                    if not may_replay(method, body, reused, exc):
                        raise
                    log.debug("pooled connection to %s was lost; retrying once", self.backend)
                    await self._discard(conn)
                    conn = await self._connect()
                    response = await self._exchange(conn, request, body)
            except BaseException:
                await self._discard(conn)
                raise
            self.stats.first_byte.observe(time.perf_counter() - started)
            try:
                yield response
            except BaseException:
                await self._discard(conn)
                raise
            if conn.h11.their_state is h11.SEND_BODY:
                # The caller left the body unread: nobody knows where the next response starts.
                await self._discard(conn)
            else:
                await self._release(conn)
        finally:
            self._active.release()


async def _discard(conn: _Connection) -> None:
    # Shielded: a cancelled request must still close its socket, or it would leak.
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(conn.stream)
