"""The ASGI app: what ``hypercorn --worker-class trio trio_httpws:app`` serves.

It routes each scope: protocol WebSockets to the session or relay, any other WebSocket and every
plain HTTP request to the backend as a transparent reverse proxy, so the proxy's port is a drop-in
for the Jupyter port (token URL, web UI, REST API). It needs hypercorn's trio worker (or any ASGI
server running on trio).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import trio

from ._config import Config
from ._errors import BackendError, ClientDisconnected
from ._protocol import first_header, strip_hop_by_hop
from ._proxy import Proxy
from ._socket import ClientSocket, Upgrade

log = logging.getLogger("trio_httpws")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _AsgiClientSocket:
    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closed = False

    async def receive(self) -> str | bytes:
        if self._closed:
            raise ClientDisconnected(None, "closed by us")
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        self._closed = True
        code = message.get("code")
        # hypercorn reports every close the client starts as 1006, whatever code the client
        # sent: the real code is unknown, so say so rather than pass on an "abnormal" close.
        raise ClientDisconnected(None if code == 1006 else code, message.get("reason") or "")

    async def send(self, message: str | bytes) -> None:
        if self._closed:
            raise ClientDisconnected(None, "closed")
        if isinstance(message, str):
            await self._send({"type": "websocket.send", "text": message})
        else:
            await self._send({"type": "websocket.send", "bytes": message})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._closed:
            self._closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


class _AsgiPendingSocket:
    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send

    async def accept(self, subprotocol: str | None = None) -> ClientSocket:
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol})
        return _AsgiClientSocket(self._receive, self._send)

    async def reject(self, status: int, body: str = "") -> None:
        if "websocket.http.response" in self._scope.get("extensions", {}):
            await self._send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await self._send(
                {"type": "websocket.http.response.body", "body": body.encode(), "more_body": False}
            )
        else:
            await self._send({"type": "websocket.close"})  # the server answers 403


class TrioHttpWsApp:
    """An ASGI 3 application. Build one with :func:`create_app`."""

    def __init__(self, config: Config, proxy: Proxy | None = None) -> None:
        self.config = config
        self.proxy = proxy or Proxy(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                log.info("proxying to backend %s", self.config.backend_url)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.proxy.begin_shutdown()
                await self.proxy.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":  # pragma: no cover - ASGI guarantees it
            return
        upgrade = _upgrade(scope)
        await self.proxy.handle_websocket(_AsgiPendingSocket(scope, receive, send), upgrade)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = [(bytes(n), bytes(v)) for n, v in scope["headers"]]
        host = first_header(headers, b"host")
        if not self.proxy.host_allowed(host, _server_host(scope)):
            log.warning("refused HTTP request with non-local Host %r (DNS rebinding?)", host)
            await _plain_response(send, 403, "Host not allowed")
            return
        target = scope.get("raw_path") or scope["path"].encode()
        if isinstance(target, bytes):
            target = target.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        forward = strip_hop_by_hop(headers)
        has_body = any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in headers)
        body = _request_body(receive) if has_body else None
        try:
            async with self.proxy.pool.request(scope["method"], target, forward, body) as resp:
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": strip_hop_by_hop(resp.headers),
                    }
                )
                async with trio.open_nursery() as nursery:
                    # The request body is fully sent by now, so receive() is ours to watch.
                    nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                    try:
                        async for chunk in resp.iter_chunks():
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                    except BackendError as exc:
                        # Mid-body: raising makes the server drop the connection, so the client
                        # sees a truncated response instead of a short one that looks complete.
                        log.warning("%s %s truncated: %s", scope["method"], scope["path"], exc)
                        raise
                    nursery.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except BackendError as exc:
            # Only failures before the response started arrive here; later ones are raised
            # from inside the nursery above, wrapped in an exception group.
            log.warning("%s %s: %s", scope["method"], scope["path"], exc)
            await _plain_response(send, 502, f"Bad Gateway: {exc}")


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BackendError("client disconnected while sending the request body")
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    # A client that leaves mid-download would otherwise keep us reading the backend for nobody.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _plain_response(send: Send, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": text.encode(), "more_body": False})


def _server_host(scope: Scope) -> str | None:
    server = scope.get("server")
    return str(server[0]) if server else None


def _upgrade(scope: Scope) -> Upgrade:
    raw = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return Upgrade(
        scheme=scope.get("scheme", "ws"),
        raw_path=raw_path.split("?", 1)[0],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=[(bytes(n), bytes(v)) for n, v in scope["headers"]],
        server_host=_server_host(scope),
    )


def create_app(config: Config | None = None) -> TrioHttpWsApp:
    """The ASGI app for ``config`` (default: ``Config.from_env()``)."""
    return TrioHttpWsApp(config if config is not None else Config.from_env())
