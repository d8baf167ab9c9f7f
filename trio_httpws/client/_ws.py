"""Opening WebSockets: endpoints, headers, handshake errors; the one-shot diagnose socket,
proxied WebSockets and direct ones (a kernel's channels straight to the runtime)."""

from __future__ import annotations

import json
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit

import trio
import trio_websocket

from .._pasted import split_page
from .._protocol import (
    AUTH_URL_PARAM,
    DIAGNOSE_PATH,
    MIN_VERSION_PARAM,
    PROXIED_WS_PREFIX,
    close_of,
    parse_strict_version,
)
from .._redact import log_path, redact, refuse_userinfo
from ._errors import ClientConnectionError, ConnectionLost, ConnectionRefused, ProtocolError

log = logging.getLogger("trio_httpws.client")

#: Largest WebSocket message accepted. A full frame is 64 KiB of body as ~87 KB of base64 plus the
#: headers; this leaves room for servers that send bigger frames than the original did.
DEFAULT_MAX_MESSAGE_SIZE = 2**20
#: Largest message on a proxied WebSocket: kernel messages (a plot, a big output) pass 1 MiB easily;
#: this matches the proxy's own default limit.
PROXIED_WS_MAX_MESSAGE_SIZE = 64 * 2**20
#: Seconds allowed for the TCP connection and the WebSocket handshake.
DEFAULT_CONNECT_TIMEOUT = 30.0

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def _ws_base(url: str) -> tuple[str, str, str]:
    """``http://h:p/base/`` -> (``ws``, ``h:p``, ``/base``): the WebSocket form of a base URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    refuse_userinfo(parts)  # first: the message below shows the URL
    if scheme is None or not parts.netloc:
        raise ValueError(f"url must be an http(s):// or ws(s):// base URL, got {redact(url)!r}")
    if parts.query or parts.fragment:
        raise ValueError(
            "url must be the server's base URL without a query; pass a URL with ?token=... "
            "as auth_url instead"
        )
    return scheme, parts.netloc, base_path(parts)


def base_path(parts: SplitResult) -> str:
    """The base URL's path without its trailing ``/``, a pasted Jupyter page cut off (and said)."""
    path, cut = split_page(parts.path)
    if cut is not None:
        log.warning("%s is a Jupyter page, not part of the server's URL: cut off", cut)
    return path.rstrip("/")


def _endpoint(url: str, path: str, params: Mapping[str, str | None]) -> str:
    scheme, netloc, base = _ws_base(url)
    target, _, query = path.partition("?")
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = "&".join(q for q in (query, extra) if q)
    return urlunsplit((scheme, netloc, f"{base}/{target.lstrip('/')}", query, ""))


def _header_list(
    extra_headers: Headers | None, origin: str | None
) -> list[tuple[bytes, bytes]] | None:
    items = extra_headers.items() if isinstance(extra_headers, Mapping) else (extra_headers or ())
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in items]
    if origin is not None:
        headers = [h for h in headers if h[0].lower() != b"origin"]
        headers.append((b"Origin", origin.encode("latin-1")))
    return headers or None


def _check_min_version(min_version: str | None) -> None:
    if min_version is not None:
        # An unparseable version would only get the socket closed with a reason the original's
        # close code makes unreadable; say so here instead.
        parse_strict_version(min_version)


