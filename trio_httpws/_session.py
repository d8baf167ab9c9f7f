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
pushes back on the backend: memory stays bounded whatever the body size.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import trio

from ._access import log_access
from ._auth import AuthCookies
from ._backend import BackendPool
from ._config import Config
from ._errors import AuthUrlError, BackendError, ClientDisconnected
from ._protocol import (
    GOING_AWAY,
    UNCAUGHT_ERROR_TEXT,
    CancelRequest,
    ErrorFrame,
    ProxyRequest,
    add_xsrf_query,
    cookie_header,
    data_frame,
    error_frame,
    first_frame,
    parse_client_message,
    response_headers,
    split_body,
    upgrade_request_headers,
    xsrf_cookie_value,
)
from ._socket import ClientSocket, Upgrade

log = logging.getLogger("trio_httpws.session")

#: Frames waiting for the socket, across all requests of one session. Each is at most ~87 KB of
#: base64: the queue holds about 1.4 MB, and each request blocked on it holds one more frame and
#: one held-back chunk, so a session's buffered output is bounded by roughly
#: (16 + 2 x max_in_flight) x 87 KB (a few MB when many downloads run at once).
FRAME_QUEUE = 16


@dataclass
class _Flight:
    """One request in flight."""

    scope: trio.CancelScope
    cancelled_by_client: bool = False


