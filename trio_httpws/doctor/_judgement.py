"""The doctor's judgement, with no I/O: what the probes saw -> steps, fixes, flows, verdict.

Everything here is a pure function of its arguments, so every failure and every fix sentence is
unit-tested without sockets. The token is redacted when the report is built: no string in a
report holds it, whatever the probes recorded.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from .._protocol import PROTOCOL_VERSION
from .._redact import REDACTED, redact_tokens
from ._seen import (
    KERNEL_CODE,
    KERNEL_OUTPUT,
    NO_KERNEL_WS_PATH,
    PREFLIGHT_HEADERS,
    PREFLIGHT_METHOD,
    TUNNEL_BODY_LIMIT,
    Observations,
    Seen,
    Target,
)

#: Methods a browser sends whether or not Access-Control-Allow-Methods lists them (Fetch's
#: CORS-safelisted methods): only the header then decides the doctor's preflight (a POST).
SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})


class Mark(str, Enum):
    OK = "ok"
    FAIL = "fail"
    #: Not a failure of the flow, but worth a fix: it fails for some browsers only.
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True)
class Judged:
    """One step's judgement, as its function returns it (the report redacts it)."""

    mark: Mark
    saw: str
    #: One sentence saying what to do; kept for failures and warnings only.
    fix: str = ""
    #: A title of its own (a socket step with --no-kernel); "" for the table's.
    title: str = ""
    #: Why none of the later steps can be tried (a reach step failed), or None.
    blocks: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    mark: Mark
    saw: str
    #: One sentence saying what to do; set for failures only.
    fix: str = ""

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class Flow:
    name: str
    title: str
    works: bool
    #: The name of the first step of this flow that did not pass.
    failed_at: str | None
    #: What that step saw.
    why: str = ""


@dataclass(frozen=True)
class Report:
    url: str
    origin: str
    runtime: str
    steps: tuple[Step, ...]
    flows: tuple[Flow, ...]
    kernel: bool
    #: The base URL the probes used: the pasted URL less its query and any Jupyter page.
    base_url: str = ""
    #: The Jupyter page cut off the pasted URL (``/tree``), or None.
    cut: str | None = None
    #: What the report tells the user about that cut, or None.
    told: str | None = None

    @property
    def ok(self) -> bool:
        """At least one flow works end to end: the doctor's exit status is 0."""
        return any(flow.works for flow in self.flows)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


#: The ways to connect, in the order of the report: each is its group of steps after reach.
FLOW_TITLES = {"direct": "direct flow", "tunnel": "old tunnel"}
_FLOW_PHRASES = {"direct": "the direct flow", "tunnel": "the old tunnel"}


class Kind(str, Enum):
    TRIO_HTTPWS = "trio-httpws"
    JUPYTER_SERVER = "Jupyter Server"
    NOTEBOOK = "Notebook"


@dataclass
class _Judge:
    """The context every step's judgement needs: who answers, from which origin, for what URL."""

    target: Target
    origin: str
    kind: Kind
    version: str
    kernel: bool
    steps: list[Step] = field(default_factory=list)

    # -- phrases shared by several fixes ------------------------------------------------------

    @property
    def flag(self) -> str:
        return "--NotebookApp." if self.kind is Kind.NOTEBOOK else "--ServerApp."

    @property
    def front(self) -> str:
        # --backend is scheme://host:port only; a base path is trio-httpws's --base-url.
        base = "" if self.target.base_path == "/" else f" --base-url {self.target.base_path}"
        backend = f"{self.target.scheme}://{self.target.netloc}"
        return f"put trio-httpws in front of it (trio-httpws --backend {backend}{base})"

    def at(self, path: str) -> str:
        """A path of the server, under the URL's base path: what the probes asked."""
        return self.target.path(path)

    @property
    def upgrade(self) -> str:
        return (
            "upgrade trio-httpws to a version that serves Colab's direct flow (it answers CORS "
            "and Private Network Access preflights itself)"
        )

    def allow_origin_fix(self) -> str:
        if self.kind is Kind.TRIO_HTTPWS:
            return f"trio-httpws refuses the origin {self.origin}: start it with --allow-origin {self.origin}."
        return (
            f"Start Jupyter with {self.flag}allow_origin={self.origin} "
            f"{self.flag}allow_credentials=True, or {self.front}."
        )

    def add(self, name: str, title: str, judged: Judged) -> None:
        secrets = [self.target.token]
        fix = judged.fix if judged.mark in (Mark.FAIL, Mark.WARN) else ""
        self.steps.append(
            Step(
                name,
                judged.title or title,
                judged.mark,
                redact_tokens(judged.saw, secrets),
                redact_tokens(fix, secrets),
            )
        )


