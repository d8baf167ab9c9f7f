"""WebSocket relays to the backend: ``/http_over_websocket/proxied_ws/...`` and plain WebSockets.

The backend side is a trio-websocket client over a stream from the backend pool's opener (so TLS
and test streams work the same as for HTTP). Two pumps copy messages both ways; each waits for its
receiver, so a slow side pushes back on the other instead of queueing (trio-websocket buffers at
most ``message_queue_size`` messages).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from ._auth import AuthCookies
from ._backend import BackendPool
from ._config import Config
from ._cors import OriginClass, backend_request_headers
from ._errors import AuthUrlError, BackendError, ClientDisconnected
from ._protocol import (
    GOING_AWAY,
    close_code_for_status,
    cookie_headers,
    strip_hop_by_hop,
    upgrade_request_headers,
)
from ._socket import ClientSocket, PendingSocket, Upgrade, close_of

log = logging.getLogger("trio_httpws.relay")

INTERNAL_ERROR = 1011
UNCAUGHT_RELAY_TEXT = "Uncaught error when proxying request"
#: Messages trio-websocket may hold from the backend before we forward them.
BACKEND_QUEUE = 4
RELAY_READ_SIZE = 256 * 1024
#: Seconds the backend gets to answer our close frame; then its stream is closed regardless.
CLOSE_TIMEOUT = 5.0


class _HandshakeTimeout(Exception):
    """The backend accepted the connection but did not answer the WebSocket handshake."""


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
    #: Message payload relayed from the backend to the client (characters for text messages).
    bytes_to_client: int = 0


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
) -> RelayResult:
    """Connect to ``target`` on the backend, then accept the client and copy both ways.

    ``tunnelled`` is True for ``/http_over_websocket/proxied_ws/...``: the browser's foreign
    Origin is not passed on, auth-URL cookies are added, and failures close the accepted socket
    with 4000 + status, as clients of the original expect. A plain reverse-proxied WebSocket
    passes the handshake through (less the Origin of an allowed foreign page, see
    ``_cors.backend_request_headers``) and failures reject the handshake with the HTTP status.
    Returns what the access line reports.
    """
    result = RelayResult()
    # What log lines may show of the target: its query may carry the user's token.
    shown = target.split("?", 1)[0]
    if tunnelled:
        try:
            cookies = await AuthCookies(pool, upgrade, config.auth_timeout).get()
        except AuthUrlError as exc:
            # A refusal we expect (another origin, a failing fetch), not a bug: a warning.
            log.warning("WebSocket %s: auth URL refused: %s", shown, exc)
            sock = await pending.accept()
            await sock.close(close_code_for_status(500), UNCAUGHT_RELAY_TEXT)
            result.status = 500
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
        return result
    accepted = False
    try:
        async with trio.open_nursery() as nursery:
            # trio-websocket reports a refused handshake from its reader task, i.e. through
            # this nursery, which is why the failure is handled around it below.
            with trio.move_on_after(config.read_timeout) as handshake:
                backend = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,  # type: ignore[arg-type]  # any trio Stream works; the hint is narrow
                    upgrade.host,
                    target,
                    subprotocols=upgrade.subprotocols or None,
                    extra_headers=headers,
                    message_queue_size=BACKEND_QUEUE,
                    max_message_size=config.max_message_size,
                    # trio-websocket reads 4 KiB at a time by default; 1 MB kernel messages then cost
                    # 256 reads each (measured: 1 MB echo 16-23 -> 29-38 MB/s with 256 KiB).
                    receive_buffer_size=RELAY_READ_SIZE,
                )
            if handshake.cancelled_caught:
                raise _HandshakeTimeout(f"no handshake answer in {config.read_timeout:g}s")
            log.info("proxying WebSocket connection to %s", shown)
            try:
                sock = await pending.accept(backend.subprotocol)
                accepted = True
                result.status = 101
                await _pump_both(sock, backend, shutdown, result)
            finally:
                await _close_backend(backend)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        failure = _handshake_failure(group)
        if failure is None:
            raise
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)
        if accepted:
            log.warning("backend WebSocket %s failed: %r", shown, failure)
            return result
        if isinstance(failure, trio_websocket.ConnectionRejected):
            status = failure.status_code
            log.info("backend refused WebSocket %s with HTTP %d", shown, status)
            await _fail(pending, tunnelled, status, f"backend refused: HTTP {status}")
            result.status = status
        elif isinstance(failure, _HandshakeTimeout):
            log.warning("WebSocket handshake with backend for %s: %s", shown, failure)
            await _fail(pending, tunnelled, 504, "Gateway Timeout: backend handshake timed out")
            result.status = 504
        else:
            log.warning("WebSocket handshake with backend for %s failed: %r", shown, failure)
            await _fail(pending, tunnelled, 502, "Bad Gateway: backend handshake failed")
            result.status = 502
    return result


_HANDSHAKE_ERRORS = (
    _HandshakeTimeout,
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    trio.BrokenResourceError,
    OSError,
)


def _handshake_failure(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The backend handshake error inside ``group``, if that is all the group holds."""
    matched, rest = group.split(_HANDSHAKE_ERRORS)
    if matched is None or rest is not None:
        return None
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def _close_backend(
    backend: trio_websocket.WebSocketConnection, code: int = 1000, reason: str | None = None
) -> None:
    # Shielded, so a cancelled relay still closes its backend socket; bounded, so a backend that
    # never answers the close frame cannot hold the relay (or the server's shutdown) forever.
    # trio-websocket closes the stream itself when its closing handshake is cut short.
    with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
        await backend.aclose(code, reason)


async def _fail(pending: PendingSocket, tunnelled: bool, status: int, reason: str) -> None:
    if tunnelled:
        sock = await pending.accept()
        await sock.close(close_code_for_status(status), reason)
    else:
        await pending.reject(status, reason)


async def _pump_both(
    sock: ClientSocket,
    backend: trio_websocket.WebSocketConnection,
    shutdown: trio.Event | None,
    result: RelayResult,
) -> None:
    async def client_to_backend(cancel: trio.CancelScope) -> None:
        try:
            while True:
                message = await sock.receive()
                await backend.send_message(message)
        except ClientDisconnected as exc:
            await _close_backend(backend, sendable_close_code(exc.code), exc.reason or None)
        except trio_websocket.ConnectionClosed:
            return  # the backend is closing; the other pump passes its close on
        cancel.cancel()

    async def backend_to_client(cancel: trio.CancelScope) -> None:
        try:
            while True:
                message: Any = await backend.get_message()
                await sock.send(message)
                result.bytes_to_client += len(message)
        except trio_websocket.ConnectionClosed as exc:
            code, reason = close_of(exc)
            await sock.close(sendable_close_code(code), reason)
        except ClientDisconnected:
            await _close_backend(backend)
        cancel.cancel()

    async def going_away(cancel: trio.CancelScope) -> None:
        assert shutdown is not None
        await shutdown.wait()
        await sock.close(GOING_AWAY, "server shutting down")
        await _close_backend(backend, GOING_AWAY, "proxy shutting down")
        cancel.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_to_backend, nursery.cancel_scope)
        nursery.start_soon(backend_to_client, nursery.cancel_scope)
        if shutdown is not None:
            nursery.start_soon(going_away, nursery.cancel_scope)
