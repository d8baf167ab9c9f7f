"""The reverse proxy for plain HTTP: every request that is not a WebSocket goes to the backend.

The order of the checks is the guarantee of this room: the Host check, the origin verdict and
the request's framing are all decided (``Proxy.judge_request``, shared with the proxy's own
door) before a byte reaches the backend, so a refused origin or a malformed request never costs
the backend anything, whatever token or cookie it carries. The answers for an allowed foreign
origin (preflights, the backend's answers and our own errors) come from the pure rules of
``_cors``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import trio

from ._access import log_access
from ._backend import Body
from ._cors import Answer, OriginClass, text_answer, with_cors
from ._errors import BackendError
from ._outcome import Outcome, logged_status
from ._protocol import declares_body, forwarded_response_headers
from ._redact import log_path
from ._stats import Flow

if TYPE_CHECKING:
    from ._proxy import Proxy

log = logging.getLogger("trio_httpws")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Bytes asked of the backend's socket per read of a body on this path. Nothing here frames the
#: body, so larger reads cost fewer reads, deadlines and ASGI events per byte; hypercorn's write
#: of each chunk still waits for the client, so this is also the most one request holds.
REVERSE_READ_SIZE = 256 * 1024

#: What a send to a client that already left raises under hypercorn's trio worker: the
#: connection is closed (or being closed by the server's own task) under us.
_CLIENT_GONE = (trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError)


class _Exchange:
    """One request's state: what the access line reports, and how answers are decorated."""

    def __init__(self, scope: Scope, send: Send) -> None:
        self._send = send
        self.method: str = scope["method"]
        self.target = _target(scope)
        self.started = time.perf_counter()
        self.status: int | None = None
        #: Body bytes sent to the client, and read from it.
        self.sent = 0
        self.received = 0
        self.origin_class = OriginClass.NONE
        self.cors_origin: str | None = None
        self.client_left = False
        self.outcome = Outcome.ERROR
        #: The last body message was handed to the server: the response is complete.
        self.complete = False
        #: Cancelled when the client is gone: the scope of the exchange with the backend.
        self.scope: trio.CancelScope | None = None

    @property
    def path(self) -> str:
        """The target without its query, which may carry a token: what log lines may show."""
        return log_path(self.target)

    def response_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        if self.cors_origin is not None:
            return with_cors(headers, self.cors_origin)
        return headers

    async def send(self, message: Message) -> None:
        try:
            await self._send(message)
        except _CLIENT_GONE:
            # The client left, or hypercorn closes the connection under us (as it does when a
            # client pipelines a request past its keep-alive limit): nobody to answer. Stop the
            # exchange quietly; the access line still says what happened.
            log.debug("%s %s: client connection gone", self.method, self.path)
            self.client_left = True
            if self.scope is not None:
                self.scope.cancel()
                await trio.lowlevel.checkpoint()  # raises Cancelled: unwind to the scope

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": self.response_headers(headers),
            }
        )

    async def body(self, data: bytes, more: bool) -> None:
        self.sent += len(data)
        if not more:
            # hypercorn answers the last body with an http.disconnect of its own as it closes
            # the stream: from here on, a disconnect is not the client leaving early.
            self.complete = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def answer(self, answer: Answer) -> None:
        await self.start(answer.status, answer.headers)
        await self.body(answer.body, False)


async def reverse_http(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    proxy: Proxy,
) -> None:
    """Serve one plain HTTP request (an ASGI ``http`` scope) through ``proxy``'s backend pool."""
    exchange = _Exchange(scope, send)
    try:
        await _serve(exchange, scope, receive, proxy)
    finally:
        status = logged_status(exchange.status, exchange.client_left)
        proxy.stats.request(Flow.REVERSE, status, exchange.sent, exchange.received)
        log_access(
            "http",
            exchange.method,
            exchange.target,
            status,
            exchange.sent,
            exchange.started,
            origin=exchange.origin_class.value,
            outcome=(Outcome.CLIENT_LEFT if exchange.client_left else exchange.outcome).value,
        )


