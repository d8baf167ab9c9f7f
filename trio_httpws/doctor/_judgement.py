"""The doctor's judgement, with no I/O: what the probes saw -> steps, fixes, flows, verdict.

Everything here is a pure function of its arguments, so every failure and every fix sentence is
unit-tested without sockets. The token is redacted when the report is built: no string in a
report holds it, whatever the probes recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from .._protocol import PROTOCOL_VERSION
from .._redact import redact_tokens
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
#: CORS-safelisted methods): only the header then decides a preflight for the POST above.
SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})


class Mark(str, Enum):
    OK = "ok"
    FAIL = "fail"
    #: Not a failure of the flow, but worth a fix: it fails for some browsers only.
    WARN = "warn"
    SKIP = "skip"


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

    @property
    def ok(self) -> bool:
        """At least one flow works end to end: the doctor's exit status is 0."""
        return any(flow.works for flow in self.flows)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


#: Each step's name and title, in the order of the report.
STEP_TITLES = {
    "reach.port": "port answers",
    "reach.host": "Host check",
    "reach.token": "token accepted",
    "today.preflight": "CORS preflight",
    "today.pna": "Private Network Access",
    "today.get": "credentialed GET",
    "today.kernel_ws": "kernel WebSocket",
    "tunnel.diagnose": "diagnose",
    "tunnel.get": "tunnelled GET",
    "tunnel.kernel_ws": "kernel WebSocket",
    "kernel.start": "start a kernel",
    "kernel.delete": "delete it",
    "verdict": "verdict",
}
FLOW_TITLES = {"today": "today's flow", "tunnel": "old tunnel"}
_FLOW_PHRASES = {"today": "today's flow", "tunnel": "the old tunnel"}


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
        return f"put trio-httpws in front of it (trio-httpws --backend {self.target.base})"

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

    def add(self, name: str, mark: Mark, saw: str, fix: str = "", *, title: str = "") -> Step:
        secrets = [self.target.token]
        step = Step(
            name,
            title or STEP_TITLES[name],
            mark,
            redact_tokens(saw, secrets),
            redact_tokens(fix, secrets) if mark in (Mark.FAIL, Mark.WARN) else "",
        )
        self.steps.append(step)
        return step


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


def _describe(kind: Kind, version: str, api: Seen, diagnose: Seen | None) -> str:
    if api.status != 200:
        return "unknown (GET /api did not answer 200)"
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


def _reach(j: _Judge, obs: Observations) -> str | None:
    """The reach steps; returns why later steps cannot run, or None."""
    api, where = obs.api, f"{j.target.host}:{j.target.port}"
    if api.error is not None:
        j.add(
            "reach.port",
            Mark.FAIL,
            f"nothing answers at {where}: {api.error}",
            f"Nothing listens on {where}: start the runtime (trio-httpws, or jupyter server "
            f"--port={j.target.port}), or correct the port in the URL.",
        )
        return "the port does not answer"
    backend = re.search(r"cannot connect to backend (\S+?):? ", api.body.decode("utf-8", "replace"))
    if api.status == 502 and backend:
        j.add(
            "reach.port",
            Mark.FAIL,
            f"trio-httpws answers at {where}, but its backend does not: "
            + api.body.decode("utf-8", "replace").strip()[:200],
            f"Nothing listens on {backend.group(1)}: start Jupyter there, or give trio-httpws "
            "the right --backend URL.",
        )
        return "the backend does not answer"
    j.add("reach.port", Mark.OK, f"HTTP {api.status} from {where}")

    if api.status != 200:
        host_refused = api.status == 403
        fix = (
            f"The runtime refuses the Host {j.target.netloc!r}: use localhost or 127.0.0.1 in the "
            + (
                f"URL, or allow the name with --allow-host {j.target.host}."
                if j.kind is Kind.TRIO_HTTPWS
                else f"URL, or start Jupyter with {j.flag}allow_remote_access=True."
            )
            if host_refused
            else "This is not a Jupyter server's base URL: paste the URL the runtime printed "
            "(with its base path, if any)."
        )
        j.add("reach.host", Mark.FAIL, _error_saw(api, "GET /api"), fix)
        return "the Host check failed" if host_refused else "GET /api failed"
    j.add(
        "reach.host",
        Mark.OK,
        f"Host {j.target.netloc} accepted (GET /api: 200)",
    )

    status = obs.status
    assert status is not None
    if status.status == 200:
        saw = "GET /api/status" + (
            "?token=<redacted>: 200" if j.target.token else " without a token: 200"
        )
        j.add("reach.token", Mark.OK, saw)
        return None
    if j.target.token:
        fix = (
            "The token was refused: paste the URL with the current token, as the runtime printed "
            "it at startup (for a Jupyter you started, jupyter server list shows it)."
        )
    else:
        fix = "The URL carries no token: paste the whole URL the runtime printed, ?token= included."
    j.add("reach.token", Mark.FAIL, _error_saw(status, "GET /api/status"), fix)
    return "the token was refused"


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


