"""One client socket on ``/http_over_websocket``: a nursery multiplexing proxied requests.

Shape of a session::

    reader task  --(request message)-->  one task per request, own cancel scope
                                              |  backend response chunks (pulled, not pushed)
    writer task  <--(frames, bounded channel)-+
       |
    client socket

The reader never waits on the backend. Every request task pushes its frames into one bounded
channel that a single writer drains into the socket, so a client that reads slowly fills the
channel, the request tasks block on it, stop reading from their backend connections, and TCP
pushes back on the backend: memory stays bounded whatever the body size. When nothing is queued
and nobody is writing, a request task writes its frame itself instead (no hop through the
writer task); it then waits for the socket as the writer would, so order and bounds are the same.

The other direction is bounded too: the request bodies a socket holds (parsed, waiting for a slot
or being sent) are counted, and the reader stops reading the socket while one more message would
take them past ``max_pending_bytes``.

A large message must not stall the other sockets. Under hypercorn it comes in parts of ~1 MiB and
its body is decoded part by part (``_parts``); a whole message above ``thread_parse_threshold``
(trio-websocket, other hypercorn versions) is parsed in a worker thread, in steps that let the
event loop (every other socket) run in between.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus

import trio
from trio.lowlevel import RunVar

from ._access import log_access
from ._auth import AuthCookies
from ._backend import READ_SIZE, BackendPool, BackendResponse
from ._config import Config
from ._errors import AuthUrlError, BackendError, ClientDisconnected
from ._outcome import Outcome, client_ended, logged_status
from ._parts import MessageAssembler, parse_large_client_message
from ._protocol import (
    GOING_AWAY,
    MAX_FRAME_DATA,
    UNCAUGHT_ERROR_TEXT,
    CancelRequest,
    ErrorFrame,
    ProxyRequest,
    cookie_headers,
    data_frame,
    error_frame,
    first_frame,
    first_header,
    parse_client_message,
    response_headers,
    upgrade_request_headers,
    xsrf_cookie_value,
)
from ._redact import log_path
from ._redirects import REDIRECT_STATUSES, Hop, first_hop, next_hop, origin_of
from ._socket import ClientSocket, Upgrade
from ._stats import Flow, Refused, Stats, Tally, WsKind, payload_size

log = logging.getLogger("trio_httpws.session")

#: Frames waiting for the socket, across all requests of one session (see response_buffer_bound).
FRAME_QUEUE = 16

#: A redirect's own body is read away (so its connection can be reused) up to this size.
REDIRECT_BODY_LIMIT = 64 * 1024


@dataclass
class _Progress:
    """How far one request got: for its error frame and its access-log line."""

    #: The status of the final response (0 until there is one).
    status: int = 0
    #: Body bytes put into frames.
    sent: int = 0
    #: The first frame (status and headers) went out.
    started: bool = False


def response_buffer_bound(max_in_flight: int) -> int:
    """The most response body bytes one session holds, whatever the client's reading speed.

    The frame queue plus the frame being written (64 KiB of body each), and per request the
    held-back piece and the piece being framed (64 KiB at most each): 9.1 MiB with the default
    64 requests in flight (4/3 as much once base64-encoded in frames).
    """
    return (FRAME_QUEUE + 1) * MAX_FRAME_DATA + max_in_flight * 2 * READ_SIZE


#: Large messages parsed at once, over all sockets: each parse holds about twice its message.
PARSE_THREADS = 2
_parse_limiter: RunVar[trio.CapacityLimiter] = RunVar("trio_httpws_parse_limiter")


def _limiter() -> trio.CapacityLimiter:
    try:
        return _parse_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(PARSE_THREADS)
        _parse_limiter.set(limiter)
        return limiter


@dataclass
class _Flight:
    """One request in flight."""

    message_id_json: str
    scope: trio.CancelScope
    cancelled_by_client: bool = False
    #: Response body bytes read from the backend and not yet queued for the socket.
    held: int = 0
    #: The request task is writing one of its frames to the socket itself.
    writing: bool = False
    #: The client cancelled while it was: the cancel waits until the frame is written whole.
    cancel_after_write: bool = False


class HttpOverWsSession:
    """Serves one client socket until it closes; then every request still running is cancelled."""

    def __init__(
        self,
        sock: ClientSocket,
        upgrade: Upgrade,
        config: Config,
        pool: BackendPool,
        shutdown: trio.Event | None = None,
        *,
        stats: Stats | None = None,
        tally: Tally | None = None,
    ) -> None:
        self._sock = sock
        #: The proxy's counts, and this socket's payload each way (``_stats``).
        self._stats = stats if stats is not None else Stats()
        self._tally = tally if tally is not None else Tally(WsKind.TUNNEL)
        self._to_client = self._tally.to_client
        self._from_client = self._tally.from_client
        self._config = config
        self._pool = pool
        self._shutdown = shutdown
        self._auth = AuthCookies(pool, upgrade, config.auth_timeout)
        self._origin_class = config.origin_policy.classify(
            upgrade.origin, upgrade.scheme, upgrade.host
        ).value
        host = upgrade.host.encode("latin-1")
        self._base_headers = [(b"host", host), *upgrade_request_headers(upgrade.headers)]
        # A redirect is followed when it names the backend as it was addressed (the Host we
        # send) or by its own address.
        backend = config.backend_url
        self._origins = (
            origin_of(upgrade.scheme, upgrade.host),
            (backend.scheme, backend.host.lower(), backend.port),
        )
        self._flights: dict[str, _Flight] = {}
        #: How the socket ended, for the access line.
        self.outcome = Outcome.ERROR
        self._slots = trio.Semaphore(config.max_in_flight)
        # Requests waiting for a slot are tasks too; past this many the reader stops reading, so
        # a client cannot make us hold an unbounded number of parsed requests.
        self._queued = trio.Semaphore(config.max_in_flight * 4)
        # None is the writer's cue to close the socket as "going away", after the frames before it.
        # Each frame travels with the number of body bytes it carries, for the accounting below.
        self._frames_in, self._frames_out = trio.open_memory_channel[tuple[str, int] | None](
            FRAME_QUEUE
        )
        #: Items put in the channel and not yet written. Not the channel's own count: that drops
        #: as the writer takes an item, before the item is written.
        self._frames_pending = 0
        #: Held by whoever writes to the socket: the writer, or a request task writing its own
        #: frame (one at a time: trio-websocket's send is not safe to run concurrently).
        self._socket_lock = trio.Lock()
        self._session_scope: trio.CancelScope | None = None
        #: Request body bytes held (parsed and not finished); the reader waits above the budget.
        self.pending_request_bytes = 0
        self.peak_pending_request_bytes = 0
        self._request_bytes_freed = trio.Event()
        # Response body bytes queued for the socket (see buffered_response_bytes).
        self._queued_bytes = 0
        self.peak_buffered_response_bytes = 0
        #: Whole messages parsed in a worker thread (a test hook).
        self.thread_parses = 0
        #: Set once shutdown began and the last request finished.
        self._drained: trio.Event | None = None

    @property
    def buffered_response_bytes(self) -> int:
        """Response body bytes read from the backend and not yet handed to the client socket."""
        return self._queued_bytes + sum(f.held for f in self._flights.values())

    def _note_response_bytes(self) -> None:
        self.peak_buffered_response_bytes = max(
            self.peak_buffered_response_bytes, self.buffered_response_bytes
        )

    async def _send_frame(
        self, frame: str, body_bytes: int = 0, flight: _Flight | None = None
    ) -> None:
        if flight is not None and not self._frames_pending and not self._socket_lock.locked():
            # Nothing queued ahead and the socket idle: write it from this task, saving the
            # writer task's wake-up per frame. Frames already queued go first, so one request's
            # frames keep their order.
            await self._write_own_frame(frame, flight)
            return
        self._frames_pending += 1
        try:
            await self._frames_in.send((frame, body_bytes))
        except BaseException:
            self._frames_pending -= 1  # cancelled while the channel was full: not queued
            raise
        self._queued_bytes += body_bytes

    async def _write_own_frame(self, frame: str, flight: _Flight) -> None:
        self._socket_lock.acquire_nowait()
        flight.writing = True
        try:
            await self._sock.send(frame)
            self._to_client.payload += payload_size(frame)
        except ClientDisconnected:
            # As in the writer: the socket is gone, and the session with it.
            assert self._session_scope is not None
            self._session_scope.cancel()
        finally:
            flight.writing = False
            self._socket_lock.release()
        if flight.cancel_after_write:
            flight.scope.cancel()
        if self._session_scope is not None and self._session_scope.cancel_called:
            await trio.lowlevel.checkpoint()  # raises Cancelled: stop this request here

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._session_scope = nursery.cancel_scope
                nursery.start_soon(self._writer, nursery.cancel_scope)
                if self._shutdown is not None:
                    nursery.start_soon(self._watch_shutdown, nursery.cancel_scope)
                await self._reader(nursery)
                nursery.cancel_scope.cancel()
        finally:
            self._frames_in.close()
            self._frames_out.close()

    # -- tasks -------------------------------------------------------------------------------

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                parsed = await self._receive_parsed()
            except ClientDisconnected as exc:
                if self.outcome is Outcome.ERROR:
                    self.outcome = client_ended(exc.code)
                if exc.code not in (None, 1000, 1001):
                    log.warning("client socket closed with code %s", exc.code)
                if self._flights:
                    log.info("client went away; cancelling %d request(s)", len(self._flights))
                return
            if isinstance(parsed, ErrorFrame):
                log.warning(
                    "refused message (id %s): %s", parsed.message_id_json, parsed.status_text
                )
                self._stats.refused(Refused.BAD_REQUEST)
                await self._send_frame(parsed.encode())
            elif isinstance(parsed, CancelRequest):
                self._cancel(parsed.message_id_json)
            elif parsed.message_id_json in self._flights:
                log.warning("refused duplicate in-flight message_id %s", parsed.message_id_json)
                self._stats.refused(Refused.BAD_REQUEST)
                await self._send_frame(
                    error_frame(
                        400,
                        "Invalid request: this message_id is already in flight.",
                        parsed.message_id_json,
                    )
                )
            else:
                await self._queued.acquire()
                size = len(parsed.body or b"")
                await self._wait_for_budget(size)
                self.pending_request_bytes += size
                self.peak_pending_request_bytes = max(
                    self.peak_pending_request_bytes, self.pending_request_bytes
                )
                flight = _Flight(parsed.message_id_json, trio.CancelScope())
                self._flights[parsed.message_id_json] = flight
                nursery.start_soon(self._request_task, parsed, flight)

    async def _receive_parsed(self) -> ProxyRequest | CancelRequest | ErrorFrame:
        part, more = await self._sock.receive_part()
        self._from_client.payload += payload_size(part)
        if not more:
            return await self._parse(part)
        # A large message in parts: decode its body as the parts come, each a short step on the
        # event loop; the last step (joining the body, parsing the rest) in a worker thread.
        assembler = MessageAssembler()
        while True:
            assert isinstance(part, str)  # only text comes in parts (ClientSocket.receive_part)
            assembler.feed(part)
            if not more:
                break
            part, more = await self._sock.receive_part()
            self._from_client.payload += payload_size(part)
        return await trio.to_thread.run_sync(assembler.finish, limiter=_limiter())

    async def _parse(self, message: str | bytes) -> ProxyRequest | CancelRequest | ErrorFrame:
        if len(message) < self._config.thread_parse_threshold:
            return parse_client_message(message)
        # json.loads and base64 decoding hold the GIL for their whole run: a 40 MiB message in one
        # call would stall the event loop (every socket) ~0.2 s even in a thread. The large-message
        # parser works in ~1 MiB steps, so in a thread the loop gets the GIL between steps.
        self.thread_parses += 1
        return await trio.to_thread.run_sync(
            parse_large_client_message, message, limiter=_limiter()
        )

    async def _wait_for_budget(self, size: int) -> None:
        """Wait until ``size`` more request bytes fit in ``max_pending_bytes``.

        A message larger than the budget waits until nothing else is held, then runs alone: the
        socket then holds max(max_pending_bytes, max_message_size) at most.
        """
        budget = self._config.max_pending_bytes
        while self.pending_request_bytes and self.pending_request_bytes + size > budget:
            await self._request_bytes_freed.wait()

    def _free_request_bytes(self, size: int) -> None:
        self.pending_request_bytes -= size
        self._request_bytes_freed.set()
        self._request_bytes_freed = trio.Event()

    async def _writer(self, session_scope: trio.CancelScope) -> None:
        try:
            async for item in self._frames_out:
                if self._socket_lock.locked():
                    await self._socket_lock.acquire()  # a request task is writing its own frame
                else:
                    self._socket_lock.acquire_nowait()  # no checkpoint: one fewer per frame
                try:
                    if item is None:
                        await self._sock.close(GOING_AWAY, "server shutting down")
                        break
                    frame, body_bytes = item
                    await self._sock.send(frame)
                    self._to_client.payload += payload_size(frame)
                finally:
                    self._socket_lock.release()
                self._queued_bytes -= body_bytes
                self._frames_pending -= 1
        except ClientDisconnected:
            pass
        session_scope.cancel()

    async def _watch_shutdown(self, session_scope: trio.CancelScope) -> None:
        assert self._shutdown is not None
        await self._shutdown.wait()
        self.outcome = Outcome.SHUTDOWN
        # Give running requests the grace period, then close.
        self._drained = trio.Event()
        if not self._flights:
            self._drained.set()
        with trio.move_on_after(self._config.shutdown_timeout):
            await self._drained.wait()
            # Through the writer, so the frames already queued (final frames of the requests
            # that just finished) go out before the close. Counted as pending and never
            # written: no request task writes a frame of its own after it.
            self._frames_pending += 1
            await self._frames_in.send(None)
            return
        # A client that stopped reading: close now, whatever is still queued.
        await self._sock.close(GOING_AWAY, "server shutting down")
        session_scope.cancel()

    def _cancel(self, message_id_json: str) -> None:
        flight = self._flights.get(message_id_json)
        if flight is None:
            log.info("cancel for message_id %s, which is not in flight", message_id_json)
            return
        flight.cancelled_by_client = True
        if flight.writing:
            # Cancelled now, trio-websocket would stop mid-frame and break the socket for every
            # request on it: cancel once the frame is written.
            flight.cancel_after_write = True
        else:
            flight.scope.cancel()

    # -- one request -------------------------------------------------------------------------

    async def _request_task(self, request: ProxyRequest, flight: _Flight) -> None:
        mid = request.message_id_json
        try:
            with flight.scope:
                await self._take_slot()
                try:
                    await self._proxy(request, flight)
                except Exception:
                    # A bug of ours must cost this one request, not the socket's others.
                    log.exception("Uncaught error when proxying request %s", mid)
                    await self._send_frame(error_frame(500, UNCAUGHT_ERROR_TEXT, mid), 0, flight)
                finally:
                    self._slots.release()
            # cancelled_caught: the cancel really cut the request short. A cancel that arrives as
            # the final frame is being queued finds nothing left to stop; a 499 then would be a
            # second final frame for this message_id.
            if flight.cancelled_by_client and flight.scope.cancelled_caught:
                log.info("request %s cancelled by the client", mid)
                await self._send_frame(
                    error_frame(499, "Request cancelled by the client", mid), 0, flight
                )
        finally:
            del self._flights[mid]
            self._free_request_bytes(len(request.body or b""))
            self._queued.release()
            if not self._flights and self._drained is not None:
                self._drained.set()

    async def _take_slot(self) -> None:
        """``self._slots.acquire()``, without its trip through the scheduler when a slot is free.

        A request cancelled before it started still stops here (as ``acquire`` would).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()

    async def _proxy(self, request: ProxyRequest, flight: _Flight) -> None:
        mid = request.message_id_json
        started = time.perf_counter()
        progress = _Progress()
        try:
            cookies = await self._auth.get()
        except AuthUrlError as exc:
            # A refusal we expect (another origin, a failing fetch), not a bug: a warning.
            log.warning("request %s: auth URL refused: %s", mid, exc)
            await self._send_frame(error_frame(500, UNCAUGHT_ERROR_TEXT, mid), 0, flight)
            return
        headers = [*self._base_headers, *cookie_headers(cookies)]
        xsrf = xsrf_cookie_value(cookies)
        hop = first_hop(request.method, request.path, request.body, xsrf)
        try:
            await self._forward(flight, hop, headers, xsrf, progress)
        except BackendError as exc:
            if not progress.started:
                progress.status = exc.status
                log.warning("request %s %s failed: %s", mid, request.method, exc)
                text = f"{HTTPStatus(progress.status).phrase}: {exc}"
                await self._send_frame(error_frame(progress.status, text, mid), 0, flight)
            else:
                # Headers and some of the body went out already: the only honest ending is a final
                # frame with an error status, so the client knows the body is truncated.
                log.warning("response %s truncated after %d bytes: %s", mid, progress.sent, exc)
                await self._send_frame(
                    error_frame(502, f"Bad Gateway: response truncated: {exc}", mid), 0, flight
                )
        finally:
            status = logged_status(progress.status or None, self._client_left(flight))
            self._stats.request(Flow.TUNNEL, status, progress.sent, len(request.body or b""))
            log_access(
                "tunnel",
                request.method,
                request.path,
                status,
                progress.sent,
                started,
                message_id=json.loads(mid),
                origin=self._origin_class,
            )

    def _client_left(self, flight: _Flight) -> bool:
        """Whether the client cancelled this request or closed its socket."""
        return flight.cancelled_by_client or self.outcome in (
            Outcome.CLIENT_LEFT,
            Outcome.CLIENT_CLOSE,
        )

    async def _forward(
        self,
        flight: _Flight,
        hop: Hop,
        headers: list[tuple[bytes, bytes]],
        xsrf: str | None,
        progress: _Progress,
    ) -> None:
        """Send ``hop`` (and the redirects that follow it) to the backend; relay the final response."""
        mid = flight.message_id_json
        while True:
            async with self._pool.request(hop.method, hop.target, headers, hop.body) as resp:
                following = None
                if resp.status in REDIRECT_STATUSES:
                    location = first_header(resp.headers, b"location")
                    following = next_hop(hop, resp.status, location, self._origins, xsrf)
                if following is None:
                    progress.status = resp.status
                    await self._relay_body(flight, resp, progress)
                    return
                log.debug(
                    "request %s: %d, following to %s %s",
                    mid,
                    resp.status,
                    following.method,
                    log_path(following.target),
                )
                await resp.discard(REDIRECT_BODY_LIMIT)
            hop = following

    async def _relay_body(
        self, flight: _Flight, resp: BackendResponse, progress: _Progress
    ) -> None:
        """One frame per piece of the body; the first carries status and headers."""
        headers = response_headers(resp.headers)
        # The frame carrying the last body bytes must say done:true, and we only know a piece was
        # the last once the next read says so: hold one piece back, as the original did, so
        # existing clients see the same frames.
        pending: bytes | None = None
        try:
            async for piece in resp.iter_pieces(MAX_FRAME_DATA):
                flight.held += len(piece)
                self._note_response_bytes()
                if pending is not None:
                    await self._emit(flight, resp, headers, pending, False, progress)
                pending = piece
        except BackendError:
            # The piece held back arrived whole: it goes out before the error frame.
            if pending:
                await self._emit(flight, resp, headers, pending, False, progress)
            raise
        await self._emit(flight, resp, headers, pending or b"", True, progress)

    async def _emit(
        self,
        flight: _Flight,
        resp: BackendResponse,
        headers: dict[str, str],
        data: bytes,
        done: bool,
        progress: _Progress,
    ) -> None:
        mid = flight.message_id_json
        if progress.started:
            frame = data_frame(mid, data, done)
        else:
            frame = first_frame(mid, resp.status, resp.reason, headers, data, done)
            progress.started = True
        progress.sent += len(data)
        await self._send_frame(frame, len(data), flight)
        flight.held -= len(data)
