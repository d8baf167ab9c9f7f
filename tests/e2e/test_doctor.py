"""``trio-httpws doctor`` against real runtimes: each failure it names is produced for real.

Real hypercorn serving trio_httpws, real Jupyter Server 2 (+ ipykernel), a stock Jupyter started
with Colab's documented flags, a dead port, and a fake runtime that answers CORS correctly (so the
pass path of the direct flow is proven without depending on the proxy).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial

import pytest
import trio

import trio_httpws
from trio_httpws._jupyter import free_port
from trio_httpws.client import ClientConnectionError, http_request, open_websocket
from trio_httpws.doctor import Mark, Report, doctor, render_json, render_text, verdict_line
from trio_httpws.doctor._judgement import lna_note

from ..support.fake_backend import FakeBackend
from ..support.fake_runtime import KERNEL_SPECS, make_runtime_app
from ..support.fake_runtime import TOKEN as FAKE_TOKEN
from ..support.jupyter import Jupyter, jupyter_server
from ..support.proxies import running_proxy

COLAB = "https://colab.research.google.com"
EVIL = "https://evil.example"


def marks(report: Report, group: str) -> dict[str, Mark]:
    return {s.name: s.mark for s in report.steps if s.group == group}


def assert_no_token(report: Report, token: str) -> None:
    for step in report.steps:
        assert token not in step.saw + step.fix
    assert token not in report.url


@pytest.fixture
async def jproxy(jupyter: Jupyter, door: str) -> AsyncIterator[str]:
    """trio-httpws in front of the session's Jupyter, allowing Colab."""
    config = trio_httpws.Config(backend=jupyter.url, allow_origins=(COLAB,))
    async with running_proxy(config, door) as url:
        yield url


@pytest.fixture(scope="module")
def fake_runtime() -> Iterator[FakeBackend]:
    runtime = FakeBackend(app=make_runtime_app())
    yield runtime
    runtime.close()


# -- the client pieces the doctor adds ---------------------------------------------------------


async def test_http_request_sends_exactly_the_headers_given(fake_backend: FakeBackend) -> None:
    response = await http_request(
        fake_backend.url,
        "POST",
        "/headers?token=t&x=1",
        headers={"Origin": COLAB, "Access-Control-Request-Method": "POST"},
        body=b"{}",
    )
    assert response.status == 200
    assert response.header("Content-Type") == "application/json; charset=UTF-8"
    seen = json.loads(response.body)
    assert (seen["method"], seen["uri"]) == ("POST", "/headers?token=t&x=1")
    assert seen["headers"] == [
        ["Host", fake_backend.url.removeprefix("http://")],
        ["Origin", COLAB],
        ["Access-Control-Request-Method", "POST"],
        ["Content-Length", "2"],
    ]


async def test_http_request_to_nothing_says_so_without_the_query() -> None:
    port = free_port()
    with pytest.raises(ClientConnectionError) as info:
        await http_request(f"http://127.0.0.1:{port}", "GET", "/api/status?token=s3cr3t")
    assert str(info.value).startswith(f"GET /api/status: cannot connect to http://127.0.0.1:{port}")
    assert "s3cr3t" not in str(info.value)


async def test_open_websocket_sends_the_origin(fake_backend: FakeBackend) -> None:
    async with open_websocket(fake_backend.url, "/headers-ws?a=1", origin=COLAB) as ws:
        headers = dict(json.loads(await ws.get_message()))
    assert headers["Origin"] == COLAB


# -- trio-httpws --------------------------------------------------------------------------------


