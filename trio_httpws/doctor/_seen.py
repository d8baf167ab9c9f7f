"""What the doctor was asked to check and what its probes saw: pure values, no judgement.

:class:`Target` is the URL a user pastes; each probe (``_probes``) records one :class:`Seen`;
:class:`Observations` holds them all, named, for the judgement (``_judgement``). The constants
say what the probes ask, so that the judgement knows what an answer was an answer to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .._pasted import PastedUrl, split_pasted
from .._protocol import DEFAULT_PORTS

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
    #: The URL as pasted, for the report.
    url: str
    #: The Jupyter page cut off the pasted URL (``/tree``), or None.
    cut: str | None = None

    @property
    def netloc(self) -> str:
        return urlsplit(self.base).netloc

    @property
    def base_path(self) -> str:
        """The base URL's path, ``/`` or ``/u/a/``."""
        return urlsplit(self.base).path + "/"

    @property
    def base_url(self) -> str:
        """``scheme://host:port/base/``: what to paste, less its ``?token=``."""
        return self.base + "/"

    @property
    def auth_url(self) -> str:
        """The tunnel's auth URL: the base URL with the token, never a page that was cut off."""
        return self.base_url + self.query()

    def path(self, path: str) -> str:
        """``/api/x`` as a path on the server: under the base path (``/u/a/api/x``)."""
        return self.base_path + path.lstrip("/")

    def query(self, **params: str) -> str:
        """``?token=...&...`` for a request that authenticates the way Colab does."""
        items = ([("token", self.token)] if self.token else []) + list(params.items())
        return "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in items) if items else ""

    def told(self) -> str | None:
        """What to tell the user about a page cut off the pasted URL, or None."""
        return PastedUrl(self.base_url, self.token, self.cut).told()


def parse_target(url: str) -> Target:
    """``http://localhost:8889/?token=abc`` -> Target, read by the one rule for a pasted URL
    (``trio_httpws._pasted``); a ``ValueError`` whose message holds no token if unusable."""
    pasted = split_pasted(url)
    parts = urlsplit(pasted.base_url)
    assert parts.hostname is not None  # split_pasted refuses a URL without a host
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    base = pasted.base_url.rstrip("/")
    return Target(base, parts.scheme, parts.hostname, port, pasted.token, url.strip(), pasted.cut)


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
    #: When the base URL answered 404 (not Jupyter's): GET <path>api for the paths above it,
    #: nearest first, up to the first that answered 200 (where Jupyter may be instead).
    above: tuple[tuple[str, Seen], ...] = ()
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


def paths_above(base_path: str) -> list[str]:
    """``/u/a/b/`` -> ``["/u/a/", "/u/", "/"]``: where else a base URL may be, nearest first."""
    segments = base_path.strip("/").split("/") if base_path.strip("/") else []
    return ["/" + "".join(f"{s}/" for s in segments[:n]) for n in range(len(segments) - 1, -1, -1)]
