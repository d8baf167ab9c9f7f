"""The metrics listener: ``GET /metrics`` on a port of its own, nothing else.

Never on the proxy's port: every path there belongs to Jupyter (Jupyter Server serves a
``/metrics`` of its own, which the proxy forwards like any path). This listener answers
``/metrics`` (GET or HEAD) and 404 for any other path, on loopback unless told otherwise. It
serves text rendered from the proxy's counts, which hold no path, origin or token; and it logs
no request line, since a scraper's query is nobody's business either.

prometheus_client is optional (the ``metrics`` extra): only ``_metrics_export`` imports it,
and only once a metrics port is asked for.
"""

from __future__ import annotations

import logging
from types import ModuleType

import h11
import trio

from ._config import Config
from ._door import open_listener
from ._errors import ConfigError
from ._proxy import Proxy

log = logging.getLogger("trio_httpws.metrics")

#: What to run when prometheus_client is missing: the install that works from a clone.
INSTALL_HINT = "pip install -e '.[metrics]' in the trio_httpws clone"
METRICS_PATH = b"/metrics"
#: The most a scraper's request head may be: a request line and a few headers.
_MAX_HEAD = 8 * 1024
_READ_SIZE = 8 * 1024
_SERVER = b"trio-httpws-metrics"
_CLIENT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


def load_exporter() -> ModuleType:
    """``_metrics_export`` (which imports prometheus_client), or a ConfigError that says how to
    install it."""
    try:
        from . import _metrics_export
    except ImportError as exc:
        if not (exc.name or "").startswith("prometheus_client"):
            raise
        raise ConfigError(
            f"metrics_port needs prometheus_client, which is not installed: {INSTALL_HINT}"
        ) from None
    return _metrics_export


async def serve_metrics(
    proxy: Proxy,
    host: str | None = None,
    port: int | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``proxy``'s metrics on host:port (default: its config's ``metrics_host`` and
    ``metrics_port``) until cancelled; reports the bound port.

    ``serve()`` and the ASGI app run this themselves when ``metrics_port`` is set; run it in
    your own nursery next to ``handler()`` under trio-websocket.
    """
    exporter = load_exporter()
    config = proxy.config
    host = config.metrics_host if host is None else host
    port = (config.metrics_port or 0) if port is None else port
    registry = exporter.registry_for(proxy.stats)
    try:
        listener = open_listener(host, port, 64)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    bound = int(listener.socket.getsockname()[1])
    shown = f"[{host}]" if ":" in host else host
    log.info("serving metrics on http://%s:%d/metrics", shown, bound)
    proxy.metrics_port = bound
    async with listener, trio.open_nursery() as nursery:
        task_status.started(bound)
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of descriptors: the proxy's own listener says so; this one waits.
                log.debug("metrics listener cannot accept: %r", exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(_serve_connection, stream, exporter, registry, config)


async def _serve_connection(
    stream: trio.SocketStream, exporter: ModuleType, registry: object, config: Config
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    try:
        async with stream:
            while True:
                wait = config.head_timeout if conn.trailing_data[0] else config.keep_alive_timeout
                with trio.move_on_after(wait):
                    request = await _next_request(stream, conn)
                    if request is None:
                        return
                    if not await _answer(stream, conn, request, exporter, registry):
                        return
                    conn.start_next_cycle()
                    continue
                return  # a head too slow, or an idle connection: closed
    except (*_CLIENT_GONE, h11.ProtocolError) as exc:
        log.debug("metrics connection ended: %r", exc)


async def _next_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(stream, conn, exc.error_status_hint, b"Bad Request\n", close=True)
            return None
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
            continue
        return event if type(event) is h11.Request else None


async def _answer(
    stream: trio.SocketStream,
    conn: h11.Connection,
    request: h11.Request,
    exporter: ModuleType,
    registry: object,
) -> bool:
    """Answer one request; whether the connection may carry another."""
    # A scraper's request has no body; one that has gets its answer and the connection ends.
    close = type(conn.next_event()) is not h11.EndOfMessage
    path = request.target.split(b"?", 1)[0]
    if path != METRICS_PATH:
        # The path is not echoed: a mistyped URL may hold something secret.
        await _send(stream, conn, 404, b"Not Found: this port serves /metrics only\n", close)
    elif request.method not in (b"GET", b"HEAD"):
        await _send(stream, conn, 405, b"Method Not Allowed\n", close, [(b"allow", b"GET, HEAD")])
    else:
        body = exporter.render(registry)
        await _send(
            stream,
            conn,
            200,
            body,
            close,
            [(b"content-type", exporter.CONTENT_TYPE.encode("ascii"))],
            head_only=request.method == b"HEAD",
        )
    return not close and conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _send(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    close: bool,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    head_only: bool = False,
) -> None:
    if not headers:
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"server", _SERVER)]
    if close:
        headers.append((b"connection", b"close"))
    data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    if not head_only:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
