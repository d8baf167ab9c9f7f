"""Embedding in trio programs: :func:`serve`, the whole proxy on a listener of its own, and
:func:`handler`, its WebSocket endpoints on a trio-websocket server of yours.

``serve(config, host, port, server=...)`` puts one of two doors in front of the same
:class:`~._proxy.Proxy`: ``"trio"``, the proxy's own listener (``_door``: h11 request heads, plain
WebSockets relayed byte for byte), or ``"hypercorn"``, hypercorn serving the ASGI app
(``_asgi``). Either serves HTTP and WebSockets alike, and cancelling it is a clean shutdown.
``handler(config)`` serves the WebSocket endpoints only (the tunnel, ``proxied_ws``, diagnose and
plain relays), for a program that runs its own ``trio_websocket.serve_websocket``; its adapter to
the proxy's socket seam (``_socket``) is the rest of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket

from ._config import Config
from ._errors import ClientDisconnected, ConfigError
from ._metrics import load_exporter, serve_metrics
from ._protocol import close_of
from ._proxy import Proxy
from ._socket import ClientSocket, Upgrade

log = logging.getLogger("trio_httpws")

Handler = Callable[[trio_websocket.WebSocketRequest], Awaitable[None]]


class _TrioWsClientSocket:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _disconnected(exc) from None

    async def receive_part(self) -> tuple[str | bytes, bool]:
        return await self.receive(), False

    async def send(self, message: str | bytes) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _disconnected(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.aclose(code, reason or None)


def _disconnected(exc: trio_websocket.ConnectionClosed) -> ClientDisconnected:
    return ClientDisconnected(*close_of(exc.reason))


class _TrioWsPendingSocket:
    def __init__(self, request: trio_websocket.WebSocketRequest) -> None:
        self._request = request

    async def accept(
        self, subprotocol: str | None = None, *, message_parts: bool = False
    ) -> ClientSocket:
        # trio-websocket gathers every message whole: message_parts has nothing to ask for.
        return _TrioWsClientSocket(await self._request.accept(subprotocol=subprotocol))

    async def reject(self, status: int, body: str = "") -> None:
        await self._request.reject(status, body=body.encode() if body else None)

    async def wait_gone(self) -> None:
        # trio-websocket's reader task reads on before the handshake is answered and sets this
        # event when the connection ends; without it (another version) nothing can tell.
        connection = getattr(self._request, "_connection", None)
        ended = getattr(connection, "_close_handshake", None)
        if isinstance(ended, trio.Event):
            await ended.wait()
        else:
            await trio.sleep_forever()


def handler(config: Config, *, proxy: Proxy | None = None, tls: bool = False) -> Handler:
    """A handler for ``trio_websocket.serve_websocket`` that serves the proxy's WebSockets.

    ``tls`` says whether that server uses TLS (it decides which scheme the auth URL must have).
    Pass ``proxy`` to share one backend pool among several servers.
    """
    shared = proxy or Proxy(config)

    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        path, _, query = request.path.partition("?")
        local = request.local
        local_address = getattr(local, "address", None)
        # wsproto takes Host and Sec-WebSocket-Protocol out of the headers it hands on (they are
        # fields of its Request event): put them back, for the Host check and the relay.
        headers = list(request.headers)
        host = getattr(getattr(request, "_event", None), "host", None)
        if host:
            headers.insert(0, (b"host", host.encode("idna")))
        if request.proposed_subprotocols:
            protocols = ", ".join(request.proposed_subprotocols)
            headers.append((b"sec-websocket-protocol", protocols.encode("latin-1")))
        upgrade = Upgrade(
            scheme="wss" if tls else "ws",
            raw_path=path,
            query=query,
            headers=headers,
            local_address=str(local_address) if local_address is not None else None,
        )
        await shared.handle_websocket(_TrioWsPendingSocket(request), upgrade)

    return handle


def hypercorn_config(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> Any:
    """The hypercorn ``Config`` that serves ``config`` on host:port (TLS with a cert and key)."""
    from hypercorn.config import Config as HypercornConfig

    hc = HypercornConfig()
    bind_host = f"[{host}]" if ":" in host else host
    hc.bind = [f"{bind_host}:{port}"]
    hc.websocket_max_message_size = config.max_message_size
    hc.h11_max_incomplete_size = config.max_head_size
    hc.keep_alive_timeout = config.keep_alive_timeout
    hc.backlog = config.backlog
    hc.graceful_timeout = config.shutdown_timeout
    hc.accesslog = None
    # A Logger (not hypercorn's default "-") so its lines go through the program's own logging
    # setup (format, level, JSON) instead of a second handler of hypercorn's.
    hc.errorlog = logging.getLogger("hypercorn.error")
    if certfile:
        hc.certfile = certfile
        hc.keyfile = keyfile
    return hc


#: The servers ``serve()`` can run: the proxy's own door, and hypercorn with the ASGI app.
SERVERS = ("trio", "hypercorn")
DEFAULT_SERVER = "trio"


async def serve(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    server: str = DEFAULT_SERVER,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    proxy: Proxy | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the whole proxy (protocol, WebSockets and HTTP) until cancelled.

    ``server`` is ``"trio"`` for the proxy's own listener (plain WebSockets relayed byte for
    byte) or ``"hypercorn"`` for hypercorn serving the ASGI app. Reports the bound port via
    ``task_status.started()``, so ``port = await nursery.start(serve, config)`` works in any
    nursery. Cancelling that nursery is a clean shutdown: sessions close with 1001, the
    listener and the backend pool are closed.

    ``metrics_port`` and ``metrics_host`` (default: the config's) add the metrics listener
    (``GET /metrics``), closed after the shutdown grace; the port it bound is then
    ``proxy.metrics_port``. Pass ``proxy`` (built from ``config``) to read its counts or to
    share its backend pool; its pool is then yours to close.
    """
    if server not in SERVERS:
        raise ConfigError(f"server must be one of {', '.join(SERVERS)}, not {server!r}")
    if metrics_port is not None or metrics_host is not None:
        config = config.replace(
            metrics_port=config.metrics_port if metrics_port is None else metrics_port,
            metrics_host=metrics_host or config.metrics_host,
        )
    if config.metrics_port is not None:
        load_exporter()  # a missing prometheus_client fails here, before anything listens
    own = proxy is None
    if proxy is None:
        proxy = Proxy(config)
    try:
        async with trio.open_nursery() as nursery:
            # Shielded: the metrics go on through the shutdown grace, closed just after it.
            metrics_scope = trio.CancelScope(shield=True)
            if config.metrics_port is not None:
                await nursery.start(_serve_metrics_in, metrics_scope, proxy, config)
            try:
                if server == "trio":
                    from ._door import make_server_ssl_context, serve_door

                    context = make_server_ssl_context(certfile, keyfile) if certfile else None
                    await serve_door(
                        proxy, host, port, ssl_context=context, task_status=task_status
                    )
                else:
                    await _serve_hypercorn(proxy, host, port, certfile, keyfile, task_status)
            finally:
                metrics_scope.cancel()
    finally:
        if own:
            with trio.CancelScope(shield=True):
                await proxy.aclose()


