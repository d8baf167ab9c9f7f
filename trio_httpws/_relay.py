"""WebSocket relays to the backend: ``/http_over_websocket/proxied_ws/...`` and plain WebSockets.

The backend side is our wsproto client (``_backend_ws``) over a stream from the backend pool's
opener (so TLS and test streams work the same as for HTTP). Two pumps copy messages both ways;
each waits for its receiver and nothing queues between them, so a slow side pushes back on the
other. Large text messages from the client go on as fragments, a part at a time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import trio

from ._auth import AuthCookies
from ._backend import BackendPool
from ._backend_ws import (
    ABNORMAL_CLOSURE,
    BackendClosed,
    BackendWebSocket,
    HandshakeFailed,
    HandshakeRejected,
)
from ._config import Config
from ._cors import OriginClass, backend_request_headers
from ._errors import AuthUrlError, BackendError, ClientDisconnected
from ._outcome import CLIENT_LEFT_STATUS, Outcome, client_ended
from ._protocol import (
    GOING_AWAY,
    close_code_for_status,
    cookie_headers,
    strip_hop_by_hop,
    upgrade_request_headers,
)
from ._redact import log_path
from ._socket import ClientSocket, PendingSocket, Upgrade
from ._stats import Phase, Tally, WsKind, payload_size

_T = TypeVar("_T")

log = logging.getLogger("trio_httpws.relay")

INTERNAL_ERROR = 1011
UNCAUGHT_RELAY_TEXT = "Uncaught error when proxying request"
#: Bytes asked of the backend's socket per read: a 1 MB kernel message in 4 reads, not 256
#: (measured with trio-websocket's 4 KiB default: 1 MB echo 16-23 -> 29-38 MB/s).
RELAY_READ_SIZE = 256 * 1024
#: Seconds the backend gets to answer our close frame; then its stream is closed regardless.
CLOSE_TIMEOUT = 5.0


def sendable_close_code(code: int | None) -> int:
    """A close code we may put on the wire: 1005/1006/1015 and others are receive-only."""
    if code is None or code == 1005:
        return 1000
    if code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014):
        return code
    if 3000 <= code <= 4999:
        return code
    return INTERNAL_ERROR


@dataclass
class RelayResult:
    """What became of one relayed WebSocket, for the access line."""

    #: 101 once the client was accepted, else the status (or 4000 + status) it was failed with.
    status: int | None = None
    #: How it ended (the first end seen wins).
    outcome: Outcome = Outcome.ERROR
    #: Message payload each way (``_stats``: text in UTF-8 bytes), counted as it passes.
    tally: Tally = field(default_factory=lambda: Tally(WsKind.RELAY))

    @property
    def bytes_to_client(self) -> int:
        """What the access line reports."""
        return self.tally.to_client.payload

    def ended(self, outcome: Outcome) -> None:
        if self.outcome is Outcome.ERROR:
            self.outcome = outcome


async def relay(
    pending: PendingSocket,
    upgrade: Upgrade,
    target: str,
    config: Config,
    pool: BackendPool,
    *,
    tunnelled: bool,
    shutdown: trio.Event | None = None,
    origin_class: OriginClass = OriginClass.NONE,
    tally: Tally | None = None,
) -> RelayResult:
    """Connect to ``target`` on the backend, then accept the client and copy both ways. A
    client that leaves while the backend has not answered the upgrade ends both at once.

    ``tunnelled`` is True for ``/http_over_websocket/proxied_ws/...``: the browser's foreign
    Origin is not passed on, auth-URL cookies are added, and failures close the accepted socket
    with 4000 + status, as clients of the original expect. A plain reverse-proxied WebSocket
    passes the handshake through (less the Origin of an allowed foreign page, see
    ``_cors.backend_request_headers``) and failures reject the handshake with the HTTP status.
    Returns what the access line reports; the payload is counted on ``tally`` as it passes.
    """
    result = RelayResult() if tally is None else RelayResult(tally=tally)
    shown = log_path(target)
    if tunnelled:
        try:
            cookies = await AuthCookies(pool, upgrade, config.auth_timeout).get()
        except AuthUrlError as exc:
            # A refusal we expect (another origin, a failing fetch), not a bug: a warning.
            log.warning("WebSocket %s: auth URL refused: %s", shown, exc)
            sock = await pending.accept()
            await sock.close(close_code_for_status(500), UNCAUGHT_RELAY_TEXT)
            result.status = 500
            result.ended(Outcome.BAD_REQUEST)
            return result
        headers = [*upgrade_request_headers(upgrade.headers), *cookie_headers(cookies)]
    else:
        headers = [
            (name, value)
            for name, value in backend_request_headers(
                strip_hop_by_hop(upgrade.headers), origin_class, upgrade.scheme, upgrade.host
            )
            if name.lower() not in (b"host",) and not name.lower().startswith(b"sec-websocket-")
        ]

    try:
        stream = await pool.open_stream()
    except BackendError as exc:
        log.warning("WebSocket %s: %s", shown, exc)
        await _fail(pending, tunnelled, 502, "Bad Gateway: backend unreachable")
        result.status = 502
        result.ended(Outcome.BACKEND_ERROR)
        return result
    backend = BackendWebSocket(
        stream, max_message_size=config.max_message_size, read_size=RELAY_READ_SIZE
    )
    try:
        try:
            with trio.fail_after(config.read_timeout):
                answered = await unless_client_leaves(
                    pending.wait_gone, partial(_handshake, backend, upgrade, target, headers)
                )
        except HandshakeRejected as exc:
            log.info("backend refused WebSocket %s with HTTP %d", shown, exc.status)
            await _fail(pending, tunnelled, exc.status, f"backend refused: HTTP {exc.status}")
            result.status = exc.status
            result.ended(Outcome.BACKEND_REFUSED)
            return result
        except trio.TooSlowError:
            pool.stats.timeouts[Phase.READ] += 1
            log.warning(
                "WebSocket handshake with backend for %s: no answer in %gs",
                shown,
                config.read_timeout,
            )
            await _fail(pending, tunnelled, 504, "Gateway Timeout: backend handshake timed out")
            result.status = 504
            result.ended(Outcome.BACKEND_ERROR)
            return result
        except HandshakeFailed as exc:
            log.warning("WebSocket handshake with backend for %s failed: %s", shown, exc)
            await _fail(pending, tunnelled, 502, "Bad Gateway: backend handshake failed")
            result.status = 502
            result.ended(Outcome.BACKEND_ERROR)
            return result
        if not answered:
            log.info("WebSocket %s: the client left before the backend answered", shown)
            result.status = CLIENT_LEFT_STATUS
            result.ended(Outcome.CLIENT_LEFT)
            return result
        log.info("proxying WebSocket connection to %s", shown)
        # Large text messages in parts: each goes on to the backend as a fragment (_backend_ws).
        sock = await pending.accept(backend.subprotocol, message_parts=True)
        result.status = 101
        await _pump_both(sock, backend, shutdown, result)
    finally:
        await backend.aclose()
    return result


async def unless_client_leaves(
    wait_gone: Callable[[], Awaitable[None]], work: Callable[[], Awaitable[_T]]
) -> _T | None:
    """``work()``, given up (None) if ``wait_gone()`` returns first: a backend slow to answer an
    upgrade would otherwise hold both connections for ``read_timeout``. What ``work`` raises
    comes out as itself, not in a group out of the nursery."""
    result: _T | None = None
    failed: Exception | None = None
    async with trio.open_nursery() as nursery:

        async def watch_client() -> None:
            await wait_gone()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_client)
        try:
            result = await work()
        except Exception as exc:
            failed = exc
        nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return result


async def _handshake(
    backend: BackendWebSocket, upgrade: Upgrade, target: str, headers: list[tuple[bytes, bytes]]
) -> bool:
    await backend.handshake(upgrade.host, target, upgrade.subprotocols, headers)
    return True


async def _fail(pending: PendingSocket, tunnelled: bool, status: int, reason: str) -> None:
    if tunnelled:
        sock = await pending.accept()
        await sock.close(close_code_for_status(status), reason)
    else:
        await pending.reject(status, reason)


async def _pump_both(
    sock: ClientSocket,
    backend: BackendWebSocket,
    shutdown: trio.Event | None,
    result: RelayResult,
) -> None:
    async with trio.open_nursery() as nursery:

        def wind_down() -> None:
            # Our close is sent: the backend pump reads the answer, for CLOSE_TIMEOUT at most.
            scope = nursery.cancel_scope
            scope.deadline = min(scope.deadline, trio.current_time() + CLOSE_TIMEOUT)

        from_client = result.tally.from_client
        to_client = result.tally.to_client

        async def client_to_backend() -> None:
            try:
                while True:
                    part, more = await sock.receive_part()
                    from_client.payload += payload_size(part)
                    await backend.send(part, finished=not more)
            except ClientDisconnected as exc:
                result.ended(client_ended(exc.code))
                wind_down()  # first: the close itself may wait for a write in progress
                await backend.start_close(sendable_close_code(exc.code), exc.reason or None)
            except BackendClosed:
                pass  # the backend pump passes the backend's close on

        async def backend_to_client() -> None:
            try:
                while True:
                    message = await backend.receive_message()
                    await sock.send(message)
                    to_client.payload += payload_size(message)
            except BackendClosed as exc:
                lost = exc.code == ABNORMAL_CLOSURE
                result.ended(Outcome.BACKEND_LOST if lost else Outcome.BACKEND_CLOSE)
                await sock.close(sendable_close_code(exc.code), exc.reason)
            except ClientDisconnected as exc:
                result.ended(client_ended(exc.code))
                wind_down()
                await backend.start_close()
                with contextlib.suppress(BackendClosed):
                    while True:  # drops what still comes, until the backend answers our close
                        await backend.receive_message()
            nursery.cancel_scope.cancel()

        async def going_away() -> None:
            assert shutdown is not None
            await shutdown.wait()
            result.ended(Outcome.SHUTDOWN)
            wind_down()  # bounds both closes: the client may not read, the backend may not either
            await sock.close(GOING_AWAY, "server shutting down")
            await backend.start_close(GOING_AWAY, "proxy shutting down")

        nursery.start_soon(client_to_backend)
        nursery.start_soon(backend_to_client)
        if shutdown is not None:
            nursery.start_soon(going_away)