def _listed(value: str) -> set[str]:
    """The names in a comma-separated header value (Access-Control-Allow-Methods/-Headers)."""
    return {name.strip() for name in value.split(",")}


def _has_tunnel(diagnose: Seen | None) -> bool:
    """The tunnel's endpoints exist (a 403 only refuses this origin; a stock server says 404)."""
    return diagnose is not None and (diagnose.answer is not None or diagnose.status == 403)


def _runtime(api: Seen, diagnose: Seen | None) -> tuple[Kind, str]:
    """Who answers: trio-httpws, a Jupyter Server or a classic Notebook; and its version."""
    info = api.json()
    version = str(info.get("version", "")) if isinstance(info, dict) else ""
    first = version.split(".")[0]
    major = int(first) if first.isdecimal() else 0  # isdigit() would pass "²", which int() refuses
    servers = " ".join(api.header_values("server")).lower()
    if (
        "hypercorn" in servers
        or "trio-httpws" in servers
        or (_has_tunnel(diagnose) and 0 < major < 5)
    ):
        # The original extension cannot load in Jupyter Server 2: a tunnel in front of one is us.
        return Kind.TRIO_HTTPWS, version
    if major >= 5:
        return Kind.NOTEBOOK, version
    return Kind.JUPYTER_SERVER, version


def _describe(kind: Kind, version: str, api: Seen, diagnose: Seen | None, asked: str) -> str:
    if api.status != 200:
        return f"unknown (GET {asked} did not answer 200)"
    backend = f"Jupyter Server {version}" if version else "a Jupyter server"
    if kind is Kind.TRIO_HTTPWS:
        return f"trio-httpws in front of {backend}"
    if kind is Kind.NOTEBOOK:
        extension = "with" if _has_tunnel(diagnose) else "without"
        return f"Notebook {version} {extension} jupyter_http_over_ws"
    return f"{backend} (stock)"


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _error_saw(seen: Seen, what: str) -> str:
    if seen.error is not None:
        return f"{what}: {seen.error}"
    if seen.status is not None and not seen.opened:
        # A short text says why; an HTML error page does not fit on a line.
        text = " ".join(seen.reason.split())
        reason = f" ({text[:120]})" if text and not text.startswith("<") else ""
        return f"{what} answered HTTP {seen.status}{reason}"
    return f"{what}: closed with code {seen.close_code} {seen.reason!r}"


def _needed(seen: Seen | None) -> Seen:
    """What a probe saw that the steps before guarantee was probed."""
    assert seen is not None
    return seen


# ---------------------------------------------------------------------------------------------
# reach
# ---------------------------------------------------------------------------------------------


def _port(j: _Judge, obs: Observations) -> Judged:
    api, where = obs.api, f"{j.target.host}:{j.target.port}"
    if api.error is not None:
        return Judged(
            Mark.FAIL,
            f"nothing answers at {where}: {api.error}",
            f"Nothing listens on {where}: start the runtime (trio-httpws, or jupyter server "
            f"--port={j.target.port}), or correct the port in the URL.",
            blocks="the port does not answer",
        )
    text = api.body.decode("utf-8", "replace")
    backend = re.search(r"cannot connect to backend (\S+?):? ", text)
    if api.status == 502 and backend:
        return Judged(
            Mark.FAIL,
            f"trio-httpws answers at {where}, but its backend does not: " + text.strip()[:200],
            f"Nothing listens on {backend.group(1)}: start Jupyter there, or give trio-httpws "
            "the right --backend URL.",
            blocks="the backend does not answer",
        )
    return Judged(Mark.OK, f"HTTP {api.status} from {where}")