@asynccontextmanager
async def _open_ws(
    url: str,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None,
    subprotocols: Iterable[str] | None = None,
    max_message_size: int,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """trio-websocket's ``open_websocket_url``, with our handshake errors and a quick exit.

    On exit after the peer closed the socket we do not wait for the server to close TCP. When the
    original closes with code 400, wsproto treats the close frame as a protocol error and never
    answers it, so tornado would keep the connection for its 5 s close timeout.
    """
    with trio.CancelScope() as scope:
        try:
            async with trio_websocket.open_websocket_url(
                url,
                ssl_context,
                subprotocols=subprotocols,
                extra_headers=extra_headers,
                max_message_size=max_message_size,
                connect_timeout=connect_timeout,
            ) as ws:
                try:
                    yield ws
                finally:
                    if ws.closed is not None:
                        scope.cancel()
        except trio_websocket.ConnectionRejected as exc:
            body = (exc.body or b"").decode("utf-8", "replace")
            raise ConnectionRefused(
                f"server refused the WebSocket handshake with HTTP {exc.status_code}: {body}",
                reason=body,
                status=exc.status_code,
            ) from exc
        except trio_websocket.HandshakeError as exc:
            # Without the query: it carries the auth URL, and with it the user's token.
            raise ClientConnectionError(
                f"could not open WebSocket {log_path(url)}: {exc!r}"
            ) from exc


def decode_frame(message: str | bytes) -> dict[str, Any] | None:
    """A server frame as a JSON object, or None (logged) for anything else."""
    if not isinstance(message, str):
        log.warning("ignoring a binary message: the protocol only sends JSON text")
        return None
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        log.warning("ignoring a frame that is not JSON: %.200r", message)
        return None
    if not isinstance(frame, dict):
        log.warning("ignoring a frame that is not a JSON object: %.200r", message)
        return None
    return frame


async def diagnose(
    url: str,
    *,
    min_version: str | None = None,
    origin: str | None = None,
    extra_headers: Headers | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> dict[str, Any]:
    """Open ``{url}/http_over_websocket/diagnose``, send one message and return the answer.

    The answer says which protocol version the server speaks (``extension_version``), whether the
    upgrade request carried an ``_xsrf`` cookie (``has_authentication_cookie``) and whether
    ``min_version`` is newer than the server (``is_outdated_extension``).
    """
    endpoint = _endpoint(url, DIAGNOSE_PATH, {MIN_VERSION_PARAM: min_version})
    token = "diagnose-" + secrets.token_hex(8)
    async with _open_ws(
        endpoint,
        extra_headers=_header_list(extra_headers, origin),
        max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
    ) as ws:
        try:
            await ws.send_message(token)
            message = await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            code, reason = close_of(exc.reason)
            raise ConnectionLost(
                f"diagnose socket closed: {exc.reason}", code=code, reason=reason
            ) from None
    answer = decode_frame(message)
    if answer is None or answer.get("message_id") != token:
        raise ProtocolError(f"unexpected diagnose answer: {message!r:.200}")
    return answer


@asynccontextmanager
async def open_proxied_websocket(
    base_url: str,
    path: str,
    *,
    auth_url: str | None = None,
    origin: str | None = None,
    extra_headers: Headers | None = None,
    subprotocols: Iterable[str] | None = None,
    max_message_size: int = PROXIED_WS_MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Open a WebSocket to ``path`` on the backend, through ``/http_over_websocket/proxied_ws``.

    ``path`` is the backend path and query, e.g. ``/api/kernels/<id>/channels?session_id=...``.
    Yields trio-websocket's connection: messages pass through unchanged both ways. A handshake
    the server refuses raises :exc:`ConnectionRefused`; when the backend refuses after the proxy
    accepted, the socket closes (trio_httpws: code 4000 + the backend's status; the original: the
    bare status, which wsproto reports as 1002) and trio-websocket raises ``ConnectionClosed``.
    """
    if not path.startswith("/"):
        raise ValueError("path must start with '/'")
    endpoint = _endpoint(base_url, PROXIED_WS_PREFIX + path.lstrip("/"), {AUTH_URL_PARAM: auth_url})
    async with _open_ws(
        endpoint,
        extra_headers=_header_list(extra_headers, origin),
        subprotocols=subprotocols,
        max_message_size=max_message_size,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
    ) as ws:
        yield ws


@asynccontextmanager
async def open_websocket(
    url: str,
    path: str,
    *,
    origin: str | None = None,
    extra_headers: Headers | None = None,
    subprotocols: Iterable[str] | None = None,
    max_message_size: int = PROXIED_WS_MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Open a WebSocket straight to ``path`` on the server at ``url``, as a page on ``origin`` would.

    No tunnel: this is how Colab's current front end opens a kernel's channels
    (``/api/kernels/<id>/channels?session_id=...&token=...``). A refused handshake raises
    :exc:`ConnectionRefused` with the HTTP ``status``.
    """
    if not path.startswith("/"):
        raise ValueError("path must start with '/'")
    async with _open_ws(
        _endpoint(url, path, {}),
        extra_headers=_header_list(extra_headers, origin),
        subprotocols=subprotocols,
        max_message_size=max_message_size,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
    ) as ws:
        yield ws