def _today(j: _Judge, obs: Observations) -> None:
    pre = obs.preflight
    assert pre is not None
    what = f"OPTIONS /api/sessions from {j.origin}"
    refused = False
    if pre.error is not None or _origin_refused(j, pre):
        refused = pre.error is None
        fix = (
            j.allow_origin_fix() if refused else "Check that the runtime is running and reachable."
        )
        j.add("today.preflight", Mark.FAIL, _error_saw(pre, what), fix)
    else:
        problem = _cors_problem(j, pre)
        methods = (pre.header("access-control-allow-methods") or "").upper()
        allowed_headers = (pre.header("access-control-allow-headers") or "").lower()
        if problem is not None:
            saw, fix = problem
            j.add("today.preflight", Mark.FAIL, f"{what}: {pre.status}, {saw}", fix)
        elif pre.status is None or not 200 <= pre.status < 300:
            j.add(
                "today.preflight",
                Mark.FAIL,
                _error_saw(pre, what),
                f"The runtime must answer preflights with 2xx: {j.front}.",
            )
        elif PREFLIGHT_HEADERS not in _listed(allowed_headers) or (
            PREFLIGHT_METHOD not in SAFELISTED_METHODS and PREFLIGHT_METHOD not in _listed(methods)
        ):
            j.add(
                "today.preflight",
                Mark.FAIL,
                f"{what}: allows methods {methods or '(none)'}, headers {allowed_headers or '(none)'}",
                f"The preflight must allow {PREFLIGHT_METHOD} with Content-Type: {j.front}.",
            )
        else:
            j.add(
                "today.preflight",
                Mark.OK,
                f"{what}: {pre.status}, Access-Control-Allow-Origin {j.origin}, -Credentials true",
            )

    if refused or pre.error is not None:
        j.add("today.pna", Mark.SKIP, "not judged: the preflight failed")
    elif (pre.header("access-control-allow-private-network") or "").lower() == "true":
        j.add(
            "today.pna",
            Mark.OK,
            "Access-Control-Allow-Private-Network: true",
        )
    else:
        fix = (
            f"{_upper_first(j.upgrade)}."
            if j.kind is Kind.TRIO_HTTPWS
            else "Jupyter never answers the Private Network Access preflight of Chrome before 142: "
            + j.front
            + "."
        )
        # A warning, not a failure: Chrome sent this preflight only before its Local Network
        # Access prompt replaced it (Chrome 142); today's Chrome asks the user instead.
        j.add(
            "today.pna",
            Mark.WARN,
            "asked for Private Network Access; no Access-Control-Allow-Private-Network: true",
            fix,
        )

    get = obs.get
    assert get is not None
    what = f"GET /api/kernelspecs from {j.origin}"
    if get.error is not None or _origin_refused(j, get):
        fix = j.allow_origin_fix() if get.error is None else "Check that the runtime is reachable."
        j.add("today.get", Mark.FAIL, _error_saw(get, what), fix)
    elif (problem := _cors_problem(j, get)) is not None:
        saw, fix = problem
        j.add("today.get", Mark.FAIL, f"{what}: {get.status}, {saw}", fix)
    elif get.status != 200:
        j.add(
            "today.get",
            Mark.FAIL,
            _error_saw(get, what),
            "The runtime refused the token on a cross-origin request: check the token in the URL.",
        )
    else:
        j.add(
            "today.get",
            Mark.OK,
            f"{what}: 200, readable (Access-Control-Allow-Origin {j.origin}, -Credentials true)",
        )

    ws = obs.direct_ws
    assert ws is not None
    _kernel_socket(
        j,
        "today.kernel_ws",
        ws,
        f"kernel WebSocket straight to the runtime with Origin {j.origin}",
        refused_fix=(
            j.allow_origin_fix()
            if j.kind is not Kind.TRIO_HTTPWS or _origin_refused(j, pre)
            else f"trio-httpws passes the foreign Origin on and Jupyter refuses it: {j.upgrade}."
        ),
    )