async def _serve(exchange: _Exchange, scope: Scope, receive: Receive, proxy: Proxy) -> None:
    headers: list[tuple[bytes, bytes]] = [(bytes(n), bytes(v)) for n, v in scope["headers"]]
    verdict = proxy.judge_request(
        exchange.method, exchange.target, headers, scope.get("scheme", "http"), local_address(scope)
    )
    exchange.origin_class, exchange.cors_origin = verdict.origin_class, verdict.cors_origin
    if verdict.answer is not None:
        if verdict.warning is not None:
            log.warning("%s", verdict.warning)
        await exchange.answer(verdict.answer)
        exchange.outcome = verdict.refusal or Outcome.COMPLETE
        return
    assert verdict.forward is not None
    forward = verdict.forward
    has_body = declares_body(headers)
    body_read = trio.Event()
    body = _request_body(receive, body_read, exchange) if has_body else None
    if body is None:
        body_read.set()
    async with trio.open_nursery() as nursery:
        exchange.scope = nursery.cancel_scope
        # From the moment the request body is read, receive() is ours to watch: a client that
        # leaves while the backend thinks or streams would otherwise keep the backend busy (and
        # us reading it) for nobody.
        nursery.start_soon(_cancel_on_disconnect, receive, body_read, exchange, nursery)
        await _exchange(exchange, proxy, forward, body)
        nursery.cancel_scope.cancel()


async def _exchange(
    exchange: _Exchange, proxy: Proxy, forward: list[tuple[bytes, bytes]], body: Body
) -> None:
    final = b""
    try:
        async with proxy.pool.request(exchange.method, exchange.target, forward, body) as resp:
            await exchange.start(resp.status, forwarded_response_headers(resp.headers))
            length = resp.content_length
            try:
                async for chunk in resp.iter_chunks(REVERSE_READ_SIZE):
                    if length is not None and exchange.sent + len(chunk) >= length:
                        # It completes a Content-Length body, which then ends without another
                        # read: sent below as the final event, one ASGI event (and hypercorn
                        # call) fewer per response.
                        final = chunk
                        continue
                    await exchange.body(chunk, True)
            except BackendError as exc:
                # Mid-body: returning without the final body makes hypercorn drop the
                # connection, so the client sees a truncated response instead of a short one
                # that looks complete (raising would do the same, plus a traceback).
                log.warning("%s %s truncated: %s", exchange.method, exchange.path, exc)
                exchange.outcome = Outcome.BACKEND_LOST
                return
    except BackendError as exc:
        log.warning("%s %s: %s", exchange.method, exchange.path, exc)
        await exchange.answer(text_answer(exc.status, f"{HTTPStatus(exc.status).phrase}: {exc}"))
        exchange.outcome = Outcome.BACKEND_ERROR
        return
    await exchange.body(final, False)
    exchange.outcome = Outcome.COMPLETE


def _target(scope: Scope) -> str:
    target = scope.get("raw_path") or scope["path"].encode()
    if isinstance(target, bytes):
        target = target.decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    return str(target)


def local_address(scope: Scope) -> str | None:
    """The address the client reached us on (ASGI's ``server``), for the DNS-rebinding check."""
    server = scope.get("server")
    return str(server[0]) if server else None


async def _request_body(
    receive: Receive, done: trio.Event, exchange: _Exchange
) -> AsyncIterator[bytes]:
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BackendError("client disconnected while sending the request body")
            body = message.get("body", b"")
            if body:
                exchange.received += len(body)
                yield body
            if not message.get("more_body", False):
                return
    finally:
        done.set()


async def _cancel_on_disconnect(
    receive: Receive, body_read: trio.Event, exchange: _Exchange, nursery: trio.Nursery
) -> None:
    await body_read.wait()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if exchange.complete:
                return
            log.info("%s %s: client left; cancelled", exchange.method, exchange.path)
            exchange.client_left = True
            nursery.cancel_scope.cancel()
            return
