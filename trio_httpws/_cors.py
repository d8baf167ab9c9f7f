"""The origin policy and CORS answers for every path, with no I/O.

One place decides who may reach the backend through the proxy and what a browser is told: the
HTTP door (``_reverse``), the WebSocket door (``_proxy``: tunnel, ``proxied_ws`` and plain relays)
all classify a request with :meth:`OriginPolicy.classify` and build their answers from the
functions below. Jupyter lets any origin in that holds the token; the proxy refuses a foreign
origin it was not told to allow whatever the request carries, and speaks CORS (with Private
Network Access) for the ones it allows, so the backend needs no CORS settings of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from ._protocol import first_header, http_scheme, is_token

Headers = list[tuple[bytes, bytes]]

#: The methods a preflight is told about besides the one it asked for.
ALLOWED_METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE", "OPTIONS")
#: How long a browser may cache a preflight answer. Short, so that a changed allow list soon
#: takes effect; Chromium caps it at two hours anyway.
PREFLIGHT_MAX_AGE = 600


class OriginClass(str, Enum):
    """What a request's ``Origin`` header makes of it."""

    #: No Origin: not a browser, or a browser navigation or same-origin GET.
    NONE = "none"
    #: The proxy's own origin: scheme://host:port as the request's Host names it.
    SAME = "same"
    #: A foreign origin the configuration allows.
    ALLOWED = "allowed"
    #: A foreign origin that is not allowed.
    REFUSED = "refused"


@dataclass(frozen=True)
class OriginPolicy:
    """Which foreign browser origins may use the proxy.

    Matching is exact, as browsers send origins in one canonical form: a trailing slash, another
    case or extra labels make another origin. ``null`` (sandboxed frames, file:// pages) is
    foreign and refused unless listed. ``*`` allows every origin; the answers still name the
    request's own origin, because a credentialed request may not be answered with a literal ``*``.
    """

    origins: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None

    @classmethod
    def build(cls, origins: Iterable[str], pattern: str | None) -> OriginPolicy:
        return cls(frozenset(origins), re.compile(pattern) if pattern else None)

    @property
    def allow_all(self) -> bool:
        return "*" in self.origins

    def classify(self, origin: str | None, scheme: str = "", host: str = "") -> OriginClass:
        """Classify a request by its Origin, its scheme (http/https/ws/wss) and its Host."""
        if origin is None:
            return OriginClass.NONE
        if host and origin == f"{http_scheme(scheme)}://{host}":
            return OriginClass.SAME
        if self.allow_all or origin in self.origins:
            return OriginClass.ALLOWED
        if self.pattern is not None and self.pattern.fullmatch(origin) is not None:
            return OriginClass.ALLOWED
        return OriginClass.REFUSED

    def allows(self, origin: str | None, scheme: str = "", host: str = "") -> bool:
        return self.classify(origin, scheme, host) is not OriginClass.REFUSED


# -- answers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A response the proxy gives itself, without asking the backend."""

    status: int
    headers: Headers
    body: bytes = b""


def text_answer(status: int, text: str, extra: Headers | None = None) -> Answer:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        # Known length: the answer is not chunked, and the connection stays usable.
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    return Answer(status, headers, body)


def refused_answer(what: str = "Origin not allowed") -> Answer:
    """The 403 for a refused origin: no CORS headers, so the page cannot even read it."""
    return text_answer(403, what)