def _host(j: _Judge, obs: Observations) -> Judged:
    api = obs.api
    if api.status == 200:
        return Judged(Mark.OK, f"Host {j.target.netloc} accepted (GET {j.at('/api')}: 200)")
    if api.status == 404:
        return _not_jupyters(j, obs, _error_saw(api, f"GET {j.at('/api')}"))
    if api.status != 403:
        return Judged(
            Mark.FAIL,
            _error_saw(api, f"GET {j.at('/api')}"),
            "This is not a Jupyter server's base URL: paste the URL the runtime printed "
            "(with its base path, if any).",
            blocks="GET /api failed",
        )
    allow = (
        f"allow the name with --allow-host {j.target.host}."
        if j.kind is Kind.TRIO_HTTPWS
        else f"start Jupyter with {j.flag}allow_remote_access=True."
    )
    return Judged(
        Mark.FAIL,
        _error_saw(api, f"GET {j.at('/api')}"),
        f"The runtime refuses the Host {j.target.netloc!r}: use localhost or 127.0.0.1 in the "
        f"URL, or {allow}",
        blocks="the Host check failed",
    )


def _not_jupyters(j: _Judge, obs: Observations, saw: str) -> Judged:
    """The base URL answered 404: it is not Jupyter's. The fix names the URL to paste: a path
    above it that answered as Jupyter, else the one the runtime printed."""
    root = f"{j.target.scheme}://{j.target.netloc}"
    found = next((path for path, seen in obs.above if _is_jupyter_api(seen)), None)
    if found is not None:
        fix = (
            f"{j.target.base_url} is not a Jupyter server's URL, {root}{found} is: paste "
            f"{root}{found}?token=... (with the token the runtime printed)."
        )
    elif j.target.base_path == "/":
        fix = (
            f"Something answers at {j.target.netloc}, but not as Jupyter: check the port, and "
            "paste the URL the runtime printed at startup (jupyter server list shows it)."
        )
    else:
        fix = (
            f"{j.target.base_url} is not a Jupyter server's URL: paste the URL the runtime "
            f"printed at startup, e.g. {root}/?token=... (jupyter server list shows it)."
        )
    return Judged(Mark.FAIL, saw, fix, title="base URL", blocks="not a Jupyter server's URL")


def _is_jupyter_api(seen: Seen) -> bool:
    """``GET <base>api`` answered as Jupyter does: 200 and its version."""
    info = seen.json()
    return seen.status == 200 and isinstance(info, dict) and "version" in info


def _token(j: _Judge, obs: Observations) -> Judged:
    status = _needed(obs.status)
    if status.status == 200:
        asked = f"?token={REDACTED}" if j.target.token else " without a token"
        return Judged(Mark.OK, f"GET {j.at('/api/status')}{asked}: 200")
    if status.status == 404:
        return _not_jupyters(j, obs, _error_saw(status, f"GET {j.at('/api/status')}"))
    if j.target.token:
        fix = (
            "The token was refused: paste the URL with the current token, as the runtime printed "
            "it at startup (for a Jupyter you started, jupyter server list shows it)."
        )
    else:
        fix = "The URL carries no token: paste the whole URL the runtime printed, ?token= included."
    return Judged(
        Mark.FAIL,
        _error_saw(status, f"GET {j.at('/api/status')}"),
        fix,
        blocks="the token was refused",
    )


# ---------------------------------------------------------------------------------------------
# the direct flow (Colab's since 2025): CORS requests and WebSockets straight to the runtime
# ---------------------------------------------------------------------------------------------