def _kernel_socket(j: _Judge, name: str, ws: Seen, what: str, refused_fix: str) -> None:
    if ws.printed is not None:
        if ws.printed == KERNEL_OUTPUT:
            j.add(name, Mark.OK, f"{what}: opened; {KERNEL_CODE} printed 42")
        else:
            j.add(
                name,
                Mark.FAIL,
                f"{what}: opened, but {KERNEL_CODE} printed {ws.printed!r}",
                "The kernel runs but does not answer as expected: see the runtime's log.",
            )
        return
    title = ""
    if not j.kernel:
        # No kernel to open: the same checks on a socket that needs none.
        title = "WebSocket"
        what = what.replace("kernel WebSocket", f"WebSocket to {NO_KERNEL_WS_PATH}")
        if ws.opened and ws.error is None:
            j.add(name, Mark.OK, f"{what}: opened (--no-kernel: no kernel to open)", title=title)
            return
        if ws.status == 404 or ws.close_code in (4404, 1002):
            j.add(
                name,
                Mark.SKIP,
                f"{what}: {'HTTP 404' if ws.status == 404 else f'closed with {ws.close_code}'}, "
                "this runtime has no such socket; run without --no-kernel to try a kernel's",
                title=title,
            )
            return
    if ws.status in (401, 403):
        fix = refused_fix
    elif ws.close_code in (4401, 4403):
        # Judged before the error the close also set. Only trio-httpws closes so, when Jupyter
        # refuses the socket it opens with the auth URL's login (Jupyter sees no Origin there).
        fix = (
            f"Jupyter refused the kernel's WebSocket behind trio-httpws (HTTP "
            f"{ws.close_code - 4000}): check that the URL's ?token= is the runtime's current one."
        )
    elif ws.error is not None:
        fix = "Nothing answered in time: check the runtime's log, or raise --timeout."
        if ws.opened:
            fix = "The socket opened but the kernel did not answer: see the runtime's log."
    else:
        fix = "The runtime refused the kernel's WebSocket: see the runtime's log."
    j.add(name, Mark.FAIL, _error_saw(ws, what), fix, title=title)


def _tunnel(j: _Judge, obs: Observations) -> None:
    diag = obs.diagnose
    assert diag is not None
    what = f"/http_over_websocket/diagnose?min_version={PROTOCOL_VERSION}"
    missing = diag.status == 404
    if diag.answer is not None:
        version = diag.answer.get("extension_version")
        cookie = diag.answer.get("has_authentication_cookie")
        if diag.answer.get("is_outdated_extension"):
            j.add(
                "tunnel.diagnose",
                Mark.FAIL,
                f"{what}: extension_version {version}, is_outdated_extension true",
                f"The runtime speaks protocol {version}, older than the {PROTOCOL_VERSION} Colab "
                f"asks for (min_version): upgrade jupyter_http_over_ws to 0.0.8, or {j.front}.",
            )
        else:
            j.add(
                "tunnel.diagnose",
                Mark.OK,
                f"extension_version {version}, has_authentication_cookie "
                f"{str(cookie).lower()} (the tunnel logs in with the auth URL instead)",
            )
    elif missing:
        fix = (
            "The jupyter_http_over_ws extension is not loaded: enable it (jupyter serverextension "
            f"enable --py jupyter_http_over_ws), or {j.front}."
            if j.kind is Kind.NOTEBOOK
            else "No tunnel endpoints: the jupyter_http_over_ws extension cannot load in Jupyter "
            f"Server 2; {j.front}."
        )
        j.add("tunnel.diagnose", Mark.FAIL, _error_saw(diag, what), fix)
    elif diag.status == 403:
        fix = (
            j.allow_origin_fix()
            if j.kind is Kind.TRIO_HTTPWS
            else f"Start the Notebook with {j.flag}allow_origin={j.origin}."
        )
        j.add("tunnel.diagnose", Mark.FAIL, _error_saw(diag, what), fix)
    else:
        j.add(
            "tunnel.diagnose",
            Mark.FAIL,
            _error_saw(diag, what),
            "The tunnel's diagnose socket failed: see the runtime's log.",
        )
    if missing or diag.status == 403:
        why = "not tried: " + ("no tunnel endpoints" if missing else "the origin was refused")
        j.add("tunnel.get", Mark.SKIP, why)
        j.add("tunnel.kernel_ws", Mark.SKIP, why)
        return

    get = obs.tunnel_get
    assert get is not None
    what = "GET /api/kernelspecs through /http_over_websocket with the auth URL"
    body = get.json()
    if get.status == 200 and not get.proxy_error and isinstance(body, dict):
        specs = body.get("kernelspecs")
        count = len(specs) if isinstance(specs, dict) else 0
        j.add("tunnel.get", Mark.OK, f"{what}: 200, {count} kernel spec(s)")
    elif get.status == 200 and not get.proxy_error and len(get.body) >= TUNNEL_BODY_LIMIT:
        j.add("tunnel.get", Mark.OK, f"{what}: 200, over {TUNNEL_BODY_LIMIT} bytes (not parsed)")
    else:
        if get.close_code in (1002, 4400):
            fix = (
                f"The runtime refused min_version={PROTOCOL_VERSION}: upgrade jupyter_http_over_ws "
                f"to 0.0.8, or {j.front}."
            )
        elif get.proxy_error and get.status == 500:
            fix = (
                "The runtime could not log in with the auth URL: paste the URL exactly as the "
                "runtime printed it (same scheme, host and port as the runtime)."
            )
        elif get.status in (401, 403):
            fix = (
                "Jupyter refused the tunnelled request for lack of login cookies: the URL must "
                "carry the runtime's current ?token=."
            )
        elif get.status == 502:
            fix = "The proxy cannot reach its backend: start Jupyter, or fix --backend."
        else:
            fix = "The tunnelled request failed: see the runtime's log."
        saw = (
            f"{what}: {get.status} {get.reason}".rstrip()
            if get.status is not None and get.opened
            else _error_saw(get, what)
        )
        j.add("tunnel.get", Mark.FAIL, saw, fix)

    ws = obs.tunnel_ws
    assert ws is not None
    _kernel_socket(
        j,
        "tunnel.kernel_ws",
        ws,
        "kernel WebSocket through /http_over_websocket/proxied_ws",
        refused_fix=j.allow_origin_fix(),
    )