def cors_headers(origin: str) -> Headers:
    """What every answer to an allowed foreign origin carries."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


def is_preflight(method: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """A CORS preflight: OPTIONS asking about a method (plain OPTIONS goes to the backend)."""
    return (
        method == "OPTIONS" and first_header(headers, b"access-control-request-method") is not None
    )


def preflight_answer(origin: str, headers: Sequence[tuple[bytes, bytes]]) -> Answer:
    """The proxy's own answer to a preflight from an allowed origin (never forwarded).

    A malformed question gets a 400 that still carries the CORS headers, so the page's
    developer can read why in the console instead of a bare network error.
    """
    method = first_header(headers, b"access-control-request-method") or ""
    if not is_token(method):
        return text_answer(
            400,
            "Bad preflight: Access-Control-Request-Method is not a valid method",
            cors_headers(origin),
        )
    asked = first_header(headers, b"access-control-request-headers") or ""
    names = [name.strip() for name in asked.split(",")]
    names = [name for name in names if name]
    if not all(is_token(name) for name in names):
        return text_answer(
            400,
            "Bad preflight: Access-Control-Request-Headers must be a list of header names",
            cors_headers(origin),
        )
    methods = list(ALLOWED_METHODS)
    if method not in methods:
        methods.append(method)
    out = [
        *cors_headers(origin),
        (b"access-control-allow-methods", ", ".join(methods).encode("latin-1")),
    ]
    if names:
        out.append((b"access-control-allow-headers", ", ".join(names).encode("latin-1")))
    private = first_header(headers, b"access-control-request-private-network")
    if private is not None and private.strip().lower() == "true":
        out.append((b"access-control-allow-private-network", b"true"))
    out.append((b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()))
    return Answer(204, out)


@dataclass(frozen=True)
class Verdict:
    """What the HTTP door does with one request."""

    origin_class: OriginClass
    #: The proxy's own answer (a refused origin, a preflight), or None: forward the request.
    answer: Answer | None
    #: The origin that every further answer names in its CORS headers (:func:`with_cors`), or
    #: None: answers are passed on as they are.
    cors_origin: str | None


def judge_http(
    policy: OriginPolicy,
    method: str,
    headers: Sequence[tuple[bytes, bytes]],
    scheme: str,
    host: str,
) -> Verdict:
    """Decide one plain HTTP request from its method, headers, scheme and Host."""
    origin = first_header(headers, b"origin")
    origin_class = policy.classify(origin, scheme, host)
    if origin_class is OriginClass.REFUSED:
        return Verdict(origin_class, refused_answer(), None)
    if origin_class is OriginClass.ALLOWED:
        assert origin is not None
        if is_preflight(method, headers):
            # The preflight answer carries its CORS headers already.
            return Verdict(origin_class, preflight_answer(origin, headers), None)
        return Verdict(origin_class, None, origin)
    return Verdict(origin_class, None, None)


def with_cors(headers: Sequence[tuple[bytes, bytes]], origin: str) -> Headers:
    """``headers`` of an answer to an allowed origin, with our CORS headers in place of any.

    The backend's own ``Access-Control-*`` headers are dropped (a second, different
    ``Access-Control-Allow-Origin`` would make the browser refuse the answer) and its ``Vary``
    values are kept in one ``Vary`` that also names Origin.
    """
    out: Headers = []
    vary: list[str] = []
    for name, value in headers:
        lname = name.lower()
        if lname.startswith(b"access-control-"):
            continue
        if lname == b"vary":
            vary.extend(v.strip() for v in value.decode("latin-1").split(",") if v.strip())
            continue
        out.append((name, value))
    if not any(v == "*" or v.lower() == "origin" for v in vary):
        vary.append("Origin")
    out += [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", ", ".join(vary).encode("latin-1")),
    ]
    return out


def backend_request_headers(
    headers: Sequence[tuple[bytes, bytes]], origin_class: OriginClass, scheme: str, host: str
) -> Headers:
    """The request headers the backend gets for a request of ``origin_class``.

    For an allowed foreign origin the backend is not told about that origin: the proxy judged it,
    and the backend would judge it again against CORS settings it does not have. The Origin is
    dropped and a Referer becomes the proxy's own origin (Jupyter checks the Referer of
    cookie-authenticated GETs), so the backend sees what a same-origin page would send. Other
    classes pass unchanged.
    """
    if origin_class is not OriginClass.ALLOWED:
        return list(headers)
    own = f"{http_scheme(scheme)}://{host}/".encode("latin-1")
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname == b"origin":
            continue
        if lname == b"referer":
            value = own
        out.append((name, value))
    return out