async def _serve_metrics_in(
    scope: trio.CancelScope, proxy: Proxy, config: Config, task_status: trio.TaskStatus[int]
) -> None:
    with scope:
        await serve_metrics(
            proxy, config.metrics_host, config.metrics_port, task_status=task_status
        )


async def _serve_hypercorn(
    proxy: Proxy,
    host: str,
    port: int,
    certfile: str | None,
    keyfile: str | None,
    task_status: trio.TaskStatus[int],
) -> None:
    from hypercorn.trio import serve as hypercorn_serve

    from ._asgi import TrioHttpWsApp

    config = proxy.config
    # The metrics listener is serve()'s here, not the app's lifespan's.
    app = TrioHttpWsApp(config, proxy, metrics_listener=False)
    hc = hypercorn_config(config, host, port, certfile=certfile, keyfile=keyfile)
    stop = trio.Event()
    server_scope = trio.CancelScope(shield=True)

    async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
        # Shielded so that cancelling serve() becomes a graceful shutdown (stop accepting, let
        # sessions close with 1001) bounded by the deadline set below, not an abrupt drop.
        with server_scope:
            await hypercorn_serve(
                app,  # type: ignore[arg-type]  # hypercorn types ASGI scopes as TypedDicts
                hc,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(run_server)
        bound = int(binds[0].rsplit(":", 1)[1])
        log.info("serving on %s for backend %s", binds[0], config.backend_url)
        task_status.started(bound)
        try:
            await trio.sleep_forever()
        finally:
            proxy.begin_shutdown()
            stop.set()
            server_scope.deadline = trio.current_time() + config.shutdown_timeout + 1
