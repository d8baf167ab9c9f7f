"""The doctor's judgement and rendering, without sockets: what it concludes from what it saw."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from trio_httpws._protocol import COLAB_ORIGIN
from trio_httpws._redact import REDACTED, redact_tokens
from trio_httpws.doctor import (
    Mark,
    Observations,
    Report,
    Seen,
    assess,
    parse_target,
    render_json,
    render_text,
    self_check,
    verdict_line,
)
from trio_httpws.doctor._judgement import lna_note
from trio_httpws.doctor._probes import _socket_seen, _timed
from trio_httpws.doctor._seen import TUNNEL_BODY_LIMIT, paths_above

from ..support.pasted import CASES, SECRET

#: What the direct flow's first failure adds when a refused Local Network Access looks the same.
LNA = lna_note(COLAB_ORIGIN, "localhost")
PASTED = [case for case in CASES if "error" not in case]
PASTED_ERRORS = [case for case in CASES if "error" in case]
TOKEN = "abc123secret"
URL = f"http://localhost:8889/?token={TOKEN}"
BASE = "http://localhost:8889"
CORS = (
    ("access-control-allow-origin", COLAB_ORIGIN),
    ("access-control-allow-credentials", "true"),
)
PREFLIGHT = (
    *CORS,
    ("access-control-allow-methods", "GET, PUT, POST, PATCH, DELETE, OPTIONS"),
    ("access-control-allow-headers", "content-type"),
    ("access-control-allow-private-network", "true"),
)
JUPYTER_API = Seen(status=200, body=b'{"version": "2.21.1"}')
NOTEBOOK_API = Seen(status=200, body=b'{"version": "6.5.7"}')
DIAGNOSED = Seen(
    opened=True,
    answer={
        "extension_version": "0.0.7",
        "has_authentication_cookie": False,
        "is_outdated_extension": False,
    },
)

#: trio-httpws, answering CORS and PNA itself: everything works.
GOOD = Observations(
    api=replace(JUPYTER_API, headers=(("server", "hypercorn-h11"),)),
    status=Seen(status=200),
    preflight=Seen(status=204, headers=PREFLIGHT),
    get=Seen(status=200, headers=CORS, body=b"{}"),
    kernel=Seen(status=201, body=b'{"id": "k1", "name": "python3"}'),
    direct_ws=Seen(opened=True, printed="42\n"),
    diagnose=DIAGNOSED,
    tunnel_get=Seen(status=200, opened=True, body=b'{"kernelspecs": {"python3": {}}}'),
    tunnel_ws=Seen(opened=True, printed="42\n"),
    delete=Seen(status=204),
)
#: A stock Jupyter Server 2 with no flags, as it answers (it echoes the Origin, no -Credentials).
STOCK = Observations(
    api=JUPYTER_API,
    status=Seen(status=200),
    preflight=Seen(
        status=200,
        headers=(
            ("access-control-allow-origin", COLAB_ORIGIN),
            ("access-control-allow-methods", "GET, PUT, POST, PATCH, DELETE, OPTIONS"),
            ("access-control-allow-headers", "accept, content-type, authorization, x-xsrftoken"),
        ),
    ),
    get=Seen(status=200, headers=(("access-control-allow-origin", COLAB_ORIGIN),)),
    kernel=None,
    direct_ws=Seen(opened=True),
    diagnose=Seen(status=404, reason="404 Not Found"),
)


def judge(
    obs: Observations, url: str = URL, *, kernel: bool = True, origin: str = COLAB_ORIGIN
) -> Report:
    return assess(parse_target(url), origin, obs, kernel=kernel)


def test_everything_works() -> None:
    report = judge(GOOD)
    assert all(s.mark is Mark.OK for s in report.steps)
    assert all(s.fix == "" for s in report.steps)
    assert report.ok
    assert report.runtime == "trio-httpws in front of Jupyter Server 2.21.1"
    assert verdict_line(report) == "Colab can connect: direct flow ok, old tunnel ok"
    assert report.step("verdict").saw == (
        f"{COLAB_ORIGIN} can connect through the direct flow and the old tunnel"
    )


def test_a_tunnel_on_jupyter_server_2_is_trio_httpws_even_without_its_server_header() -> None:
    report = judge(replace(GOOD, api=JUPYTER_API))
    assert report.runtime == "trio-httpws in front of Jupyter Server 2.21.1"


@pytest.mark.parametrize("case", PASTED, ids=[case["url"].strip() for case in PASTED])
def test_parse_target_reads_a_pasted_url_by_the_table(case: dict[str, Any]) -> None:
    # The table httpws.js and trio_httpws._pasted follow (tests/support/pasted_urls.json).
    target = parse_target(case["url"])
    assert (target.base_url, target.token, target.cut) == (
        case["base_url"],
        case["token"],
        case["cut"],
    )
    assert target.base == case["base_url"].rstrip("/")
    assert target.auth_url.startswith(case["base_url"])


@pytest.mark.parametrize("case", PASTED_ERRORS, ids=[case["url"] for case in PASTED_ERRORS])
def test_parse_target_refuses_by_the_table_without_a_secret(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=case["error"]) as info:
        parse_target(case["url"])
    assert SECRET not in str(info.value)


def test_a_bad_url_is_refused_without_its_token() -> None:
    with pytest.raises(ValueError, match="must start with http") as info:
        parse_target(f"ftp://localhost/?token={TOKEN}")
    assert str(info.value) == (
        "the URL must start with http:// or https:// and name a host, e.g. "
        "http://localhost:8888/?token=...; got 'ftp://localhost/'"
    )


@pytest.mark.parametrize(
    "url",
    [
        f"http://me:pw@localhost:8889/?token={TOKEN}",
        "http://me:pw@localhost:abc/",  # not valid: said before the password check
        "htp://me:pw@localhost/",
        "http://me:pw@/",
    ],
)
def test_a_url_with_a_password_is_refused_without_it(url: str) -> None:
    with pytest.raises(ValueError, match="URL") as info:
        parse_target(url)
    assert "pw" not in str(info.value)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("api", "tunnel_body"),
    [
        (rb'{"version": "\u00b2.0"}', b'{"kernelspecs": 5}'),  # "²".isdigit(); int("²") fails
        (b"[" * 100_000, b"[" * 100_000),  # too deep for json: RecursionError
    ],
    ids=["odd-values", "deep-json"],
)
def test_odd_answers_are_judged_not_raised(api: bytes, tunnel_body: bytes) -> None:
    obs = replace(
        GOOD,
        api=replace(GOOD.api, body=api),
        tunnel_get=Seen(status=200, opened=True, body=tunnel_body),
    )
    report = judge(obs)  # raised before: ValueError, TypeError, RecursionError
    assert report.step("reach.host").mark is Mark.OK
    get = report.step("tunnel.get")
    if tunnel_body.startswith(b"{"):
        assert (get.mark, get.saw.split(": ")[-1]) == (Mark.OK, "200, 0 kernel spec(s)")
    else:
        assert get.mark is Mark.FAIL  # 200 but no JSON object: the request did not work


async def test_self_check_of_a_bad_url_says_so_without_its_token() -> None:
    line = await self_check(f"ftp://localhost/?token={TOKEN}")
    assert line.startswith("Self-check failed: the URL must start with http")
    assert TOKEN not in line


def test_redact() -> None:
    assert redact_tokens(f"a {URL} b", [TOKEN]) == f"a {BASE}/?token={REDACTED} b"
    assert redact_tokens("GET /x?a=1&token=zz&b=2") == f"GET /x?a=1&token={REDACTED}&b=2"
    assert redact_tokens(f"GET /x?token={REDACTED}: 200") == f"GET /x?token={REDACTED}: 200"
    assert redact_tokens("Authorization: token s3", ["s3"]) == f"Authorization: token {REDACTED}"


def test_nothing_listens_skips_the_rest() -> None:
    report = judge(Observations(api=Seen(error="[Errno 111] Connect call failed")))
    assert report.step("reach.port").fix == (
        "Nothing listens on localhost:8889: start the runtime (trio-httpws, or jupyter server "
        "--port=8889), or correct the port in the URL."
    )
    skipped = [s for s in report.steps if s.mark is Mark.SKIP]
    assert len(skipped) == len(report.steps) - 2
    assert {s.saw for s in skipped} == {"not tried: the port does not answer"}
    assert not report.ok


def test_trio_httpws_with_its_backend_down() -> None:
    body = b"Bad Gateway: cannot connect to backend http://127.0.0.1:9: [Errno 111] refused"
    report = judge(Observations(api=Seen(status=502, body=body)))
    assert report.step("reach.port").fix == (
        "Nothing listens on http://127.0.0.1:9: start Jupyter there, or give trio-httpws the "
        "right --backend URL."
    )


@pytest.mark.parametrize(
    ("api", "fix"),
    [
        (
            Seen(status=403, headers=(("server", "hypercorn-h11"),), body=b"Host not allowed"),
            "The runtime refuses the Host 'box.lan:8889': use localhost or 127.0.0.1 in the URL, "
            "or allow the name with --allow-host box.lan.",
        ),
        (
            Seen(status=403),
            "The runtime refuses the Host 'box.lan:8889': use localhost or 127.0.0.1 in the URL, "
            "or start Jupyter with --ServerApp.allow_remote_access=True.",
        ),
        (
            Seen(status=404),
            "Something answers at box.lan:8889, but not as Jupyter: check the port, and paste "
            "the URL the runtime printed at startup (jupyter server list shows it).",
        ),
        (
            Seen(status=500),
            "This is not a Jupyter server's base URL: paste the URL the runtime printed (with its "
            "base path, if any).",
        ),
    ],
)
def test_host_check(api: Seen, fix: str) -> None:
    report = judge(Observations(api=api), f"http://box.lan:8889/?token={TOKEN}")
    assert report.step("reach.host").mark is Mark.FAIL
    assert report.step("reach.host").fix == fix


def test_wrong_token_and_missing_token() -> None:
    refused = Observations(api=JUPYTER_API, status=Seen(status=403, reason="Forbidden"))
    report = judge(refused)
    assert report.step("reach.token").saw == "GET /api/status answered HTTP 403 (Forbidden)"
    assert report.step("reach.token").fix.startswith("The token was refused: paste the URL")
    report = judge(refused, BASE + "/")
    assert report.step("reach.token").fix == (
        "The URL carries no token: paste the whole URL the runtime printed, ?token= included."
    )


def test_stock_jupyter_names_the_missing_flag_and_trio_httpws() -> None:
    report = judge(STOCK, kernel=False)
    assert report.runtime == "Jupyter Server 2.21.1 (stock)"
    front = f"put trio-httpws in front of it (trio-httpws --backend {BASE})"
    assert report.step("direct.preflight").fix == (
        f"Start Jupyter with --ServerApp.allow_credentials=True, or {front}. {LNA}"
    )
    assert report.step("direct.get").fix == (
        f"Start Jupyter with --ServerApp.allow_credentials=True, or {front}."
    )
    assert report.step("direct.pna").fix == (
        f"Jupyter never answers the Private Network Access preflight of Chrome before 142: {front}."
    )
    assert report.step("direct.kernel_ws").mark is Mark.OK
    assert report.step("tunnel.diagnose").fix == (
        "No tunnel endpoints: the jupyter_http_over_ws extension cannot load in Jupyter Server "
        f"2; {front}."
    )
    assert [f.failed_at for f in report.flows] == ["direct.preflight", "tunnel.diagnose"]
    assert not report.ok


def test_jupyter_without_allow_origin_names_both_flags() -> None:
    preflight = Seen(status=200, headers=(("access-control-allow-methods", "POST"),))
    report = judge(replace(STOCK, preflight=preflight), kernel=False)
    assert report.step("direct.preflight").fix == (
        f"Jupyter does not allow the origin {COLAB_ORIGIN}: start Jupyter with "
        f"--ServerApp.allow_origin={COLAB_ORIGIN} --ServerApp.allow_credentials=True, or put "
        f"trio-httpws in front of it (trio-httpws --backend {BASE}). {LNA}"
    )


def test_a_preflight_need_not_list_post() -> None:
    # POST is CORS-safelisted: a browser sends it whatever Allow-Methods says; the header counts.
    headers = tuple(h for h in PREFLIGHT if h[0] != "access-control-allow-methods")
    for methods in ((), (("access-control-allow-methods", "GET"),)):
        obs = replace(GOOD, preflight=Seen(status=204, headers=headers + methods))
        assert judge(obs).step("direct.preflight").mark is Mark.OK
    without_header = tuple(h for h in headers if h[0] != "access-control-allow-headers")
    for allowed in ((), (("access-control-allow-headers", "x-content-type-options"),)):
        obs = replace(GOOD, preflight=Seen(status=204, headers=without_header + allowed))
        assert judge(obs).step("direct.preflight").mark is Mark.FAIL


def test_a_kernelspec_list_over_the_limit_is_a_working_tunnel() -> None:
    cut = b'{"kernelspecs": {' + b" " * TUNNEL_BODY_LIMIT  # what the doctor kept of a 200
    obs = replace(GOOD, tunnel_get=Seen(status=200, opened=True, body=cut[:TUNNEL_BODY_LIMIT]))
    step = judge(obs).step("tunnel.get")
    assert (step.mark, step.saw.split(": ")[-1]) == (
        Mark.OK,
        "200, over 1048576 bytes (not parsed)",
    )


def test_notebook_6_flags_a_literal_star_and_a_missing_extension() -> None:
    star = (("access-control-allow-origin", "*"),)
    obs = replace(
        STOCK,
        api=NOTEBOOK_API,
        preflight=Seen(status=200, headers=star),
        get=Seen(status=200, headers=star),
    )
    report = judge(obs, kernel=False)
    assert report.runtime == "Notebook 6.5.7 without jupyter_http_over_ws"
    assert "browsers refuse a literal *" in report.step("direct.preflight").saw
    assert report.step("direct.preflight").fix.startswith(
        f"Allow the exact origin (--NotebookApp.allow_origin={COLAB_ORIGIN}, not *) with "
        "--NotebookApp.allow_credentials=True"
    )
    assert report.step("tunnel.diagnose").fix.startswith(
        "The jupyter_http_over_ws extension is not loaded: enable it (jupyter serverextension "
        "enable --py jupyter_http_over_ws)"
    )


def test_origin_refused_by_trio_httpws() -> None:
    evil = "https://evil.example"
    refused = Seen(status=403, body=b"Origin not allowed", reason="Origin not allowed")
    obs = replace(
        GOOD,
        preflight=refused,
        get=refused,
        direct_ws=Seen(status=403, reason="Origin not allowed"),
        diagnose=Seen(status=403, reason="Origin not allowed"),
        tunnel_get=None,
        tunnel_ws=None,
    )
    report = judge(obs, origin=evil)
    fix = f"trio-httpws refuses the origin {evil}: start it with --allow-origin {evil}."
    assert report.step("direct.preflight").fix == f"{fix} {lna_note(evil, 'localhost')}"
    for name in ("direct.get", "direct.kernel_ws", "tunnel.diagnose"):
        assert report.step(name).fix == fix, name
    assert report.step("direct.pna").mark is Mark.SKIP
    assert report.step("tunnel.get").saw == "not tried: the origin was refused"
    assert not report.ok


def test_a_refused_origin_is_trio_httpws_even_without_its_server_header() -> None:
    refused = Seen(status=403, reason="Origin not allowed")
    obs = replace(GOOD, api=JUPYTER_API, preflight=refused, diagnose=refused)
    report = judge(obs, origin="https://evil.example")
    assert report.runtime == "trio-httpws in front of Jupyter Server 2.21.1"
    assert report.step("direct.preflight").fix.startswith("trio-httpws refuses the origin")


def test_an_older_trio_httpws_without_cors_says_upgrade() -> None:
    # trio-httpws before it answered Colab's direct flow: the backend's CORS answer came through.
    obs = replace(GOOD, preflight=STOCK.preflight, get=STOCK.get)
    report = judge(obs)
    for name in ("direct.preflight", "direct.pna", "direct.get"):
        assert report.step(name).fix.startswith("Upgrade trio-httpws to a version that serves")
    assert report.ok  # the old tunnel works
    assert verdict_line(report).startswith("Colab can connect: direct flow fails (OPTIONS")


def test_min_version_mismatch() -> None:
    outdated = replace(
        DIAGNOSED, answer={"extension_version": "0.0.1", "is_outdated_extension": True}
    )
    report = judge(replace(GOOD, diagnose=outdated, api=NOTEBOOK_API))
    assert report.step("tunnel.diagnose").fix.startswith(
        "The runtime speaks protocol 0.0.1, older than the 0.0.7 Colab asks for (min_version): "
        "upgrade jupyter_http_over_ws to 0.0.8"
    )
    closed = Seen(close_code=1002, reason="", error="closed")
    report = judge(replace(GOOD, tunnel_get=closed))
    assert report.step("tunnel.get").fix.startswith("The runtime refused min_version=0.0.7")


@pytest.mark.parametrize(
    ("seen", "fix"),
    [
        (
            Seen(status=500, proxy_error=True, opened=True, reason="Uncaught server-side"),
            "The runtime could not log in with the auth URL",
        ),
        (Seen(status=403, opened=True, reason="Forbidden"), "Jupyter refused the tunnelled"),
        (Seen(status=502, opened=True, proxy_error=True), "The proxy cannot reach its backend"),
    ],
)
def test_tunnelled_get_failures(seen: Seen, fix: str) -> None:
    report = judge(replace(GOOD, tunnel_get=seen))
    assert report.step("tunnel.get").mark is Mark.FAIL
    assert report.step("tunnel.get").fix.startswith(fix)
    assert next(f for f in report.flows if f.name == "tunnel").failed_at == "tunnel.get"


def test_a_kernel_that_never_starts() -> None:
    obs = replace(
        GOOD,
        kernel=Seen(status=500, reason="No such kernel named python3"),
        direct_ws=Seen(status=404),
        tunnel_ws=Seen(opened=True, close_code=4404, error="closed with code 4404"),
        delete=None,
    )
    report = judge(obs)
    assert report.step("kernel.start").fix.startswith("No kernel started: install ipykernel")
    assert report.step("kernel.delete").mark is Mark.SKIP
    assert not report.ok  # neither flow works end to end without a kernel


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "no-kernel"])
def test_a_socket_closed_with_4403_is_a_refusal(kernel: bool) -> None:
    # trio_httpws accepts proxied_ws, then closes 4403 when Jupyter refuses the upgrade: the
    # login, not the origin (the relay does not pass the Origin on).
    refused = Seen(opened=True, close_code=4403, error="closed with code 4403")
    obs = replace(GOOD, tunnel_ws=refused)
    if not kernel:
        obs = replace(obs, kernel=None, delete=None, direct_ws=Seen(opened=True))
    step = judge(obs, kernel=kernel).step("tunnel.kernel_ws")
    assert step.mark is Mark.FAIL
    assert step.fix == (
        "Jupyter refused the kernel's WebSocket behind trio-httpws (HTTP 403): check that the "
        "URL's ?token= is the runtime's current one."
    )


class _OddKernel:
    """A kernel socket whose replies to our execute_request include malformed messages."""

    def __init__(self) -> None:
        self._replies: list[str] = []

    async def send_message(self, message: str) -> None:
        parent = {"msg_id": json.loads(message)["header"]["msg_id"]}
        self._replies = [
            "[" * 100_000,  # too deep for json
            json.dumps({"parent_header": "not a dict"}),
            json.dumps({"parent_header": parent, "header": None, "content": None}),
            json.dumps({"parent_header": parent, "msg_type": "stream", "content": [1]}),
            json.dumps({"parent_header": parent, "header": {"msg_type": "stream"},
                        "content": {"name": "stdout", "text": "42\n"}}),
            json.dumps({"parent_header": parent, "msg_type": "execute_reply", "content": 7}),
            json.dumps({"parent_header": parent, "msg_type": "status",
                        "content": {"execution_state": "idle"}}),
        ]  # fmt: skip

    async def get_message(self) -> str:
        return self._replies.pop(0)


async def test_odd_kernel_messages_are_skipped_not_raised() -> None:
    seen = await _socket_seen(_OddKernel(), True, 0.0)  # type: ignore[arg-type]
    assert seen == Seen(opened=True, printed="42\n")


class _ClosingLater:
    """A socket that opened, then closes with 4403 ``after`` seconds (a refusal on a slow link)."""

    def __init__(self, after: float) -> None:
        self._after = after

    async def get_message(self) -> str:
        await trio.sleep(self._after)
        raise trio_websocket.ConnectionClosed(trio_websocket.CloseReason(4403, "Forbidden"))


@pytest.mark.parametrize(
    ("opening_took", "closed"), [(0.01, False), (0.2, False), (0.3, True), (1.0, True)]
)
async def test_a_socket_is_watched_longer_over_a_slow_link(
    autojump_clock: trio.testing.MockClock, opening_took: float, closed: bool
) -> None:
    # Closed 1.0 s after it opened: seen once the watch, max(0.5 s, 4 opening times), covers it.
    ws = _ClosingLater(1.0)
    seen = await _timed(30, lambda: _socket_seen(ws, False, opening_took))  # type: ignore[arg-type]
    assert (seen.close_code == 4403) is closed
    assert seen.opened


async def test_a_long_watch_ends_within_the_step_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Opening took 10 s of a 30 s step: the 40 s watch would outlast the step and report a
    # timeout for a socket that works.
    seen = await _timed(30, lambda: _socket_seen(_ClosingLater(1e9), False, 10.0))  # type: ignore[arg-type]
    assert seen == Seen(opened=True)


def test_a_kernel_that_prints_something_else() -> None:
    report = judge(replace(GOOD, direct_ws=Seen(opened=True, printed="NameError: x")))
    assert report.step("direct.kernel_ws").saw.endswith("print(6*7) printed 'NameError: x'")
    assert report.ok  # the tunnel still works


def test_no_kernel_mode() -> None:
    obs = replace(
        GOOD,
        kernel=None,
        delete=None,
        direct_ws=Seen(opened=True),
        tunnel_ws=Seen(opened=True, close_code=1002, error="closed with code 1002"),
    )
    report = judge(obs, kernel=False)
    assert report.step("kernel.start").saw == "--no-kernel"
    assert report.step("direct.kernel_ws").saw.endswith("opened (--no-kernel: no kernel to open)")
    # Notebook 6 has no kernel-free socket to try: skipped, not failed.
    assert report.step("tunnel.kernel_ws").mark is Mark.SKIP
    assert [f.works for f in report.flows] == [True, True]


def test_text_rendering() -> None:
    report = judge(replace(STOCK, api=replace(JUPYTER_API, error=None)), kernel=False)
    text = render_text(report)
    lines = text.splitlines()
    assert lines[0] == f"trio-httpws doctor: {BASE}/?token={REDACTED}"
    assert lines[1] == (
        f"  as a page on {COLAB_ORIGIN} would; the runtime is Jupyter Server 2.21.1 (stock)"
    )
    assert "reach" in lines
    assert any(line.startswith("  ✓ port answers ") for line in lines)
    preflight = next(i for i, line in enumerate(lines) if "✗ CORS preflight" in line)
    assert lines[preflight + 1].strip() == "fix: " + report.step("direct.preflight").fix
    assert sum(line.strip().startswith("fix: ") for line in lines) == sum(
        s.mark in (Mark.FAIL, Mark.WARN) for s in report.steps
    )
    assert any(line.startswith("  ! Private Network Access ") for line in lines)
    assert any(line.startswith("  - start a kernel ") for line in lines)
    assert TOKEN not in text


def test_json_rendering_is_the_same_report() -> None:
    report = judge(STOCK, kernel=False)
    document = json.loads(render_json(report))
    assert document["ok"] is False
    assert document["url"] == f"{BASE}/?token={REDACTED}"
    assert document["flows"]["tunnel"]["failed_at"] == "tunnel.diagnose"
    assert [s["name"] for s in document["steps"]] == [s.name for s in report.steps]
    assert [s["mark"] for s in document["steps"]] == [s.mark.value for s in report.steps]
    assert TOKEN not in render_json(report)


def test_the_token_never_survives_into_a_report() -> None:
    leaky = Seen(error=f"could not GET {URL} (token {TOKEN})")
    report = judge(Observations(api=leaky))
    rendered = render_text(report) + render_json(report)
    assert TOKEN not in rendered
    assert report.step("reach.port").saw.count(REDACTED) == 2


# -- a pasted page, a base path, a base URL that is not Jupyter's --------------------------------


def test_the_report_says_which_page_was_cut_off() -> None:
    report = judge(GOOD, f"http://localhost:8889/tree?token={TOKEN}")
    told = (
        "/tree is a Jupyter page, not part of the server's URL: using http://localhost:8889/ "
        "(the URL to paste: http://localhost:8889/?token=...)"
    )
    lines = render_text(report).splitlines()
    assert lines[0] == f"trio-httpws doctor: http://localhost:8889/tree?token={REDACTED}"
    assert lines[2] == f"  {told}"
    assert lines[3] == "reach"
    document = json.loads(render_json(report))
    assert (document["cut"], document["base_url"]) == ("/tree", "http://localhost:8889/")
    assert TOKEN not in render_text(report) + render_json(report)


def test_nothing_cut_nothing_told() -> None:
    report = judge(GOOD)
    assert render_text(report).splitlines()[2] == "reach"
    document = json.loads(render_json(report))
    assert (document["cut"], document["base_url"]) == (None, "http://localhost:8889/")


def test_the_tunnel_logs_in_at_the_base_url_not_at_the_page() -> None:
    target = parse_target(f"http://localhost:8889/u/a/lab/tree/x.ipynb?token={TOKEN}&x=1")
    assert target.auth_url == f"http://localhost:8889/u/a/?token={TOKEN}"
    assert target.path("/api/kernelspecs") == "/u/a/api/kernelspecs"
    assert parse_target(URL).path("/api/kernelspecs") == "/api/kernelspecs"


def test_a_base_path_is_in_what_each_step_saw_and_in_the_fixes() -> None:
    url = f"http://localhost:8889/u/a/?token={TOKEN}"
    report = judge(GOOD, url)
    assert report.ok
    saw = {s.name: s.saw for s in report.steps}
    assert saw["reach.host"] == "Host localhost:8889 accepted (GET /u/a/api: 200)"
    assert saw["reach.token"] == f"GET /u/a/api/status?token={REDACTED}: 200"
    assert saw["direct.preflight"].startswith(f"OPTIONS /u/a/api/sessions from {COLAB_ORIGIN}: 204")
    assert saw["tunnel.get"] == (
        "GET /u/a/api/kernelspecs through /u/a/http_over_websocket with the auth URL: 200, "
        "1 kernel spec(s)"
    )
    assert saw["kernel.delete"] == "DELETE /u/a/api/kernels/<id>: 204"
    stock = judge(STOCK, url, kernel=False)
    assert stock.step("direct.kernel_ws").saw.startswith(
        "WebSocket to /u/a/api/events/subscribe straight to the runtime"
    )
    # --backend takes scheme://host:port only: the base path is trio-httpws's --base-url.
    assert stock.step("tunnel.diagnose").fix == (
        "No tunnel endpoints: the jupyter_http_over_ws extension cannot load in Jupyter Server 2; "
        "put trio-httpws in front of it "
        "(trio-httpws --backend http://localhost:8889 --base-url /u/a/)."
    )
    assert stock.step("tunnel.diagnose").saw.startswith(
        "/u/a/http_over_websocket/diagnose?min_version=0.0.7 answered HTTP 404"
    )


def test_paths_above() -> None:
    assert paths_above("/") == []
    assert paths_above("/u/") == ["/"]
    assert paths_above("/u/a/b/") == ["/u/a/", "/u/", "/"]


NOT_FOUND = Seen(status=404, reason="Not Found")


@pytest.mark.parametrize(
    ("above", "fix"),
    [
        (
            (("/u/", NOT_FOUND), ("/", JUPYTER_API)),
            "http://localhost:8888/u/x/ is not a Jupyter server's URL, http://localhost:8888/ is: "
            "paste http://localhost:8888/?token=... (with the token the runtime printed).",
        ),
        (
            (("/u/", NOT_FOUND), ("/", NOT_FOUND)),
            "http://localhost:8888/u/x/ is not a Jupyter server's URL: paste the URL the runtime "
            "printed at startup, e.g. http://localhost:8888/?token=... (jupyter server list "
            "shows it).",
        ),
        (
            (("/u/", Seen(status=200, body=b"<html>")), ("/", NOT_FOUND)),
            "http://localhost:8888/u/x/ is not a Jupyter server's URL: paste the URL the runtime "
            "printed at startup, e.g. http://localhost:8888/?token=... (jupyter server list "
            "shows it).",
        ),
    ],
    ids=["jupyter-above", "nothing-above", "a-page-above-is-not-jupyter"],
)
def test_a_base_url_that_is_not_jupyters_names_the_url_to_paste(
    above: tuple[tuple[str, Seen], ...], fix: str
) -> None:
    url = f"http://localhost:8888/u/x/?token={TOKEN}"
    for obs, name, asked in (
        (Observations(api=NOT_FOUND, above=above), "reach.host", "/u/x/api"),
        (
            Observations(api=JUPYTER_API, status=NOT_FOUND, above=above),
            "reach.token",
            "/u/x/api/status",
        ),
    ):
        report = judge(obs, url)
        step = report.step(name)
        assert (step.mark, step.saw, step.fix) == (
            Mark.FAIL,
            f"GET {asked} answered HTTP 404 (Not Found)",
            fix,
        )
        assert step.title == "base URL"
        assert report.step("verdict").saw.endswith(
            "direct flow fails at: base URL; old tunnel fails at: base URL"
        )
        assert report.step("direct.preflight").saw == "not tried: not a Jupyter server's URL"
        assert "origin" not in render_text(report).split("\nreach\n", 1)[1].lower()


# -- Chrome's Local Network Access --------------------------------------------------------------


def test_the_lna_note_says_what_chrome_shows_and_how_to_allow_or_undo_it() -> None:
    assert LNA == (
        "In Chrome 142 and later, also check Local Network Access: Chrome asks whether "
        "https://colab.research.google.com may reach this device, and a refusal looks the same in "
        'the page (console: "Permission was denied for this request to access the `loopback` '
        'address space"); allow it, or undo a refusal, in the site settings of '
        "https://colab.research.google.com (Loopback network, before Chrome 145 Local network "
        "access: Allow), then reload (docs/chrome-local-network-access.md)."
    )


@pytest.mark.parametrize(
    ("host", "space", "setting"),
    [
        ("127.0.0.1", "loopback", "Loopback network"),
        ("::1", "loopback", "Loopback network"),
        ("box.localhost", "loopback", "Loopback network"),
        ("192.168.1.5", "local", "Local network"),
        ("box.lan", "local", "Local network"),
        ("8.8.8.8", None, None),
    ],
)
def test_the_lna_note_names_the_address_space(
    host: str, space: str | None, setting: str | None
) -> None:
    note = lna_note(COLAB_ORIGIN, host)
    if space is None:
        assert note == ""  # a public address: no Local Network Access
        return
    assert f"access the `{space}` address space" in note
    assert f"({setting}, before Chrome 145 Local network access: Allow)" in note


def test_the_lna_note_comes_once_under_the_direct_flows_first_failure() -> None:
    report = judge(STOCK, kernel=False)
    with_note = [s.name for s in report.steps if LNA in s.fix]
    assert with_note == ["direct.preflight"]
    assert report.step("direct.preflight").fix.endswith(
        f"or put trio-httpws in front of it (trio-httpws --backend {BASE}). {LNA}"
    )


@pytest.mark.parametrize(
    ("obs", "noted"),
    [
        # The browser reads a 403 that carries CORS headers: not what a refusal looks like.
        (replace(GOOD, get=Seen(status=403, headers=CORS, reason="Forbidden")), False),
        (
            replace(GOOD, get=Seen(status=200, headers=(("access-control-allow-origin", "*"),))),
            True,
        ),
        (replace(GOOD, get=Seen(error="[Errno 104] Connection reset by peer")), True),
        # A WebSocket that did not open: the page sees only an error event.
        (replace(GOOD, direct_ws=Seen(status=403, reason="Forbidden")), True),
        (replace(GOOD, direct_ws=Seen(opened=True, printed="NameError")), False),
    ],
    ids=["readable-403", "star", "reset", "socket-refused", "kernel-misbehaves"],
)
def test_the_lna_note_only_where_a_refusal_looks_the_same(obs: Observations, noted: bool) -> None:
    report = judge(obs)
    failed_at = report.flows[0].failed_at
    assert failed_at is not None
    assert failed_at.startswith("direct.")
    assert (LNA in report.step(failed_at).fix) is noted
    assert all(LNA not in s.fix for s in report.steps if s.name != failed_at)


def test_no_lna_note_for_a_runtime_on_a_public_address() -> None:
    report = judge(STOCK, f"http://8.8.8.8:8888/?token={TOKEN}", kernel=False)
    assert report.step("direct.preflight").mark is Mark.FAIL
    assert "Local Network Access" not in render_text(report)
