"""The ASGI app: what ``hypercorn --worker-class trio trio_httpws:app`` serves.

It routes each scope: protocol WebSockets to the session or relay, any other WebSocket and every
plain HTTP request to the backend as a transparent reverse proxy, so the proxy's port is a drop-in
for the Jupyter port (token URL, web UI, REST API). It needs hypercorn's trio worker (or any ASGI
server running on trio).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from . import _compression, _hypercorn_fix
from ._config import Config
from ._errors import ClientDisconnected, ConfigError
from ._metrics import serve_metrics
from ._proxy import Proxy
from ._reverse import local_address, reverse_http
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
        part, more = await self.receive_part()
        if not more:
            return part
        parts = [part]
        while more:
            part, more = await self.receive_part()
            parts.append(part)
        return "".join(parts)  # type: ignore[arg-type]  # only text comes in parts

    async def receive_part(self) -> tuple[str | bytes, bool]:
        if self._closed:
            raise ClientDisconnected(None, "closed by us")
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is None:
                return bytes(message.get("bytes") or b""), False
            return text, bool(message.get(_hypercorn_fix.MORE_KEY))
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

    async def accept(
        self, subprotocol: str | None = None, *, message_parts: bool = False
    ) -> ClientSocket:
        accept: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if message_parts:
            accept[_hypercorn_fix.PARTS_KEY] = True  # other servers ignore an unknown key
        await self._send(accept)
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

    async def wait_gone(self) -> None:
        # Before websocket.accept the server has nothing else to send the app (ASGI), and
        # hypercorn sends this one when the client's connection ends.
        while (await self._receive())["type"] != "websocket.disconnect":
            pass


class TrioHttpWsApp:
    """An ASGI 3 application. Build one with :func:`create_app`.

    Building one also makes hypercorn (0.17/0.18, process-wide) close a WebSocket whose frame
    wsproto refuses with a Close frame and its code, 1007 for a text message that is not
    UTF-8, instead of a bare TCP close, and hand a large text message to the tunnel in parts
    (``_hypercorn_fix``), and lets this app decline
    permessage-deflate unless ``config.ws_compression`` (``_compression``; other apps keep
    hypercorn's behaviour).
    """

    def __init__(
        self, config: Config, proxy: Proxy | None = None, *, metrics_listener: bool = True
    ) -> None:
        self.config = config
        self.proxy = proxy or Proxy(config)
        #: ``metrics_port`` is set and no lifespan started its listener yet: with a server that
        #: runs no lifespan, every request is answered with the error (see ``_no_lifespan``).
        self._metrics_unserved = metrics_listener and config.metrics_port is not None
        self._said_no_lifespan = False
        _hypercorn_fix.install()
        if not _compression.install() and not config.ws_compression:
            log.warning(
                "this hypercorn negotiates WebSocket compression in a way trio_httpws does not "
                "know: ws_compression=False is not applied"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._metrics_unserved and kind != "lifespan":
            await self._no_lifespan(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # The metrics listener lives in here, from startup to shutdown: the server sends
        # lifespan.shutdown once its own grace for requests in flight is over.
        async with trio.open_nursery() as nursery:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if self._metrics_unserved:
                        problem = await self._start_metrics(nursery)
                        if problem is not None:
                            log.error("%s", problem)
                            await send({"type": "lifespan.startup.failed", "message": problem})
                            return
                    log.info("proxying to backend %s", self.config.backend_url)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.proxy.begin_shutdown()
                    nursery.cancel_scope.cancel()
                    break
        await self.proxy.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    async def _start_metrics(self, nursery: trio.Nursery) -> str | None:
        """Start the metrics listener; what is wrong if it cannot be."""
        config = self.config
        workers = _hypercorn_workers()
        if workers is not None and workers > 1:
            return (
                f"metrics_port {config.metrics_port} needs one process: hypercorn runs "
                f"{workers} workers here, each with counts of its own and only one able to "
                "listen; serve trio_httpws:app with --workers 1 (or use the trio-httpws command)"
            )
        try:
            await nursery.start(serve_metrics, self.proxy)
        except ConfigError as exc:
            return str(exc)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"metrics_port {config.metrics_port} is in use: by another program, or by "
                    "another worker of this server (each worker is a process with counts of "
                    "its own: serve trio_httpws:app in one process to use metrics_port)"
                )
            return str(exc)
        self._metrics_unserved = False
        return None

    async def _no_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``metrics_port`` is set, but this server never ran the lifespan that serves it:
        every request gets the error (a silently missing metrics port would look like a
        healthy proxy with nothing to count)."""
        text = (
            "trio_httpws: metrics_port is set (TRIO_HTTPWS_METRICS_PORT), but this ASGI server "
            "runs no lifespan, which the metrics listener needs: turn lifespan on, or unset "
            "metrics_port"
        )
        if not self._said_no_lifespan:
            self._said_no_lifespan = True
            log.error("%s", text)
        if scope["type"] == "http":
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": text.encode()})
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect
            await _AsgiPendingSocket(scope, receive, send).reject(500, text)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":  # pragma: no cover - ASGI guarantees it
            return
        upgrade = _upgrade(scope)
        # Read by hypercorn's handshake inside our websocket.accept send (see _compression).
        _compression.accept_compression.set(self.config.ws_compression)
        await self.proxy.handle_websocket(_AsgiPendingSocket(scope, receive, send), upgrade)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        await reverse_http(scope, receive, send, proxy=self.proxy)


def _upgrade(scope: Scope) -> Upgrade:
    raw = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return Upgrade(
        scheme=scope.get("scheme", "ws"),
        raw_path=raw_path.split("?", 1)[0],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=[(bytes(n), bytes(v)) for n, v in scope["headers"]],
        local_address=local_address(scope),
    )


def _hypercorn_workers() -> int | None:
    """How many worker processes the hypercorn that started this process runs, or None when
    this is not a hypercorn worker (or it cannot tell).

    hypercorn starts each worker with ``multiprocessing`` and hands it its Config, which the
    worker's Process object keeps: the one place a worker can learn the count before it binds.
    """
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None)
    config = kwargs.get("config") if isinstance(kwargs, dict) else None
    workers = getattr(config, "workers", None)
    if type(config).__module__.startswith("hypercorn") and isinstance(workers, int):
        return workers
    return None


def create_app(config: Config | None = None) -> TrioHttpWsApp:
    """The ASGI app for ``config`` (default: ``Config.from_env()``)."""
    return TrioHttpWsApp(config if config is not None else Config.from_env())