class HttpOverWsSession:
    """Serves one client socket until it closes; then every request still running is cancelled."""

    def __init__(
        self,
        sock: ClientSocket,
        upgrade: Upgrade,
        config: Config,
        pool: BackendPool,
        shutdown: trio.Event | None = None,
    ) -> None:
        self._sock = sock
        self._config = config
        self._pool = pool
        self._shutdown = shutdown
        self._auth = AuthCookies(pool, upgrade)
        self._origin_class = config.origin_policy.classify(
            upgrade.origin, upgrade.scheme, upgrade.host
        ).value
        host = upgrade.host.encode("latin-1")
        self._base_headers = [(b"host", host), *upgrade_request_headers(upgrade.headers)]
        self._flights: dict[str, _Flight] = {}
        self._slots = trio.Semaphore(config.max_in_flight)
        # Requests waiting for a slot are tasks too; past this many the reader stops reading, so
        # a client cannot make us hold an unbounded number of parsed requests.
        self._queued = trio.Semaphore(config.max_in_flight * 4)
        # None is the writer's cue to close the socket as "going away", after the frames before it.
        self._frames_in, self._frames_out = trio.open_memory_channel[str | None](FRAME_QUEUE)
        #: Set once shutdown began and the last request finished.
        self._drained: trio.Event | None = None

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
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
                message = await self._sock.receive()
            except ClientDisconnected as exc:
                if exc.code not in (None, 1000, 1001):
                    log.warning("client socket closed with code %s", exc.code)
                if self._flights:
                    log.info("client went away; cancelling %d request(s)", len(self._flights))
                return
            parsed = parse_client_message(message)
            if isinstance(parsed, ErrorFrame):
                log.warning(
                    "refused message (id %s): %s", parsed.message_id_json, parsed.status_text
                )
                await self._frames_in.send(parsed.encode())
            elif isinstance(parsed, CancelRequest):
                self._cancel(parsed.message_id_json)
            elif parsed.message_id_json in self._flights:
                log.warning("refused duplicate in-flight message_id %s", parsed.message_id_json)
                await self._frames_in.send(
                    error_frame(
                        400,
                        "Invalid request: this message_id is already in flight.",
                        parsed.message_id_json,
                    )
                )
            else:
                await self._queued.acquire()
                flight = _Flight(trio.CancelScope())
                self._flights[parsed.message_id_json] = flight
                nursery.start_soon(self._request_task, parsed, flight)

    async def _writer(self, session_scope: trio.CancelScope) -> None:
        try:
            async for frame in self._frames_out:
                if frame is None:
                    await self._sock.close(GOING_AWAY, "server shutting down")
                    break
                await self._sock.send(frame)
        except ClientDisconnected:
            pass
        session_scope.cancel()

    async def _watch_shutdown(self, session_scope: trio.CancelScope) -> None:
        assert self._shutdown is not None
        await self._shutdown.wait()
        # Give running requests the grace period, then close.
        self._drained = trio.Event()
        if not self._flights:
            self._drained.set()
        with trio.move_on_after(self._config.shutdown_timeout):
            await self._drained.wait()
            # Through the writer, so the frames already queued (final frames of the requests
            # that just finished) go out before the close.
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
        flight.scope.cancel()

    # -- one request -------------------------------------------------------------------------

    async def _request_task(self, request: ProxyRequest, flight: _Flight) -> None:
        mid = request.message_id_json
        try:
            with flight.scope:
                async with self._slots:
                    try:
                        await self._proxy(request)
                    except Exception:
                        # A bug of ours must cost this one request, not the socket's others.
                        log.exception("Uncaught error when proxying request %s", mid)
                        await self._frames_in.send(error_frame(500, UNCAUGHT_ERROR_TEXT, mid))
            # cancelled_caught: the cancel really cut the request short. A cancel that arrives as
            # the final frame is being queued finds nothing left to stop; a 499 then would be a
            # second final frame for this message_id.
            if flight.cancelled_by_client and flight.scope.cancelled_caught:
                log.info("request %s cancelled by the client", mid)
                await self._frames_in.send(error_frame(499, "Request cancelled by the client", mid))
        finally:
            del self._flights[mid]
            self._queued.release()
            if not self._flights and self._drained is not None:
                self._drained.set()

    async def _proxy(self, request: ProxyRequest) -> None:
        mid = request.message_id_json
        started = time.perf_counter()
        status = 0
        sent = 0
        try:
            cookies = await self._auth.get()
        except AuthUrlError as exc:
            # A refusal we expect (another origin, a failing fetch), not a bug: a warning.
            log.warning("request %s: auth URL refused: %s", mid, exc)
            await self._frames_in.send(error_frame(500, UNCAUGHT_ERROR_TEXT, mid))
            return
        headers = list(self._base_headers)
        if cookies:
            headers.append((b"cookie", cookie_header(cookies).encode("latin-1")))
        target = add_xsrf_query(request.path, request.method, xsrf_cookie_value(cookies))

        first = True
        pending: bytes | None = None
        try:
            async with self._pool.request(request.method, target, headers, request.body) as resp:
                status = resp.status
                frame_headers = response_headers(resp.headers)
                # The frame carrying the last body bytes must say done:true, and we only know a
                # chunk was the last once the next read says so: hold one chunk back, as the
                # original did, so existing clients see the same frames.
                async for chunk in resp.iter_chunks():
                    if pending is not None:
                        sent += len(pending)
                        first = await self._emit(
                            mid, resp.status, resp.reason, frame_headers, pending, False, first
                        )
                    pending = chunk
                sent += len(pending or b"")
                last, pending = pending or b"", None
                await self._emit(mid, resp.status, resp.reason, frame_headers, last, True, first)
        except BackendError as exc:
            if first:
                status = 502
                log.warning("request %s %s failed: %s", mid, request.method, exc)
                await self._frames_in.send(error_frame(502, f"Bad Gateway: {exc}", mid))
            else:
                # Headers and some of the body went out already: the only honest ending is a final
                # frame with an error status, so the client knows the body is truncated. The
                # chunk held back arrived whole: it goes out first.
                if pending:
                    sent += len(pending)
                    await self._emit(
                        mid, resp.status, resp.reason, frame_headers, pending, False, first
                    )
                log.warning("response %s truncated after %d bytes: %s", mid, sent, exc)
                await self._frames_in.send(
                    error_frame(502, f"Bad Gateway: response truncated: {exc}", mid)
                )
        finally:
            log_access(
                "tunnel",
                request.method,
                request.path,
                status or None,
                sent,
                started,
                message_id=json.loads(mid),
                origin=self._origin_class,
            )

    async def _emit(
        self,
        mid: str,
        status: int,
        reason: str,
        headers: dict[str, str],
        data: bytes,
        done: bool,
        first: bool,
    ) -> bool:
        """Send ``data`` as one or more frames; returns the new value of ``first``."""
        pieces = split_body(data)
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            is_done = done and i == last
            if first:
                frame = first_frame(mid, status, reason, headers, piece, is_done)
                first = False
            else:
                frame = data_frame(mid, piece, is_done)
            await self._frames_in.send(frame)
        return first