async def test_trio_httpws_old_tunnel_and_a_real_kernel(jproxy: str, jupyter: Jupyter) -> None:
    report = await doctor(f"{jproxy}/?token={jupyter.token}", COLAB)
    assert report.runtime.startswith("trio-httpws in front of Jupyter Server 2.")
    assert marks(report, "reach") == dict.fromkeys(
        ("reach.port", "reach.host", "reach.token"), Mark.OK
    )
    assert marks(report, "tunnel") == dict.fromkeys(
        ("tunnel.diagnose", "tunnel.get", "tunnel.kernel_ws"), Mark.OK
    )
    assert report.step("tunnel.diagnose").saw.startswith("extension_version 0.0.7,")
    assert report.step("tunnel.kernel_ws").saw.endswith("print(6*7) printed 42")
    assert marks(report, "kernel") == {"kernel.start": Mark.OK, "kernel.delete": Mark.OK}
    kernel_id = report.step("kernel.start").saw.rsplit(" ", 1)[1]
    running = await http_request(jupyter.url, "GET", f"/api/kernels?token={jupyter.token}")
    assert running.status == 200
    assert kernel_id not in [k["id"] for k in json.loads(running.body)]
    assert report.step("direct.kernel_ws").saw.endswith("print(6*7) printed 42")
    assert [f.works for f in report.flows] == [True, True]
    assert report.ok
    assert report.step("verdict").mark is Mark.OK
    assert report.step("verdict").saw == (
        f"{COLAB} can connect through the direct flow and the old tunnel"
    )
    assert_no_token(report, jupyter.token)


async def test_trio_httpws_direct_flow(jproxy: str, jupyter: Jupyter) -> None:
    report = await doctor(f"{jproxy}/?token={jupyter.token}", COLAB)
    assert {s.name: (s.mark, s.fix) for s in report.steps if s.group == "direct"} == {
        "direct.preflight": (Mark.OK, ""),
        "direct.pna": (Mark.OK, ""),
        "direct.get": (Mark.OK, ""),
        "direct.kernel_ws": (Mark.OK, ""),
    }
    assert [f.works for f in report.flows] == [True, True]
    assert verdict_line(report) == "Colab can connect: direct flow ok, old tunnel ok"


async def test_wrong_token(jproxy: str) -> None:
    report = await doctor(f"{jproxy}/?token=not-the-token", COLAB, kernel=False)
    step = report.step("reach.token")
    assert step.mark is Mark.FAIL
    assert step.saw.startswith("GET /api/status answered HTTP 403")
    assert step.fix == (
        "The token was refused: paste the URL with the current token, as the runtime printed it "
        "at startup (for a Jupyter you started, jupyter server list shows it)."
    )
    assert report.step("direct.preflight").mark is Mark.SKIP
    assert report.step("direct.preflight").saw == "not tried: the token was refused"
    assert not report.ok
    assert report.step("verdict").mark is Mark.FAIL
    assert report.step("verdict").fix == "Apply the first fix above, then run the doctor again."
    assert_no_token(report, "not-the-token")


async def test_refused_origin_old_tunnel(jproxy: str, jupyter: Jupyter) -> None:
    report = await doctor(f"{jproxy}/?token={jupyter.token}", EVIL, kernel=False)
    step = report.step("tunnel.diagnose")
    assert step.mark is Mark.FAIL
    assert step.saw.startswith("/http_over_websocket/diagnose?min_version=0.0.7 answered HTTP 403")
    assert (
        step.fix == f"trio-httpws refuses the origin {EVIL}: start it with --allow-origin {EVIL}."
    )
    assert report.step("tunnel.get").saw == "not tried: the origin was refused"
    assert not next(f for f in report.flows if f.name == "tunnel").works


async def test_refused_origin_direct_flow(jproxy: str, jupyter: Jupyter) -> None:
    """The proxy itself refuses the foreign origin with 403, on every path."""
    report = await doctor(f"{jproxy}/?token={jupyter.token}", EVIL, kernel=False)
    fix = f"trio-httpws refuses the origin {EVIL}: start it with --allow-origin {EVIL}."
    assert report.step("direct.preflight").mark is Mark.FAIL
    # In a browser a refused origin looks like a refused Local Network Access: both are said.
    assert report.step("direct.preflight").fix == f"{fix} {lna_note(EVIL, '127.0.0.1')}"
    assert report.step("direct.get").fix == fix
    assert report.step("direct.kernel_ws").fix == fix
    assert not report.ok