def _cors_problem(j: _Judge, seen: Seen) -> tuple[str, str] | None:
    """Why a browser on the origin could not read this answer: (what was seen, fix), or None."""
    acao = seen.header("access-control-allow-origin")
    acac = seen.header("access-control-allow-credentials")
    if acao is None:
        fix = (
            f"This trio-httpws does not answer CORS: {j.upgrade}."
            if j.kind is Kind.TRIO_HTTPWS
            else f"Jupyter does not allow the origin {j.origin}: {_lower_first(j.allow_origin_fix())}"
        )
        return "no Access-Control-Allow-Origin", fix
    if acao == "*":
        return (
            "Access-Control-Allow-Origin: * (browsers refuse a literal * on credentialed requests)",
            f"Allow the exact origin ({j.flag}allow_origin={j.origin}, not *) with "
            f"{j.flag}allow_credentials=True, or {j.front}.",
        )
    if acao != j.origin:
        return (
            f"Access-Control-Allow-Origin: {acao}, not {j.origin}",
            j.allow_origin_fix(),
        )
    if (acac or "").lower() != "true":
        if j.kind is Kind.TRIO_HTTPWS:
            return "no Access-Control-Allow-Credentials: true", f"{_upper_first(j.upgrade)}."
        return (
            "no Access-Control-Allow-Credentials: true (the browser refuses every answer)",
            f"Start Jupyter with {j.flag}allow_credentials=True, or {j.front}.",
        )
    return None


def _origin_refused(j: _Judge, seen: Seen) -> bool:
    """A 403 trio-httpws made for the origin itself (the token passed already; no CORS headers)."""
    return (
        j.kind is Kind.TRIO_HTTPWS
        and seen.status == 403
        and seen.header("access-control-allow-origin") is None
    )


def _preflight(j: _Judge, obs: Observations) -> Judged:
    pre = _needed(obs.preflight)
    what = f"OPTIONS {j.at('/api/sessions')} from {j.origin}"
    if pre.error is not None:
        return Judged(
            Mark.FAIL, _error_saw(pre, what), "Check that the runtime is running and reachable."
        )
    if _origin_refused(j, pre):
        return Judged(Mark.FAIL, _error_saw(pre, what), j.allow_origin_fix())
    if (problem := _cors_problem(j, pre)) is not None:
        saw, fix = problem
        return Judged(Mark.FAIL, f"{what}: {pre.status}, {saw}", fix)
    if pre.status is None or not 200 <= pre.status < 300:
        fix = f"The runtime must answer preflights with 2xx: {j.front}."
        return Judged(Mark.FAIL, _error_saw(pre, what), fix)
    methods = (pre.header("access-control-allow-methods") or "").upper()
    allowed_headers = (pre.header("access-control-allow-headers") or "").lower()
    if PREFLIGHT_HEADERS not in _listed(allowed_headers) or (
        PREFLIGHT_METHOD not in SAFELISTED_METHODS and PREFLIGHT_METHOD not in _listed(methods)
    ):
        return Judged(
            Mark.FAIL,
            f"{what}: allows methods {methods or '(none)'}, headers {allowed_headers or '(none)'}",
            f"The preflight must allow {PREFLIGHT_METHOD} with Content-Type: {j.front}.",
        )
    return Judged(
        Mark.OK, f"{what}: {pre.status}, Access-Control-Allow-Origin {j.origin}, -Credentials true"
    )


def _pna(j: _Judge, obs: Observations) -> Judged:
    pre = _needed(obs.preflight)
    if pre.error is not None or _origin_refused(j, pre):
        return Judged(Mark.SKIP, "not judged: the preflight failed")
    if (pre.header("access-control-allow-private-network") or "").lower() == "true":
        return Judged(Mark.OK, "Access-Control-Allow-Private-Network: true")
    fix = (
        f"{_upper_first(j.upgrade)}."
        if j.kind is Kind.TRIO_HTTPWS
        else "Jupyter never answers the Private Network Access preflight of Chrome before 142: "
        + j.front
        + "."
    )
    # A warning, not a failure: Chrome sent this preflight only before its Local Network
    # Access prompt replaced it (Chrome 142); from then on Chrome asks the user instead.
    return Judged(
        Mark.WARN,
        "asked for Private Network Access; no Access-Control-Allow-Private-Network: true",
        fix,
    )


