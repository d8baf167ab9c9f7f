"""What the doctor was asked to check and what its probes saw: pure values, no judgement.

:class:`Target` is the URL a user pastes; each probe (``_probes``) records one :class:`Seen`;
:class:`Observations` holds them all, named, for the judgement (``_judgement``). The constants
say what the probes ask, so that the judgement knows what an answer was an answer to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from .._protocol import DEFAULT_PORTS
from .._redact import redact_tokens, refuse_userinfo

#: The request the doctor's preflight announces: a JSON POST, as Colab's ``POST /api/sessions``.
PREFLIGHT_METHOD = "POST"
PREFLIGHT_HEADERS = "content-type"
#: Bytes of the tunnelled ``GET /api/kernelspecs`` the doctor keeps to judge.
TUNNEL_BODY_LIMIT = 1 << 20
#: A WebSocket that needs no kernel, with the same token and Origin checks as a kernel's channels:
#: what the socket steps open when --no-kernel starts none (Jupyter Server 2's event stream).
NO_KERNEL_WS_PATH = "/api/events/subscribe"
#: What the kernel is asked to run, and what it must print.
KERNEL_CODE = "print(6*7)"
KERNEL_OUTPUT = "42\n"


@dataclass(frozen=True)
class Target:
    """The URL a user pastes, split into what the probes need."""

    #: scheme://host:port plus the base path, no trailing slash and no query.
    base: str
    scheme: str
    host: str
    port: int
    token: str | None
    #: The URL as pasted, for the auth URL of the tunnel.
    url: str

    @property
    def netloc(self) -> str:
        return urlsplit(self.base).netloc

    def query(self, **params: str) -> str:
        """``?token=...&...`` for a request that authenticates the way Colab does."""
        items = ([("token", self.token)] if self.token else []) + list(params.items())
        return "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in items) if items else ""


def parse_target(url: str) -> Target:
    """``http://localhost:8889/?token=abc`` -> Target; ``ValueError`` (token-free) if unusable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("the URL is not valid: " + redact_tokens(url)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "the URL must start with http:// or https:// and name a host, e.g. "
            f"http://localhost:8889/?token=...; got {redact_tokens(url)}"
        )
    refuse_userinfo(
        parts,
        "the URL must not carry a user name or password: Jupyter's login is the token, "
        "e.g. http://localhost:8889/?token=...",
    )
    tokens = parse_qs(parts.query).get("token")
    token = tokens[0] if tokens else None
    path = parts.path.rstrip("/")
    for tail in ("/tree", "/lab", "/login"):
        # A URL copied from the browser's address bar instead of the one printed at startup.
        if path.endswith(tail):
            path = path[: -len(tail)]
    base = urlunsplit((scheme, parts.netloc, path, "", ""))
    return Target(base, scheme, parts.hostname, port or DEFAULT_PORTS[scheme], token, url.strip())


@dataclass(frozen=True)
class Seen:
    """What one probe saw. Fields a probe does not produce stay at their defaults."""

    #: HTTP status: of the response, of a refused WebSocket handshake, or of a tunnelled answer.
    status: int | None = None
    #: Response headers, names lower-cased, in order (repeats kept).
    headers: tuple[tuple[str, str], ...] = ()
    #: The start of the response body.
    body: bytes = b""
    #: A WebSocket opened.
    opened: bool = False
    #: The close code of a WebSocket the server closed (refusals of the tunnel come this way).
    close_code: int | None = None
    #: Close reason, statusText of a tunnelled answer, or the body of a refused handshake.
    reason: str = ""
    #: The tunnelled answer was an error frame made by the proxy itself, not the backend's.
    proxy_error: bool = False
    #: The diagnose endpoint's answer.
    answer: dict[str, Any] | None = None
    #: What the kernel printed for KERNEL_CODE (None: not run).
    printed: str | None = None
    #: The exchange did not happen (connection refused, timeout, protocol error): why.
    error: str | None = None

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return ", ".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            return None


@dataclass(frozen=True)
class Observations:
    """Everything the probes saw; None for a probe that was not run."""

    #: GET /api without a token: the port, the Host check, the server's version.
    api: Seen
    #: GET /api/status with the token.
    status: Seen | None = None
    #: OPTIONS preflight from the origin, asking for Private Network Access.
    preflight: Seen | None = None
    #: Credentialed GET /api/kernelspecs from the origin.
    get: Seen | None = None
    #: POST /api/kernels (None with --no-kernel).
    kernel: Seen | None = None
    #: The kernel's channels, straight to the runtime with the origin.
    direct_ws: Seen | None = None
    #: /http_over_websocket/diagnose with min_version.
    diagnose: Seen | None = None
    #: GET /api/kernelspecs through /http_over_websocket with the auth URL.
    tunnel_get: Seen | None = None
    #: The kernel's channels through /http_over_websocket/proxied_ws.
    tunnel_ws: Seen | None = None
    #: DELETE /api/kernels/<id>.
    delete: Seen | None = None