def _loopback_name() -> str:
    """A name of this machine that resolves to loopback but is not localhost (or skip)."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    if name.lower() == "localhost" or not address.startswith("127."):
        pytest.skip(f"the host name {name!r} does not resolve to a loopback address here")
    return name


async def test_host_check_refused_by_trio_httpws(jproxy: str, jupyter: Jupyter) -> None:
    name = _loopback_name()
    report = await doctor(
        jproxy.replace("127.0.0.1", name) + f"/?token={jupyter.token}", COLAB, kernel=False
    )
    step = report.step("reach.host")
    assert step.mark is Mark.FAIL
    assert step.saw.startswith("GET /api answered HTTP 403 (Host not allowed)")
    assert step.fix.endswith(f"or allow the name with --allow-host {name}.")
    assert report.step("reach.token").saw == "not tried: the Host check failed"


async def test_host_check_refused_by_jupyter(jupyter: Jupyter) -> None:
    name = _loopback_name()
    report = await doctor(
        jupyter.url.replace("127.0.0.1", name) + f"/?token={jupyter.token}", COLAB, kernel=False
    )
    assert report.step("reach.host").fix.endswith(
        "or start Jupyter with --ServerApp.allow_remote_access=True."
    )


async def test_backend_down_behind_trio_httpws(door: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running_proxy(trio_httpws.Config(backend=dead, allow_origins=(COLAB,)), door) as url:
        report = await doctor(f"{url}/?token=abc", COLAB, kernel=False)
    step = report.step("reach.port")
    assert step.mark is Mark.FAIL
    assert step.fix == (
        f"Nothing listens on {dead}: start Jupyter there, or give trio-httpws the right "
        "--backend URL."
    )
    assert report.step("tunnel.diagnose").saw == "not tried: the backend does not answer"
    assert not report.ok


async def test_nothing_listens() -> None:
    port = free_port()
    report = await doctor(f"http://127.0.0.1:{port}/?token=abc", COLAB)
    step = report.step("reach.port")
    assert step.mark is Mark.FAIL
    assert step.saw.startswith(f"nothing answers at 127.0.0.1:{port}: ")
    assert step.fix == (
        f"Nothing listens on 127.0.0.1:{port}: start the runtime (trio-httpws, or jupyter server "
        f"--port={port}), or correct the port in the URL."
    )
    assert [s.mark for s in report.steps[1:-1]] == [Mark.SKIP] * (len(report.steps) - 2)
    assert report.step("verdict").mark is Mark.FAIL


# -- the URL as pasted: a Jupyter page, a base path, a path that is not Jupyter's ----------------


async def test_a_pasted_tree_url_works_and_the_report_names_the_cut(
    jproxy: str, jupyter: Jupyter
) -> None:
    # As Jupyter prints it, and as users paste it: /tree is cut off, and the tunnel logs in at
    # the base URL (Jupyter Server 2 alone has no /tree page: that auth URL answered 404).
    report = await doctor(f"{jproxy}/tree?token={jupyter.token}", COLAB)
    assert [s.name for s in report.steps if s.mark is not Mark.OK] == []
    assert report.step("tunnel.kernel_ws").saw.endswith("print(6*7) printed 42")
    assert (report.cut, report.base_url) == ("/tree", f"{jproxy}/")
    told = (
        f"  /tree is a Jupyter page, not part of the server's URL: using {jproxy}/ "
        f"(the URL to paste: {jproxy}/?token=...)"
    )
    assert render_text(report).splitlines()[2] == told
    assert json.loads(render_json(report))["cut"] == "/tree"
    assert_no_token(report, jupyter.token)


async def test_a_path_that_is_not_jupyters_names_the_url_to_paste(
    jproxy: str, jupyter: Jupyter
) -> None:
    report = await doctor(f"{jproxy}/u/x/?token={jupyter.token}", COLAB)
    assert report.runtime == "unknown (GET /u/x/api did not answer 200)"
    step = report.step("reach.host")
    assert (step.mark, step.title) == (Mark.FAIL, "base URL")
    assert step.saw.startswith("GET /u/x/api answered HTTP 404")
    assert step.fix == (
        f"{jproxy}/u/x/ is not a Jupyter server's URL, {jproxy}/ is: paste {jproxy}/?token=... "
        "(with the token the runtime printed)."
    )
    assert report.step("direct.preflight").saw == "not tried: not a Jupyter server's URL"
    assert not report.ok
    assert_no_token(report, jupyter.token)


@pytest.fixture(scope="module")
def jupyter_under_u_a() -> Iterator[Jupyter]:
    """A real Jupyter started with --ServerApp.base_url=/u/a/."""
    with jupyter_server("--ServerApp.base_url=/u/a/") as server:
        yield server


async def test_a_runtime_with_a_base_url(jupyter_under_u_a: Jupyter, door: str) -> None:
    server = jupyter_under_u_a
    config = trio_httpws.Config(backend=server.url, base_url="/u/a/", allow_origins=(COLAB,))
    async with running_proxy(config, door) as url:
        report = await doctor(f"{url}/u/a/?token={server.token}", COLAB)
        # A page under the base path: cut off, the base path kept.
        pasted = await doctor(f"{url}/u/a/lab?token={server.token}", COLAB, kernel=False)
    assert [s.name for s in report.steps if s.mark is not Mark.OK] == []
    assert report.step("tunnel.get").saw.startswith(
        "GET /u/a/api/kernelspecs through /u/a/http_over_websocket with the auth URL: 200, "
    )
    for name in ("direct.kernel_ws", "tunnel.kernel_ws"):
        assert report.step(name).saw.endswith("print(6*7) printed 42"), name
    assert [f.works for f in report.flows] == [True, True]
    assert verdict_line(report) == "Colab can connect: direct flow ok, old tunnel ok"
    assert (pasted.cut, pasted.base_url) == ("/lab", f"{url}/u/a/")
    assert [f.works for f in pasted.flows] == [True, True]
    assert_no_token(report, server.token)


# -- stock Jupyter Server 2 ---------------------------------------------------------------------


async def test_stock_jupyter_needs_allow_credentials_and_has_no_tunnel(jupyter: Jupyter) -> None:
    report = await doctor(f"{jupyter.url}/?token={jupyter.token}", COLAB, kernel=False)
    assert report.runtime.startswith("Jupyter Server 2.")
    assert report.runtime.endswith("(stock)")
    preflight = report.step("direct.preflight")
    assert preflight.mark is Mark.FAIL
    fix = (
        "Start Jupyter with --ServerApp.allow_credentials=True, or put trio-httpws in front of "
        f"it (trio-httpws --backend {jupyter.url})."
    )
    # The direct flow's first failure is what a page sees of a refused Local Network Access too.
    assert preflight.fix == f"{fix} {lna_note(COLAB, '127.0.0.1')}"
    assert report.step("direct.get").fix == fix
    assert report.step("direct.pna").fix == (
        "Jupyter never answers the Private Network Access preflight of Chrome before 142: put "
        f"trio-httpws in front of it (trio-httpws --backend {jupyter.url})."
    )
    diagnose = report.step("tunnel.diagnose")
    assert diagnose.mark is Mark.FAIL
    assert "answered HTTP 404" in diagnose.saw
    assert diagnose.fix == (
        "No tunnel endpoints: the jupyter_http_over_ws extension cannot load in Jupyter Server 2; "
        f"put trio-httpws in front of it (trio-httpws --backend {jupyter.url})."
    )
    assert report.step("tunnel.kernel_ws").saw == "not tried: no tunnel endpoints"
    assert not report.ok
    assert_no_token(report, jupyter.token)


async def test_stock_jupyter_with_colabs_flags_works_but_lacks_pna() -> None:
    with jupyter_server(
        f"--ServerApp.allow_origin={COLAB}", "--ServerApp.allow_credentials=True"
    ) as server:
        report = await doctor(f"{server.url}/?token={server.token}", COLAB)
    assert report.step("direct.preflight").mark is Mark.OK
    assert report.step("direct.get").mark is Mark.OK
    assert report.step("direct.kernel_ws").saw.endswith("print(6*7) printed 42")
    # Colab's documented flags serve Chrome from 142 on, which no longer sends the PNA preflight;
    # the missing answer is a warning for older versions, not a failed flow.
    pna = report.step("direct.pna")
    assert pna.mark is Mark.WARN
    assert "put trio-httpws in front of it" in pna.fix
    assert next(f for f in report.flows if f.name == "direct").works


# -- a runtime that answers CORS itself: the pass path, proven apart from the proxy's -----------


async def test_direct_flow_passes_on_a_runtime_that_answers_cors(
    fake_runtime: FakeBackend,
) -> None:
    report = await doctor(f"{fake_runtime.url}/?token={FAKE_TOKEN}", COLAB)
    assert marks(report, "direct") == dict.fromkeys(
        ("direct.preflight", "direct.pna", "direct.get", "direct.kernel_ws"), Mark.OK
    )
    assert report.step("direct.kernel_ws").saw.endswith("print(6*7) printed 42")
    assert report.step("tunnel.diagnose").mark is Mark.FAIL  # no tunnel on this one
    assert report.ok
    assert verdict_line(report).startswith("Colab can connect: direct flow ok, old tunnel fails")


async def test_both_flows_pass_behind_trio_httpws(fake_runtime: FakeBackend, door: str) -> None:
    config = trio_httpws.Config(backend=fake_runtime.url, allow_origins=(COLAB,))
    async with running_proxy(config, door) as url:
        report = await doctor(f"{url}/?token={FAKE_TOKEN}", COLAB, kernel=False)
    assert [s.name for s in report.steps if s.mark is not Mark.OK] == [
        "kernel.start",
        "kernel.delete",
    ]
    # The whole list, parsed: it is far over the 64 KiB the doctor once kept of it.
    assert report.step("tunnel.get").saw.endswith(f"200, {len(KERNEL_SPECS)} kernel spec(s)")
    assert verdict_line(report) == "Colab can connect: direct flow ok, old tunnel ok"


# -- the command line ---------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_httpws", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _run_async(*args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the servers these tests start run in this trio loop.
    return await trio.to_thread.run_sync(partial(_run, *args))


async def test_cli_json_never_prints_the_token(fake_runtime: FakeBackend) -> None:
    url = f"{fake_runtime.url}/?token={FAKE_TOKEN}"
    result = await _run_async("doctor", url, "--json", "--no-kernel", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["url"] == f"{fake_runtime.url}/?token=<redacted>"
    assert document["flows"]["direct"] == {"works": True, "failed_at": None, "why": ""}
    assert document["flows"]["tunnel"]["failed_at"] == "tunnel.diagnose"
    assert [s["name"] for s in document["steps"]][:3] == ["reach.port", "reach.host", "reach.token"]


async def test_cli_text_exit_status_1_when_no_flow_works() -> None:
    port = free_port()
    result = await _run_async("doctor", f"http://127.0.0.1:{port}/?token=s3cr3t")
    assert result.returncode == 1
    assert "s3cr3t" not in result.stdout + result.stderr
    assert "✗ port answers" in result.stdout
    assert f"fix: Nothing listens on 127.0.0.1:{port}" in result.stdout


def test_cli_argument_errors_never_echo_the_token() -> None:
    result = _run("doctor", "--timeout", "http://localhost:8889/?token=s3cr3t")
    assert result.returncode == 2
    assert "s3cr3t" not in result.stderr
    assert "argument --timeout: invalid float value: 'http://localhost:8889/?…'" in result.stderr
    result = _run("doctor", "ftp://localhost/?token=s3cr3t")
    assert result.returncode == 2
    assert "s3cr3t" not in result.stderr
    # The example stays readable: the redaction once made it "http://localhost:8889/?… got".
    assert result.stderr.splitlines()[-1] == (
        "trio-httpws doctor: error: the URL must start with http:// or https:// and name a host, "
        "e.g. http://localhost:8888/?token=...; got 'ftp://localhost/'"
    )
    result = _run("doctor", "http://me:s3cr3t@localhost:99999/?token=s3cr3t")
    assert result.returncode == 2
    assert "s3cr3t" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "trio-httpws doctor: error: not a URL: 'http://…@localhost:99999/'"
    )


def test_cli_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == (
        f"trio-httpws {trio_httpws.__version__} (jupyter_http_over_ws protocol "
        f"{trio_httpws.PROTOCOL_VERSION})"
    )
    assert re.fullmatch(
        r"trio-httpws \S+ \(jupyter_http_over_ws protocol 0\.0\.7\)\n", result.stdout
    )