def _direct_get(j: _Judge, obs: Observations) -> Judged:
    get = _needed(obs.get)
    what = f"GET {j.at('/api/kernelspecs')} from {j.origin}"
    if get.error is not None:
        return Judged(Mark.FAIL, _error_saw(get, what), "Check that the runtime is reachable.")
    if _origin_refused(j, get):
        return Judged(Mark.FAIL, _error_saw(get, what), j.allow_origin_fix())
    if (problem := _cors_problem(j, get)) is not None:
        saw, fix = problem
        return Judged(Mark.FAIL, f"{what}: {get.status}, {saw}", fix)
    if get.status != 200:
        return Judged(
            Mark.FAIL,
            _error_saw(get, what),
            "The runtime refused the token on a cross-origin request: check the token in the URL.",
        )
    return Judged(
        Mark.OK,
        f"{what}: 200, readable (Access-Control-Allow-Origin {j.origin}, -Credentials true)",
    )


def _direct_ws(j: _Judge, obs: Observations) -> Judged:
    refused_fix = (
        j.allow_origin_fix()
        if j.kind is not Kind.TRIO_HTTPWS or _origin_refused(j, _needed(obs.preflight))
        else f"trio-httpws passes the foreign Origin on and Jupyter refuses it: {j.upgrade}."
    )
    what = f"kernel WebSocket straight to the runtime with Origin {j.origin}"
    return _kernel_socket(j, _needed(obs.direct_ws), what, refused_fix)


def _kernel_socket(j: _Judge, ws: Seen, what: str, refused_fix: str) -> Judged:
    """A kernel's channels socket (direct or tunnelled): opened, and the code printed 42."""
    if ws.printed is not None:
        if ws.printed == KERNEL_OUTPUT:
            return Judged(Mark.OK, f"{what}: opened; {KERNEL_CODE} printed 42")
        return Judged(
            Mark.FAIL,
            f"{what}: opened, but {KERNEL_CODE} printed {ws.printed!r}",
            "The kernel runs but does not answer as expected: see the runtime's log.",
        )
    if not j.kernel:
        return _kernel_free_socket(
            ws,
            what.replace("kernel WebSocket", f"WebSocket to {j.at(NO_KERNEL_WS_PATH)}"),
            refused_fix,
        )
    return Judged(Mark.FAIL, _error_saw(ws, what), _socket_fix(ws, refused_fix))


def _kernel_free_socket(ws: Seen, what: str, refused_fix: str) -> Judged:
    """With --no-kernel there is no kernel to open: the same checks on a socket needing none
    (``what`` names that socket)."""
    title = "WebSocket"
    if ws.opened and ws.error is None:
        return Judged(Mark.OK, f"{what}: opened (--no-kernel: no kernel to open)", title=title)
    if ws.status == 404 or ws.close_code in (4404, 1002):
        how = "HTTP 404" if ws.status == 404 else f"closed with {ws.close_code}"
        return Judged(
            Mark.SKIP,
            f"{what}: {how}, this runtime has no such socket; run without --no-kernel to try a "
            "kernel's",
            title=title,
        )
    return Judged(Mark.FAIL, _error_saw(ws, what), _socket_fix(ws, refused_fix), title=title)


def _socket_fix(ws: Seen, refused_fix: str) -> str:
    """What to do about a kernel socket that did not work."""
    if ws.status in (401, 403):
        return refused_fix
    if ws.close_code in (4401, 4403):
        # Judged before the error the close also set. Only trio-httpws closes so, when Jupyter
        # refuses the socket it opens with the auth URL's login (Jupyter sees no Origin there).
        return (
            f"Jupyter refused the kernel's WebSocket behind trio-httpws (HTTP "
            f"{ws.close_code - 4000}): check that the URL's ?token= is the runtime's current one."
        )
    if ws.error is not None and ws.opened:
        return "The socket opened but the kernel did not answer: see the runtime's log."
    if ws.error is not None:
        return "Nothing answered in time: check the runtime's log, or raise --timeout."
    return "The runtime refused the kernel's WebSocket: see the runtime's log."


