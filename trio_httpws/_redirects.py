"""Following the backend's redirects, with no I/O.

The original extension's HTTP client (tornado's, with its defaults) followed redirects: up to 5,
POST becoming GET on 301 and 302, every method but HEAD becoming GET on 303, 307 and 308 keeping
the method and the body; the client got the final response and never saw the 3xx. A tunnelled
request here does the same for redirects that stay on the backend. A redirect anywhere else goes
back to the client as it is: the tunnel reaches only the backend (the original would have
followed it, cookies and all, to whatever host the Location named).

The auth-URL fetch follows redirects by the same ``location_target`` rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from ._errors import TooManyRedirects
from ._protocol import DEFAULT_PORTS, XSRF_METHODS, add_xsrf_query, split_host, validate_path
from ._redact import log_path

#: The statuses tornado's client follows (and so the original did).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: tornado's default ``max_redirects``.
MAX_REDIRECTS = 5

#: (scheme, lower-case host name, port): ``("http", "127.0.0.1", 8888)``.
Origin = tuple[str, str, int]


def origin_of(scheme: str, host: str) -> Origin:
    """The origin of ``scheme`` (http/https, or ws/wss for the same) and a Host value."""
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    name, port = split_host(host)
    return (scheme, name, DEFAULT_PORTS.get(scheme, 0) if port is None else port)


def location_target(location: str, current: str, origins: Sequence[Origin]) -> str | None:
    """The request target that a ``Location`` names on the backend, or None for anywhere else.

    ``current`` is the target of the request that was redirected, ``origins[0]`` the origin the
    backend was addressed as (the Host it received) and the rest other names of the backend.
    ``Location`` is resolved against ``current`` as RFC 3986 says (``/x``, ``x``, ``?q`` and
    ``//host/x`` all work, as in tornado's ``urljoin``); the result must be on one of
    ``origins`` without user info, and a valid origin-form target.
    """
    scheme, host, port = origins[0]
    netloc = f"[{host}]" if ":" in host else host
    try:
        url = urlsplit(urljoin(f"{scheme}://{netloc}:{port}{current}", location.strip()))
        url_port = url.port
    except ValueError:  # a malformed authority, such as "http://[x" or a port out of range
        return None
    if url.hostname is None or url.username is not None or url.password is not None:
        return None
    name = url.hostname.lower().rstrip(".")
    if (url.scheme, name, url_port or DEFAULT_PORTS.get(url.scheme, 0)) not in origins:
        return None
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    try:
        return validate_path(target)
    except ValueError:  # control characters, spaces, "//host": nothing we would send
        return None


def redirected_method(status: int, method: str, body: bytes | None) -> tuple[str, bytes | None]:
    """The method and body of the request that follows a redirect with ``status`` (tornado's rule)."""
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        return "GET", None
    return method, body


@dataclass(frozen=True)
class Hop:
    """One request of a redirect chain, as it goes to the backend."""

    method: str
    #: The target with the ``_xsrf`` query already added where the method needs it.
    target: str
    #: Always whole bytes (a tunnelled body arrives in one JSON message), so that a 307 or 308
    #: can send it again.
    body: bytes | None
    #: Redirects followed to reach this request.
    redirects: int = 0


def first_hop(method: str, path: str, body: bytes | None, xsrf: str | None) -> Hop:
    return Hop(method, add_xsrf_query(path, method, xsrf), body)


def next_hop(
    hop: Hop, status: int, location: str | None, origins: Sequence[Origin], xsrf: str | None
) -> Hop | None:
    """The request that follows ``hop``'s response, or None when that response is final.

    Final: not a redirect, no ``Location``, or a ``Location`` off the backend. Raises
    ``TooManyRedirects`` when the backend redirects once more after ``MAX_REDIRECTS``
    (tornado would hand that last 3xx on as the response; we say what went wrong instead).
    Each hop keeps the ``_xsrf`` rule: a state-changing method carries the token in its query.
    """
    if status not in REDIRECT_STATUSES or location is None:
        return None
    target = location_target(location, hop.target, origins)
    if target is None:
        return None
    if hop.redirects >= MAX_REDIRECTS:
        raise TooManyRedirects(
            f"the backend redirected more than {MAX_REDIRECTS} times (last to {log_path(target)})"
        )
    method, body = redirected_method(status, hop.method, hop.body)
    return Hop(method, _with_xsrf(target, method, xsrf), body, hop.redirects + 1)


def _with_xsrf(target: str, method: str, xsrf: str | None) -> str:
    # A backend that keeps the query when it redirects (tornado's trailing-slash redirects do)
    # hands our _xsrf back: adding it again on every hop would only grow the URL.
    if xsrf and method in XSRF_METHODS:
        query = target.partition("?")[2]
        if f"_xsrf={quote(xsrf, safe='')}" in query.split("&"):
            return target
    return add_xsrf_query(target, method, xsrf)
