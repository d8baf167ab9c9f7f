"""A plain WebSocket relayed byte for byte: the client's socket spliced to one of the backend.

The backend is asked for the upgrade with the client's own key, and no byte the client sent
after its upgrade head reaches the backend before the backend's 101 has been checked (the
Accept matches the key, the subprotocol and extensions are among those offered). Any other
answer reaches the client as that status (502 for a 101 that is not valid) with
``Connection: close``, and both connections end there: a request pipelined behind a refused
upgrade is never read as a request by anyone.

After a valid 101 each direction is one task copying what one read returns in one write,
payload untouched, so a side that does not read stops the other side's reads (backpressure);
an idle socket holds two waiting tasks and no buffer. Each direction's ``FrameScanner`` reads
only frame headers: it is what lets shutdown stop a direction between two frames and put a
Close 1001 there, and what tells a Close from a dropped connection for the access line.

Every wait that follows the end of one direction (an EOF, a Close, shutdown) is bounded by
``close_timeout``; while both directions are open there is no deadline at all, because a kernel
socket may rightly stay silent for hours (TCP keepalive finds a dead peer instead). The backend
stream is closed on every way out, cancellation included; the client stream is the caller's.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus

import h11
import trio

from ._backend import BackendPool, socket_stream_of
from ._config import Config
from ._errors import BackendError
from ._frames import FrameScanner, close_frame, upgrade_answer_problem
from ._outcome import Outcome
from ._protocol import GOING_AWAY, first_header, strip_hop_by_hop
from ._redact import log_path
from ._relay import unless_client_leaves
from ._stats import Phase, Tally
from ._wsserver import wait_connection_gone

log = logging.getLogger("trio_httpws.splice")

#: Bytes asked of a socket per read: a large message crosses in few reads; an idle socket
#: holds none of it (the buffer exists only while a read returns and its write runs).
READ_SIZE = 64 * 1024
#: Bytes asked of the backend per read while its answer head is awaited.
HEAD_READ_SIZE = 16 * 1024

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
#: Request headers the upgrade gets from us, whatever the caller passed.
_OURS = frozenset({b"connection", b"upgrade", b"content-length", b"transfer-encoding"})


@dataclass
class SpliceResult:
    """What became of one spliced WebSocket, for the access line."""

    #: 101 once spliced; otherwise the status the client was answered with.
    status: int | None
    outcome: Outcome
    #: Wire bytes after the handshake heads, each way.
    bytes_to_client: int = 0
    bytes_to_backend: int = 0
    #: Payload of the data frames the backend sent the client: what the access line reports,
    #: as for the frame-parsing relays (``_stats`` defines it once).
    payload_to_client: int = 0
    payload_from_client: int = 0


class _Failed(Exception):
    """The upgrade cannot go on: the client gets ``status`` with ``text``."""

    def __init__(self, status: int, text: str, outcome: Outcome) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.outcome = outcome


async def splice_websocket(
    client: trio.abc.Stream,
    request: h11.Request,
    client_extra: bytes,
    target: str,
    headers: list[tuple[bytes, bytes]],
    pool: BackendPool,
    config: Config,
    shutdown: trio.Event,
    *,
    close_timeout: float = 5.0,
    tally: Tally | None = None,
) -> SpliceResult:
    """Relay the client's WebSocket upgrade ``request`` to ``target`` on the backend.

    ``headers`` are the request headers for the backend as the caller judged them (Host and the
    client's Sec-WebSocket-* included, hop-by-hop headers gone); ``client_extra`` is what the
    caller read past the upgrade head. Returns once both sides are done with; the caller then
    closes ``client``. Once spliced, ``tally`` counts the payload each way as it passes (the
    frame scanners count it).
    """
    shown = log_path(target)
    try:
        backend = await pool.open_stream()
    except BackendError as exc:
        log.warning("WebSocket %s: %s", shown, exc)
        text = "Bad Gateway: backend unreachable"
        if exc.status == 503:
            text = "Service Unavailable: backend busy"
        await _answer(client, exc.status, text, close_timeout)
        return SpliceResult(exc.status, Outcome.BACKEND_ERROR)
    try:
        keepalive(client)
        keepalive(backend)
        try:
            answered = await unless_client_leaves(
                partial(wait_connection_gone, client),
                partial(_upgrade, backend, request, target, headers, config, shown),
            )
        except _Failed as failed:
            if failed.status == 504 and failed.outcome is Outcome.BACKEND_ERROR:
                # Ours, not the backend's: its answer did not come within read_timeout.
                pool.stats.timeouts[Phase.READ] += 1
            await _answer(client, failed.status, failed.text, close_timeout)
            return SpliceResult(failed.status, failed.outcome)
        if answered is None:
            log.info("WebSocket %s: the client left before the backend answered", shown)
            return SpliceResult(499, Outcome.CLIENT_LEFT)
        head, backend_extra = answered
        log.info("splicing WebSocket connection to %s", shown)
        splice = _Splice(client, backend, close_timeout)
        if tally is not None:
            tally.to_client = splice.to_client.scanner
            tally.from_client = splice.to_backend.scanner
        splice.to_client.first = head + backend_extra
        splice.to_client.head = len(head)
        splice.to_backend.first = client_extra
        # The splice may last for days: this frame keeps no handshake leftovers meanwhile.
        del request, headers, head, backend_extra, client_extra
        await splice.run(shutdown)
        return SpliceResult(
            101,
            splice.outcome or Outcome.CLIENT_LEFT,
            splice.to_client.sent,
            splice.to_backend.sent,
            splice.to_client.scanner.payload,
            splice.to_backend.scanner.payload,
        )
    finally:
        # Shielded: a cancelled splice must still free its socket.
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(backend)


async def _upgrade(
    backend: trio.abc.Stream,
    request: h11.Request,
    target: str,
    headers: list[tuple[bytes, bytes]],
    config: Config,
    shown: str,
) -> tuple[bytes, bytes]:
    """Ask the backend for the upgrade and check its answer: the 101 head the client gets, and
    the bytes the backend sent past its own head. Raises ``_Failed``."""
    forwarded = [
        (name, value)
        for name, value in headers
        if (lname := name.lower()) not in _OURS
        and (config.ws_compression or lname != b"sec-websocket-extensions")
    ]
    key = (
        first_header(forwarded, b"sec-websocket-key")
        or first_header(request.headers, b"sec-websocket-key")
        or ""
    ).encode("latin-1")
    answer, backend_extra = await _handshake(backend, target, forwarded, config, shown)
    if answer.status_code != 101:
        log.info("backend refused WebSocket %s with HTTP %d", shown, answer.status_code)
        raise _Failed(
            answer.status_code,
            f"backend refused: HTTP {answer.status_code}",
            Outcome.BACKEND_REFUSED,
        )
    problem = upgrade_answer_problem(
        answer.status_code,
        answer.headers.raw_items(),
        key,
        _values(forwarded, b"sec-websocket-protocol"),
        _values(forwarded, b"sec-websocket-extensions"),
    )
    if problem is not None:
        log.warning("WebSocket %s: invalid upgrade answer from backend: %s", shown, problem)
        raise _Failed(502, "Bad Gateway: backend handshake failed", Outcome.BACKEND_ERROR)
    return _switching_head(answer), backend_extra


async def _handshake(
    backend: trio.abc.Stream,
    target: str,
    headers: list[tuple[bytes, bytes]],
    config: Config,
    shown: str,
) -> tuple[h11.InformationalResponse | h11.Response, bytes]:
    """Send the upgrade; the backend's final answer head and the bytes read past it."""
    conn = h11.Connection(h11.CLIENT)
    try:
        head = conn.send(
            h11.Request(
                method="GET",
                target=target,
                headers=[*headers, (b"connection", b"Upgrade"), (b"upgrade", b"websocket")],
            )
        )
        head = (head or b"") + (conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError as exc:
        log.warning("WebSocket %s: cannot send this upgrade: %s", shown, exc)
        raise _Failed(502, "Bad Gateway: backend handshake failed", Outcome.BACKEND_ERROR) from None
    try:
        with trio.fail_after(config.read_timeout):
            await backend.send_all(head)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await backend.receive_some(HEAD_READ_SIZE)))
                elif isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                    continue  # 100 Continue and friends: the final answer follows
                elif isinstance(event, (h11.InformationalResponse, h11.Response)):
                    return event, conn.trailing_data[0]
                else:
                    raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")
    except trio.TooSlowError:
        log.warning(
            "WebSocket handshake with backend for %s: no answer in %gs", shown, config.read_timeout
        )
        raise _Failed(
            504, "Gateway Timeout: backend handshake timed out", Outcome.BACKEND_ERROR
        ) from None
    except (h11.RemoteProtocolError, *_STREAM_ERRORS) as exc:
        log.warning("WebSocket handshake with backend for %s failed: %r", shown, exc)
        raise _Failed(502, "Bad Gateway: backend handshake failed", Outcome.BACKEND_ERROR) from None


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The comma-separated items of every ``name`` header."""
    return [
        item.strip()
        for n, v in headers
        if n.lower() == name
        for item in v.decode("latin-1").split(",")
        if item.strip()
    ]


def _switching_head(answer: h11.InformationalResponse | h11.Response) -> bytes:
    """The backend's 101 as the client gets it: its own headers, our hop-by-hop ones."""
    lines = [b"HTTP/1.1 101 ", answer.reason or b"Switching Protocols", b"\r\n"]
    for name, value in strip_hop_by_hop(answer.headers.raw_items()):
        lines += [name, b": ", value, b"\r\n"]
    lines.append(b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    return b"".join(lines)


async def _answer(client: trio.abc.Stream, status: int, text: str, grace: float) -> None:
    """Answer the client with ``status`` and end the connection (``Connection: close``)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    body = b"" if status in (204, 304) else text.encode("utf-8")
    head = f"HTTP/1.1 {status} {reason}\r\n"
    if status not in (204, 304):
        head += f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
    head += "Connection: close\r\n\r\n"
    with trio.move_on_after(grace), contextlib.suppress(*_STREAM_ERRORS):
        await client.send_all(head.encode("latin-1") + body)


def keepalive(stream: trio.abc.Stream) -> None:
    """SO_KEEPALIVE on the socket under ``stream``: the kernel finds a peer that vanished."""
    under = socket_stream_of(stream)
    if under is not None:
        with contextlib.suppress(OSError):
            under.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


#: A direction's states at shutdown: copying; copying up to the next frame boundary; past it
#: (our Close went on, or a Close of theirs already had), reading and dropping until the
#: sender's own Close.
_OPEN, _STOPPING, _STOPPED = 0, 1, 2


class _Direction:
    """One way of the splice: its streams, its frame scanner, what it sent."""

    __slots__ = (
        "close_passed",
        "done",
        "dst",
        "first",
        "head",
        "scanner",
        "sent",
        "src",
        "state",
        "to_client",
        "waiting",
    )

    def __init__(self, src: trio.abc.Stream, dst: trio.abc.Stream, *, to_client: bool) -> None:
        self.src = src
        self.dst = dst
        self.to_client = to_client
        # The client masks every frame, the backend none.
        self.scanner = FrameScanner(masked=not to_client)
        #: What goes to ``dst`` before anything read (a 101 head of ``head`` bytes, then frames).
        self.first = b""
        self.head = 0
        self.sent = 0
        #: A whole Close frame (from ``src`` or ours) went to ``dst``.
        self.close_passed = False
        self.state = _OPEN
        #: The pump waits in a read: everything before it has gone on.
        self.waiting = False
        self.done = False


class _Splice:
    __slots__ = (
        "close_timeout",
        "closes",
        "finished",
        "nursery",
        "outcome",
        "to_backend",
        "to_client",
    )

    def __init__(
        self, client: trio.abc.Stream, backend: trio.abc.Stream, close_timeout: float
    ) -> None:
        self.to_client = _Direction(backend, client, to_client=True)
        self.to_backend = _Direction(client, backend, to_client=False)
        self.close_timeout = close_timeout
        #: The first thing that ended the WebSocket (None while both sides are open).
        self.outcome: Outcome | None = None
        self.closes = 0
        self.finished = 0
        self.nursery: trio.Nursery | None = None

    async def run(self, shutdown: trio.Event) -> None:
        """Copy both ways (each starting with its ``first`` bytes) until both are done."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._pump, self.to_client)
            nursery.start_soon(self._pump, self.to_backend)
            # The caller's task watches for shutdown: no third task per socket.
            await shutdown.wait()
            self._ended(Outcome.SHUTDOWN)
            self._bound()
            waiting = []
            for way in (self.to_backend, self.to_client):
                if way.done or way.state != _OPEN:
                    continue
                if way.waiting and way.scanner.at_boundary:
                    # Its pump waits for the next frame: whatever comes now is past the boundary.
                    way.state = _STOPPED
                    waiting.append(way)
                else:
                    way.state = _STOPPING  # its pump sends our Close at the frame's end
            for way in waiting:
                # Written here while that pump only reads: one writer per stream at a time.
                if await self._send_close(way) and way.scanner.close_seen:
                    self._way_done(way)  # the sender had closed already: nothing to wait for
            await trio.sleep_forever()  # the pumps cancel this when both ways are done

    def _ended(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome

    def _bound(self) -> None:
        """What is left of the splice gets ``close_timeout`` from now."""
        assert self.nursery is not None
        scope = self.nursery.cancel_scope
        scope.deadline = min(scope.deadline, trio.current_time() + self.close_timeout)

    def _end(self) -> None:
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    def _way_done(self, way: _Direction) -> None:
        if not way.done:
            way.done = True
            self.finished += 1
            if self.finished == 2:
                self._end()

    async def _pump(self, way: _Direction) -> None:
        try:
            await self._copy(way)
        finally:
            self._way_done(way)

    async def _copy(self, way: _Direction) -> None:
        first, way.first = way.first, b""
        if first and not await self._take(way, first, way.head):
            return
        del first
        src, scanner = way.src, way.scanner
        while True:
            if way.state == _STOPPING and scanner.at_boundary:
                way.state = _STOPPED
                if not await self._send_close(way):
                    return
            if way.state == _STOPPED and scanner.close_seen:
                return  # the sender's Close came: this way is over
            way.waiting = True
            try:
                data = await src.receive_some(READ_SIZE)
            except _STREAM_ERRORS:
                data = b""  # a reset ends this way as an EOF does
            way.waiting = False
            if not data:
                if way.state == _OPEN:
                    await self._eof(way)
                return
            if not await self._take(way, data, 0):
                return
            # Dropped before the next read: an idle socket holds no buffer.
            del data

    async def _take(self, way: _Direction, data: bytes | bytearray, head: int) -> bool:
        """Pass on what one read returned (after a ``head`` of ours that is not frames).

        False when this way is done.
        """
        scanner = way.scanner
        state = way.state
        if state == _OPEN:
            scanner.feed(memoryview(data)[head:] if head else data)
            if not await self._send(way, data, head):
                return False
            if scanner.close_seen and not way.close_passed:
                way.close_passed = True
                self._ended(Outcome.BACKEND_CLOSE if way.to_client else Outcome.CLIENT_CLOSE)
                self.closes += 1
                if self.closes == 2:
                    self._end()  # both Close frames went across: the WebSocket is over
                    return False
                self._bound()
            return True
        view = memoryview(data)
        if state == _STOPPING:
            # Up to the end of the frame in progress, then our Close.
            upto = head + scanner.until_boundary(view[head:])
            if upto and not await self._send(way, view[:upto], head):
                return False
            if not scanner.at_boundary:
                return True
            # Everything scanned so far went on: a Close of theirs among it needs no second one.
            way.close_passed = scanner.close_seen
            way.state = _STOPPED
            scanner.feed(view[upto:])
            return await self._send_close(way)
        scanner.feed(view[head:])  # stopped: only watched, for the sender's Close
        return True

    async def _send_close(self, way: _Direction) -> bool:
        """Our Close 1001 to ``dst`` (unless a Close already went there)."""
        if way.close_passed:
            return True
        way.close_passed = True
        if way.to_client:
            frame = close_frame(GOING_AWAY, "server shutting down", masked=False)
        else:
            frame = close_frame(GOING_AWAY, "proxy shutting down", masked=True)
        return await self._send(way, frame)

    async def _send(
        self, way: _Direction, data: bytes | bytearray | memoryview, head: int = 0
    ) -> bool:
        """Write ``data`` on; False (and the splice ended) when the receiving side is gone."""
        try:
            await way.dst.send_all(data)
        except _STREAM_ERRORS:
            self._ended(Outcome.CLIENT_LEFT if way.to_client else Outcome.BACKEND_LOST)
            self._end()
            return False
        way.sent += len(data) - head
        return True

    async def _eof(self, way: _Direction) -> None:
        """``src`` ended (or broke): say so to ``dst``; the other way gets ``close_timeout``."""
        if not way.scanner.close_seen:
            self._ended(Outcome.BACKEND_LOST if way.to_client else Outcome.CLIENT_LEFT)
        self._bound()
        dst = way.dst
        if isinstance(dst, trio.abc.HalfCloseableStream):
            with contextlib.suppress(*_STREAM_ERRORS):
                await dst.send_eof()
        else:
            # TLS cannot half-close: the whole stream goes (aclose closes even if cancelled).
            with contextlib.suppress(*_STREAM_ERRORS):
                await dst.aclose()