def _looks_like_lna(j: _Judge, name: str, obs: Observations) -> bool:
    """Whether a page would see this failed step only as a network error, as it sees Chrome's
    refusal of Local Network Access: a failed preflight, an answer without usable CORS headers,
    a WebSocket that did not open."""
    if name == "direct.preflight":
        return True
    if name == "direct.get":
        get = _needed(obs.get)
        return get.error is not None or _cors_problem(j, get) is not None
    if name == "direct.kernel_ws":
        return not _needed(obs.direct_ws).opened
    return False


def _address_space(host: str) -> str | None:
    """Chrome's address space of the runtime's host: ``loopback``, ``local``, or None (public)."""
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "local"  # a name: Chrome judges the address it resolves to, most likely local
    if address.is_loopback:
        return "loopback"
    return "local" if address.is_private or address.is_link_local else None


def lna_note(origin: str, host: str) -> str:
    """What to check in Chrome when the direct flow fails as a refused Local Network Access
    permission also would (docs/chrome-local-network-access.md); "" for a public host."""
    space = _address_space(host)
    if space is None:
        return ""
    setting = "Loopback network" if space == "loopback" else "Local network"
    return (
        f"In Chrome 142 and later, also check Local Network Access: Chrome asks whether {origin} "
        "may reach this device, and a refusal looks the same in the page (console: "
        f'"Permission was denied for this request to access the `{space}` address space"); '
        f"allow it, or undo a refusal, in the site settings of {origin} ({setting}, before "
        "Chrome 145 Local network access: Allow), then reload "
        "(docs/chrome-local-network-access.md)."
    )


# ---------------------------------------------------------------------------------------------
# the old tunnel: /http_over_websocket
# ---------------------------------------------------------------------------------------------


def _diagnose(j: _Judge, obs: Observations) -> Judged:
    diag = _needed(obs.diagnose)
    what = f"{j.at('/http_over_websocket/diagnose')}?min_version={PROTOCOL_VERSION}"
    if diag.answer is not None:
        version = diag.answer.get("extension_version")
        cookie = diag.answer.get("has_authentication_cookie")
        if not diag.answer.get("is_outdated_extension"):
            return Judged(
                Mark.OK,
                f"extension_version {version}, has_authentication_cookie "
                f"{str(cookie).lower()} (the tunnel logs in with the auth URL instead)",
            )
        return Judged(
            Mark.FAIL,
            f"{what}: extension_version {version}, is_outdated_extension true",
            f"The runtime speaks protocol {version}, older than the {PROTOCOL_VERSION} Colab "
            f"asks for (min_version): upgrade jupyter_http_over_ws to 0.0.8, or {j.front}.",
        )
    if diag.status == 404 and j.kind is Kind.NOTEBOOK:
        fix = (
            "The jupyter_http_over_ws extension is not loaded: enable it (jupyter serverextension "
            f"enable --py jupyter_http_over_ws), or {j.front}."
        )
    elif diag.status == 404:
        fix = (
            "No tunnel endpoints: the jupyter_http_over_ws extension cannot load in Jupyter "
            f"Server 2; {j.front}."
        )
    elif diag.status == 403 and j.kind is not Kind.TRIO_HTTPWS:
        fix = f"Start the Notebook with {j.flag}allow_origin={j.origin}."
    elif diag.status == 403:
        fix = j.allow_origin_fix()
    else:
        fix = "The tunnel's diagnose socket failed: see the runtime's log."
    return Judged(Mark.FAIL, _error_saw(diag, what), fix)


def _tunnel_skipped(obs: Observations) -> Judged | None:
    """The tunnel's later steps are not tried when it has no endpoints or refused the origin."""
    status = _needed(obs.diagnose).status
    if status == 404:
        return Judged(Mark.SKIP, "not tried: no tunnel endpoints")
    if status == 403:
        return Judged(Mark.SKIP, "not tried: the origin was refused")
    return None