def _kernel_start(j: _Judge, obs: Observations) -> None:
    if not j.kernel:
        j.add("kernel.start", Mark.SKIP, "--no-kernel")
        return
    seen = obs.kernel
    assert seen is not None
    body = seen.json()
    if seen.status == 201 and isinstance(body, dict):
        j.add(
            "kernel.start",
            Mark.OK,
            f"POST /api/kernels: 201, kernel {body.get('name')} {body.get('id')}",
        )
        return
    j.add(
        "kernel.start",
        Mark.FAIL,
        _error_saw(seen, "POST /api/kernels"),
        "No kernel started: install ipykernel where the runtime runs (pip install ipykernel) "
        "and see the runtime's log.",
    )


def _kernel_delete(j: _Judge, obs: Observations) -> None:
    seen = obs.delete
    if seen is None:
        j.add("kernel.delete", Mark.SKIP, "no kernel was started")
    elif seen.status == 204:
        j.add("kernel.delete", Mark.OK, "DELETE /api/kernels/<id>: 204")
    else:
        j.add(
            "kernel.delete",
            Mark.FAIL,
            _error_saw(seen, "DELETE /api/kernels/<id>"),
            "The kernel may still run: stop it from the runtime (jupyter server list, or its UI).",
        )


def _flows(j: _Judge) -> tuple[Flow, ...]:
    flows = []
    for name in ("today", "tunnel"):
        involved = [s for s in j.steps if s.group in ("reach", name) or s.name == "kernel.start"]
        # Skipped for --no-kernel is not failed; skipped because something before failed is.
        tolerated = ("kernel.start", f"{name}.kernel_ws") if not j.kernel else ()
        failed = next(
            (
                s
                for s in involved
                if s.mark is Mark.FAIL or (s.mark is Mark.SKIP and s.name not in tolerated)
            ),
            None,
        )
        flows.append(
            Flow(
                name,
                FLOW_TITLES[name],
                failed is None,
                failed.name if failed else None,
                failed.saw if failed else "",
            )
        )
    return tuple(flows)


def assess(target: Target, origin: str, obs: Observations, *, kernel: bool = True) -> Report:
    """Judge what the probes saw: every step, its fix, which flows work, and the verdict."""
    kind, version = _runtime(obs.api, obs.diagnose)
    j = _Judge(target, origin, kind, version, kernel)
    blocked = _reach(j, obs)
    if blocked is None:
        _today(j, obs)
        _tunnel(j, obs)
        _kernel_start(j, obs)
        _kernel_delete(j, obs)
    else:
        for name in STEP_TITLES:
            if name != "verdict" and all(s.name != name for s in j.steps):
                j.add(name, Mark.SKIP, f"not tried: {blocked}")
    flows = _flows(j)
    works = " and ".join(_FLOW_PHRASES[f.name] for f in flows if f.works)
    failing = "; ".join(
        f"{f.title} fails at: {STEP_TITLES[f.failed_at or '']}" for f in flows if not f.works
    )
    if works:
        saw = f"{origin} can connect through {works}" + (f"; {failing}" if failing else "")
        j.add("verdict", Mark.OK, saw)
    else:
        j.add(
            "verdict",
            Mark.FAIL,
            f"{origin} cannot connect: {failing}",
            "Apply the first fix above, then run the doctor again.",
        )
    url = redact_tokens(target.url, [target.token])
    return Report(
        url, origin, _describe(kind, version, obs.api, obs.diagnose), tuple(j.steps), flows, kernel
    )
