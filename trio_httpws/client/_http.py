"""Plain HTTP requests straight to the runtime (no tunnel), with the headers a browser would send.

They go over the package's one HTTP/1.1 stack, ``_backend``'s h11 over trio streams: one
connection per call, closed afterwards (a handful of requests gains nothing from keep-alive).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._backend import BackendPool
from .._config import BackendURL
from .._errors import BackendError
from .._protocol import DEFAULT_PORTS
from .._redact import log_path, refuse_userinfo
from ._errors import ClientConnectionError
from ._ws import DEFAULT_CONNECT_TIMEOUT, Headers, base_path

#: Body bytes kept by :func:`http_request`; the rest is read and dropped.
DEFAULT_MAX_BODY = 2**20


@dataclass(frozen=True)
class PlainResponse:
    """A whole response: status, headers (names lower-cased, repeats kept) and body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The header's values joined with ", ", or None when absent."""
        values = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(values) if values else None


async def http_request(
    url: str,
    method: str,
    path: str,
    *,
    headers: Headers | None = None,
    body: bytes | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_body: int = DEFAULT_MAX_BODY,
) -> PlainResponse:
    """Send ``method path`` to the server at ``url`` (its base URL) and read the whole answer.

    ``path`` (with its query) is appended to ``url``'s path. ``Host`` is the URL's unless
    ``headers`` names one; nothing else is added, so the request carries exactly the headers
    given (an ``Origin``, ``Access-Control-Request-*``). Failing to connect or a broken answer
    raises :exc:`ClientConnectionError`, whose message has no query (it may hold a token).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an http(s):// base URL")
    refuse_userinfo(parts)
    backend = BackendURL(parts.scheme, parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme])
    items = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    if not any(name.lower() == "host" for name, _ in items):
        items.insert(0, ("Host", parts.netloc))
    raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in items]
    target = base_path(parts) + "/" + path.lstrip("/")
    pool = BackendPool(
        backend,
        ssl_context=ssl_context,
        max_idle=0,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    try:
        async with pool.request(method, target, raw, body) as response:
            data = b""
            async for chunk in response.iter_chunks():
                data += chunk[: max(0, max_body - len(data))]
            return PlainResponse(
                response.status,
                response.reason,
                tuple(
                    (n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in response.headers
                ),
                data,
            )
    except BackendError as exc:
        message = str(exc).replace("backend ", "")
        raise ClientConnectionError(f"{method} {log_path(target)}: {message}") from exc
    finally:
        await pool.aclose()