def _tunnel_get(j: _Judge, obs: Observations) -> Judged:
    if (skipped := _tunnel_skipped(obs)) is not None:
        return skipped
    get = _needed(obs.tunnel_get)
    what = (
        f"GET {j.at('/api/kernelspecs')} through {j.at('/http_over_websocket')} with the auth URL"
    )
    body = get.json()
    if get.status == 200 and not get.proxy_error and isinstance(body, dict):
        specs = body.get("kernelspecs")
        count = len(specs) if isinstance(specs, dict) else 0
        return Judged(Mark.OK, f"{what}: 200, {count} kernel spec(s)")
    if get.status == 200 and not get.proxy_error and len(get.body) >= TUNNEL_BODY_LIMIT:
        return Judged(Mark.OK, f"{what}: 200, over {TUNNEL_BODY_LIMIT} bytes (not parsed)")
    saw = (
        f"{what}: {get.status} {get.reason}".rstrip()
        if get.status is not None and get.opened
        else _error_saw(get, what)
    )
    return Judged(Mark.FAIL, saw, _tunnel_get_fix(j, get))


def _tunnel_get_fix(j: _Judge, get: Seen) -> str:
    if get.close_code in (1002, 4400):
        return (
            f"The runtime refused min_version={PROTOCOL_VERSION}: upgrade jupyter_http_over_ws "
            f"to 0.0.8, or {j.front}."
        )
    if get.proxy_error and get.status == 500:
        return (
            "The runtime could not log in with the auth URL: paste the URL exactly as the "
            "runtime printed it (same scheme, host and port as the runtime)."
        )
    if get.status in (401, 403):
        return (
            "Jupyter refused the tunnelled request for lack of login cookies: the URL must "
            "carry the runtime's current ?token=."
        )
    if get.status == 502:
        return "The proxy cannot reach its backend: start Jupyter, or fix --backend."
    return "The tunnelled request failed: see the runtime's log."


def _tunnel_ws(j: _Judge, obs: Observations) -> Judged:
    if (skipped := _tunnel_skipped(obs)) is not None:
        return skipped
    what = f"kernel WebSocket through {j.at('/http_over_websocket/proxied_ws')}"
    return _kernel_socket(j, _needed(obs.tunnel_ws), what, j.allow_origin_fix())


# ---------------------------------------------------------------------------------------------
# a real kernel, and the verdict
# ---------------------------------------------------------------------------------------------


def _kernel_start(j: _Judge, obs: Observations) -> Judged:
    if not j.kernel:
        return Judged(Mark.SKIP, "--no-kernel")
    seen = _needed(obs.kernel)
    body = seen.json()
    if seen.status == 201 and isinstance(body, dict):
        saw = f"POST {j.at('/api/kernels')}: 201, kernel {body.get('name')} {body.get('id')}"
        return Judged(Mark.OK, saw)
    return Judged(
        Mark.FAIL,
        _error_saw(seen, f"POST {j.at('/api/kernels')}"),
        "No kernel started: install ipykernel where the runtime runs (pip install ipykernel) "
        "and see the runtime's log.",
    )


def _kernel_delete(j: _Judge, obs: Observations) -> Judged:
    seen = obs.delete
    if seen is None:
        return Judged(Mark.SKIP, "no kernel was started")
    if seen.status == 204:
        return Judged(Mark.OK, f"DELETE {j.at('/api/kernels/<id>')}: 204")
    return Judged(
        Mark.FAIL,
        _error_saw(seen, f"DELETE {j.at('/api/kernels/<id>')}"),
        "The kernel may still run: stop it from the runtime (jupyter server list, or its UI).",
    )


def _flows(steps: Sequence[Step], kernel: bool) -> tuple[Flow, ...]:
    """Whether each flow works end to end, from the steps it needs: reach, its own and a kernel."""
    flows = []
    for name in FLOW_TITLES:
        involved = [s for s in steps if s.group in ("reach", name) or s.name == "kernel.start"]
        # Skipped for --no-kernel is not failed; skipped because something before failed is.
        tolerated = ("kernel.start", f"{name}.kernel_ws") if not kernel else ()
        failed = next(
            (
                s
                for s in involved
                if s.mark is Mark.FAIL or (s.mark is Mark.SKIP and s.name not in tolerated)
            ),
            None,
        )
        why = failed.saw if failed else ""
        failed_at = failed.name if failed else None
        flows.append(Flow(name, FLOW_TITLES[name], failed is None, failed_at, why))
    return tuple(flows)


def _verdict(j: _Judge, obs: Observations) -> Judged:
    flows = _flows(j.steps, j.kernel)
    works = " and ".join(_FLOW_PHRASES[f.name] for f in flows if f.works)
    failing = "; ".join(
        f"{f.title} fails at: {next(s.title for s in j.steps if s.name == f.failed_at)}"
        for f in flows
        if not f.works
    )
    if works:
        saw = f"{j.origin} can connect through {works}" + (f"; {failing}" if failing else "")
        return Judged(Mark.OK, saw)
    return Judged(
        Mark.FAIL,
        f"{j.origin} cannot connect: {failing}",
        "Apply the first fix above, then run the doctor again.",
    )


#: Every step, in the order of the report: its name (group.step), its title, its judgement.
STEPS: tuple[tuple[str, str, Callable[[_Judge, Observations], Judged]], ...] = (
    ("reach.port", "port answers", _port),
    ("reach.host", "Host check", _host),
    ("reach.token", "token accepted", _token),
    ("direct.preflight", "CORS preflight", _preflight),
    ("direct.pna", "Private Network Access", _pna),
    ("direct.get", "credentialed GET", _direct_get),
    ("direct.kernel_ws", "kernel WebSocket", _direct_ws),
    ("tunnel.diagnose", "diagnose", _diagnose),
    ("tunnel.get", "tunnelled GET", _tunnel_get),
    ("tunnel.kernel_ws", "kernel WebSocket", _tunnel_ws),
    ("kernel.start", "start a kernel", _kernel_start),
    ("kernel.delete", "delete it", _kernel_delete),
    ("verdict", "verdict", _verdict),
)


def assess(target: Target, origin: str, obs: Observations, *, kernel: bool = True) -> Report:
    """Judge what the probes saw: every step of STEPS in turn, which flows work, the verdict.

    Once a step blocks (a reach step failed), every later one but the verdict is skipped.
    """
    kind, version = _runtime(obs.api, obs.diagnose)
    j = _Judge(target, origin, kind, version, kernel)
    blocked: str | None = None
    for name, title, judge in STEPS:
        if blocked is not None and name != "verdict":
            j.add(name, title, Judged(Mark.SKIP, f"not tried: {blocked}"))
            continue
        judged = judge(j, obs)
        j.add(name, title, judged)
        blocked = judged.blocks or blocked
    flows = _flows(j.steps, kernel)
    _add_lna_note(j, obs, flows)
    secrets = [target.token]
    return Report(
        redact_tokens(target.url, secrets),
        origin,
        _describe(kind, version, obs.api, obs.diagnose, target.path("/api")),
        tuple(j.steps),
        flows,
        kernel,
        base_url=target.base_url,
        cut=target.cut,
        told=_told(target),
    )


def _add_lna_note(j: _Judge, obs: Observations, flows: Sequence[Flow]) -> None:
    """The direct flow's first failure, when a browser would show it as it shows a refused Local
    Network Access permission, also says what to check in Chrome: once, not under every step."""
    failed_at = next(f.failed_at for f in flows if f.name == "direct")
    if failed_at is None or not failed_at.startswith("direct."):
        return
    note = lna_note(j.origin, j.target.host)
    if note and _looks_like_lna(j, failed_at, obs):
        at = next(i for i, s in enumerate(j.steps) if s.name == failed_at)
        j.steps[at] = replace(j.steps[at], fix=f"{j.steps[at].fix} {note}")


def _told(target: Target) -> str | None:
    """The line that says which page was cut off the pasted URL, and what to paste instead."""
    told = target.told()
    if told is None:
        return None
    query = "?token=..." if target.token else ""
    return f"{told} (the URL to paste: {target.base_url}{query})"
