"""A real headless Chromium runs examples/web_page against the proxy, from another origin.

The page is served on http://127.0.0.1:P1 by examples/web_page/serve_page.py; the proxy listens
on http://localhost:P2 in front of a real Jupyter Server. The browser's own WebSocket connects,
the auth URL logs in, a session is created and ``print(6*7)`` runs on its kernel through
/http_over_websocket/proxied_ws/api/kernels/<id>/channels; the test reads the page's DOM.

Chromium is driven over the DevTools protocol with trio-websocket (already a dependency): no
browser-driver package and no browser download. Without Chromium the tests skip, except in CI
(``CI`` set), where .ci/run installs it and a missing browser is a failure.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
import trio_websocket

import trio_httpws

from ..support._http import http_get, http_request
from ..support.fake_backend import FakeBackend
from ..support.jupyter import Jupyter
from ..support.processes import example_env, page_server, read_line, stop
from ..support.proxies import DOORS, running_handler_proxy, running_proxy

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
SCREENSHOTS = {
    "hypercorn": "browser.png",
    "trio": "browser-door.png",
    "handler": "browser-handler.png",
}
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--window-size=900,640",
    "--remote-debugging-port=0",
)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    if path is None:
        reason = (
            "Chromium not found (looked for $CHROMIUM and "
            + ", ".join(BROWSER_NAMES)
            + "); install it with `apt-get install chromium` to run the browser tests"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}. CI must have it: .ci/run installs it.")
        pytest.skip(reason)
    return path


class CdpError(Exception):
    pass


class Cdp:
    """A minimal Chrome DevTools Protocol client over one trio-websocket connection.

    Calls are sequential: each reads messages until its own answer, keeping the events it
    passes (console output, page events) for whoever waits for them.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    async def _next(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await self._ws.get_message())
        return message

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        self._last_id += 1
        call_id = self._last_id
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_message(json.dumps(message))
        while True:
            answer = await self._next()
            if answer.get("id") == call_id:
                if "error" in answer:
                    raise CdpError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    async def wait_event(self, method: str, session: str) -> dict[str, Any]:
        def match(event: dict[str, Any]) -> bool:
            return event.get("method") == method and event.get("sessionId") == session

        for event in self.events:
            if match(event):
                self.events.remove(event)
                return event
        while True:
            event = await self._next()
            if match(event):
                return event
            self.events.append(event)

    def console(self, session: str) -> list[str]:
        """What the page logged and threw so far: shown when a test fails."""
        lines = []
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled":
                args = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                lines.append(f"console.{params['type']}: {args}")
            elif event.get("method") == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                lines.append(f"uncaught: {text}")
        return lines


class Page:
    def __init__(self, cdp: Cdp, session: str) -> None:
        self.cdp = cdp
        self.session = session

    async def goto(self, url: str) -> None:
        result = await self.cdp.call("Page.navigate", self.session, url=url)
        if result.get("errorText"):
            raise CdpError(f"loading {url}: {result['errorText']}")
        await self.cdp.wait_event("Page.loadEventFired", self.session)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression; awaited if it is a promise."""
        result = await self.cdp.call(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(details.get("exception", {}).get("description") or details["text"])
        return result["result"].get("value")

    async def wait_for_state(self, *states: str, within: float = 60) -> str:
        """Wait until the page's <body data-state> is one of ``states``; return it."""
        wanted = json.dumps(states)
        expression = f"""new Promise((resolve) => {{
            const check = () => {{
                const state = document.body && document.body.dataset.state;
                if ({wanted}.includes(state)) resolve(state); else setTimeout(check, 25);
            }};
            check();
        }})"""
        with trio.move_on_after(within):
            state: str = await self.evaluate(expression)
            return state
        text = await self.evaluate("document.body.innerText")
        pytest.fail(
            f"page did not reach {states} in {within}s; it shows:\n{text}\n"
            + "\n".join(self.cdp.console(self.session))
        )

    async def text(self, element_id: str) -> str:
        text: str = await self.evaluate(f"document.getElementById({element_id!r}).textContent")
        return text

    async def screenshot(self, path: Path) -> None:
        shot = await self.cdp.call("Page.captureScreenshot", self.session, format="png")
        await trio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


class Browser:
    def __init__(self, cdp: Cdp) -> None:
        self.cdp = cdp

    async def new_page(self, url: str | None = None) -> Page:
        target = await self.cdp.call("Target.createTarget", url="about:blank")
        attached = await self.cdp.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self.cdp, attached["sessionId"])
        await self.cdp.call("Page.enable", page.session)
        await self.cdp.call("Runtime.enable", page.session)
        if url is not None:
            await page.goto(url)
        return page


@asynccontextmanager
async def launch_chromium(executable: str, *extra_flags: str) -> AsyncIterator[Browser]:
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        log_path = Path(profile) / "chromium.log"
        flags = [*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}"]
        with log_path.open("wb") as log_file:
            process = await trio.lowlevel.open_process(
                [executable, *flags, "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
                # Its singleton socket directory goes in TMPDIR, and stays there when Chromium is
                # stopped by a signal: in the profile, it goes with it.
                env={**os.environ, "TMPDIR": profile},
            )
        try:
            # Chromium writes its DevTools port and path here once it listens.
            port_file = Path(profile) / "DevToolsActivePort"
            with trio.fail_after(30):
                while not port_file.exists() or len(port_file.read_text().split()) < 2:
                    if process.poll() is not None:
                        pytest.fail(f"Chromium exited: {log_path.read_text()[-2000:]}")
                    await trio.sleep(0.05)
            port, path = port_file.read_text().split()[:2]
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{port}{path}", max_message_size=2**26
            ) as ws:
                yield Browser(Cdp(ws))
        finally:
            with trio.CancelScope(shield=True):
                process.terminate()
                with trio.move_on_after(10):
                    await process.wait()
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


@pytest.fixture
async def browser(chromium_executable: str) -> AsyncIterator[Browser]:
    async with launch_chromium(chromium_executable) as browser:
        yield browser


ProxyServer = Callable[[trio_httpws.Config], AbstractAsyncContextManager[str]]


@pytest.fixture(params=[*DOORS, "handler"])
def serve_proxy(request: pytest.FixtureRequest) -> ProxyServer:
    """The proxy served by ``trio_httpws.serve`` on each door, or by ``handler()`` under
    trio-websocket."""
    if request.param == "handler":
        return running_handler_proxy
    return partial(running_proxy, door=request.param)


def page_url(page_origin: str, token_url: str, code: str, transport: str = "auto") -> str:
    """The example page with its form filled in from the fragment and run at once."""
    fields = {"url": token_url, "code": code, "transport": transport, "run": "1"}
    return f"{page_origin}/#" + urlencode(fields)


# What users paste: the URL the runtime printed, or Jupyter's own `/tree?token=...` (the page is
# cut off, by the rule tests/test_pasted.py checks, and the status line says so).
@pytest.mark.parametrize("pasted_page", ["/", "/tree"])
async def test_page_on_another_origin_runs_a_cell(
    browser: Browser,
    jupyter: Jupyter,
    serve_proxy: ProxyServer,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    pasted_page: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_httpws")
    async with page_server() as page_origin:
        config = trio_httpws.Config(backend=jupyter.url, allow_origins=(page_origin,))
        async with serve_proxy(config) as proxy_url:
            # Another origin: "localhost" vs "127.0.0.1", and another port.
            proxy = proxy_url.replace("127.0.0.1", "localhost")
            token_url = f"{proxy}{pasted_page}?token={jupyter.token}"
            page = await browser.new_page(page_url(page_origin, token_url, "print(6*7)"))
            state = await page.wait_for_state("done", "error")
            status = await page.text("status")
            output = await page.text("output")
            kind = request.node.callspec.params["serve_proxy"]
            if pasted_page == "/":
                await page.screenshot(ARTIFACTS / SCREENSHOTS[kind])
            else:
                assert await page.evaluate("document.body.dataset.cut") == "/tree"
                said = (
                    f"httpws: /tree is a Jupyter page, not part of the server's URL: using {proxy}/"
                )
                assert said in "\n".join(page.cdp.console(page.session))
            assert state == "done", status
            assert output.strip() == "42"
            # hypercorn serves plain HTTP with CORS too: the page goes direct. handler() serves
            # WebSockets only (its server answers a fetch with a bare 400, no CORS), so the page
            # falls back to the tunnel, as it would with the original extension.
            transport = "tunnel" if kind == "handler" else "direct"
            assert await page.evaluate("document.body.dataset.transport") == transport
            how = "directly" if transport == "direct" else "through the tunnel"
            assert status == f"Done (connected {how})."
            assert await page.evaluate("location.origin") == page_origin
            assert page_origin != proxy
    # The browser really spoke to the proxy: the auth URL was used and the kernel relayed.
    messages = [r.getMessage() for r in caplog.records]
    assert any("POST /api/sessions 201" in m for m in messages), messages
    assert any("DELETE /api/sessions/" in m and " 204 " in m for m in messages), messages


async def test_page_origin_not_allowed_is_refused(
    browser: Browser,
    jupyter: Jupyter,
    serve_proxy: ProxyServer,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_httpws")
    # The default Config allows only Colab's origin.
    config = trio_httpws.Config(backend=jupyter.url)
    async with page_server() as page_origin, serve_proxy(config) as proxy_url:
        proxy = proxy_url.replace("127.0.0.1", "localhost")
        token_url = f"{proxy}/?token={jupyter.token}"
        page = await browser.new_page(page_url(page_origin, token_url, "print(6*7)"))
        state = await page.wait_for_state("done", "error")
        status = await page.text("status")
        kind = request.node.callspec.params["serve_proxy"]
        await page.screenshot(ARTIFACTS / SCREENSHOTS[kind].replace(".png", "-refused.png"))
    assert state == "error", status
    # Browsers hide the handshake's 403 from pages: the socket just closes with 1006.
    assert "could not open WebSocket" in status
    assert "1006" in status
    assert await page.text("output") == ""
    refused = [r.getMessage() for r in caplog.records if "refused WebSocket" in r.getMessage()]
    assert refused == [f"refused WebSocket from origin {page_origin!r} to /http_over_websocket"]


CLIENT_SCRIPT = """(async () => {
  const m = await import("./httpws.js");
  const base = %(base)s;
  const authUrl = base + "/fake-auth";
  const client = await m.connect(base, { authUrl });
  const out = {};
  const sent = new Uint8Array(200000).map((_, i) => (i * 7) %% 256);
  // Concurrent requests on one socket; bodies of several 64 KiB frames, interleaved.
  const [big, echo, cookies] = await Promise.all([
    client.request("GET", "/bytes?n=300000&chunk=70000"),
    client.request("POST", "/echo", { body: sent }),
    client.request("GET", "/requires-cookies-from-fake-auth"),
  ]);
  out.bigStatus = big.status;
  out.bigLength = big.body.length;
  out.bigPattern = big.body.every((b, i) => b === i %% 256);
  out.echoEqual = echo.body.length === sent.length && echo.body.every((b, i) => b === sent[i]);
  out.echoLengthHeader = echo.headers["X-Body-Length"];
  out.contentType = echo.headers["Content-Type"];
  out.cookies = cookies.text();
  out.textBody = (await client.request("POST", "/echo", { body: "héllo" })).text();
  out.base64Body = (await client.request("POST", "/echo", { bodyBase64: btoa("raw") })).text();
  out.notFound = (await client.request("GET", "/no/such/page")).status;
  // A slow request, left running: the test waits until the backend has it, then cancels it.
  const controller = new AbortController();
  const slow = client.request("GET", "/slow?delay=30&tag=%(tag)s", { signal: controller.signal });
  window.testState = { m, client, base, authUrl, controller, slow };
  return out;
})()"""

CANCEL_SCRIPT = """(async () => {
  const { m, client, base, authUrl, controller, slow } = window.testState;
  const out = {};
  // Cancelling rejects at once with an AbortError; the socket stays usable.
  controller.abort();
  out.cancelled = await slow.then(() => "resolved", (e) => e.name);
  out.afterCancel = (await client.request("GET", "/api/sessions")).text();
  // A response cut short by the backend rejects, with the proxy's status.
  out.truncated = await client.request("GET", "/die-mid-body").then(
    (r) => "resolved " + r.status, (e) => e.name + " " + e.status);
  // A proxied WebSocket carries the auth URL's cookies too.
  const ws = m.openProxiedWebSocket(base, "/requires-cookies-from-fake-auth-ws", { authUrl });
  await m.waitOpen(ws);
  ws.send("cookies?");
  out.wsCookies = await new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
  ws.close();
  out.closed = (await client.close()).code;
  out.afterClose = await client.request("GET", "/api/sessions").then(() => "resolved", (e) => e.name);
  return out;
})()"""


async def wait_for_slow(fake_backend: FakeBackend, tag: str, active: int) -> None:
    # The count lives in the fake backend's thread: there is nothing to wait on but itself.
    with trio.fail_after(10):
        while fake_backend.slow_active(tag) != active:  # noqa: ASYNC110
            await trio.sleep(0.02)


async def run_client_scripts(
    browser: Browser, fake_backend: FakeBackend, first: str, cancel: str, door: str
) -> dict[str, Any]:
    """Run ``first`` (which leaves a slow request running) then ``cancel`` in a page on another
    origin than the proxy; return what both collected, once the backend saw the request go."""
    tag = "browser-" + os.urandom(4).hex()
    async with page_server() as page_origin:
        config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(page_origin,))
        async with running_proxy(config, door) as proxy_url:
            proxy = proxy_url.replace("127.0.0.1", "localhost")
            page = await browser.new_page(page_origin + "/")
            with trio.fail_after(30):
                out: dict[str, Any] = await page.evaluate(
                    first % {"base": json.dumps(proxy), "tag": tag}
                )
                await wait_for_slow(fake_backend, tag, 1)
                out.update(await page.evaluate(cancel))
            # The cancel reached the proxy, which dropped the backend request.
            await wait_for_slow(fake_backend, tag, 0)
    return out


async def test_js_client_against_the_fake_backend(
    browser: Browser, fake_backend: FakeBackend, door: str
) -> None:
    out = await run_client_scripts(browser, fake_backend, CLIENT_SCRIPT, CANCEL_SCRIPT, door)
    assert out == {
        "bigStatus": 200,
        "bigLength": 300000,
        "bigPattern": True,
        "echoEqual": True,
        "echoLengthHeader": "200000",
        "contentType": "application/octet-stream",
        "cookies": 'X-Test-Cookie: "1" X-Other-Test-Cookie: "2"',
        "textBody": "héllo",
        "base64Body": "raw",
        "notFound": 404,
        "cancelled": "AbortError",
        "afterCancel": "ok",
        "truncated": "HttpOverWsError 502",
        "wsCookies": 'X-Test-Cookie: "1" X-Other-Test-Cookie: "2"',
        "closed": 1000,
        "afterClose": "HttpOverWsError",
    }


DIRECT_CLIENT_SCRIPT = """(async () => {
  const m = await import("./httpws.js");
  const base = %(base)s;
  const client = new m.DirectClient(base, { token: "t/k n" });
  const out = { transport: client.transport };
  const sent = new Uint8Array(200000).map((_, i) => (i * 7) %% 256);
  const [big, echo] = await Promise.all([
    client.request("GET", "/bytes?n=300000&chunk=70000"),
    client.request("POST", "/echo", { body: sent }),
  ]);
  out.bigStatus = big.status;
  out.bigPattern = big.body.length === 300000 && big.body.every((b, i) => b === i %% 256);
  out.echoEqual = echo.body.length === sent.length && echo.body.every((b, i) => b === sent[i]);
  // CORS lets a page read only the safelisted response headers.
  out.echoHeaders = Object.keys(echo.headers).sort();
  out.textBody = (await client.request("PUT", "/echo", { body: "héllo" })).text();
  out.base64Body = (await client.request("POST", "/echo", { bodyBase64: btoa("raw") })).text();
  out.notFound = (await client.request("GET", "/no/such/page")).status;
  const seen = (await client.request("POST", "/headers?a=b%%20c", { body: "{}" })).json();
  out.seenUri = seen.uri;
  out.seenType = seen.headers.filter(([k]) => k === "Content-Type").map(([, v]) => v);
  out.seenOrigin = seen.headers.some(([k]) => k === "Origin");
  out.truncated = await client.request("GET", "/die-mid-body").then(
    (r) => "resolved " + r.status, (e) => e.name + " " + e.status);
  const ws = client.openWebSocket("/plain-echo-ws?x=1");
  await m.waitOpen(ws);
  ws.send("hello");
  out.wsEcho = await new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
  out.wsUrl = ws.url.replace(/:\\d+/, ":PORT");
  ws.close();
  const controller = new AbortController();
  const slow = client.request("GET", "/slow?delay=30&tag=%(tag)s", { signal: controller.signal });
  window.testState = { client, controller, slow };
  return out;
})()"""

DIRECT_CANCEL_SCRIPT = """(async () => {
  const { client, controller, slow } = window.testState;
  controller.abort();
  const out = { cancelled: await slow.then(() => "resolved", (e) => e.name) };
  out.afterCancel = (await client.request("GET", "/api/sessions")).text();
  await client.close();
  out.afterClose = await client.request("GET", "/api/sessions").then(
    () => "resolved", (e) => e.message);
  return out;
})()"""


async def test_js_direct_client_against_the_fake_backend(
    browser: Browser, fake_backend: FakeBackend, door: str
) -> None:
    """The direct transport's request(), cancel() and openWebSocket(), as the tunnel's above.

    Cancelling aborts the fetch: the browser drops the connection, and the proxy the backend
    request.
    """
    out = await run_client_scripts(
        browser, fake_backend, DIRECT_CLIENT_SCRIPT, DIRECT_CANCEL_SCRIPT, door
    )
    assert out == {
        "transport": "direct",
        "bigStatus": 200,
        "bigPattern": True,
        "echoEqual": True,
        "echoHeaders": ["Content-Length", "Content-Type"],
        "textBody": "héllo",
        "base64Body": "raw",
        "notFound": 404,
        # The token is appended to the caller's query, which is kept as it was written.
        "seenUri": "/headers?a=b%20c&token=t%2Fk%20n",
        "seenType": ["application/json"],
        "seenOrigin": False,
        "truncated": "HttpOverWsError 200",
        "wsEcho": "hello",
        "wsUrl": "ws://localhost:PORT/plain-echo-ws?x=1&token=t%2Fk+n",
        "cancelled": "AbortError",
        "afterCancel": "ok",
        "afterClose": "the client is closed",
    }


async def test_public_page_needs_the_users_local_network_permission(
    chromium_executable: str, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture, door: str
) -> None:
    """Colab's case: a page on a public origin calling the proxy on loopback.

    Chromium (Local Network Access, 142 and later) asks the user first, and sends the request
    only once allowed: no server answer replaces that click. Here Chromium takes the page server
    for a public, secure origin, as https://colab.research.google.com is, and granting the
    "loopback-network" permission stands in for the click. (The other tests need no permission:
    a page on 127.0.0.1 calling localhost stays within loopback.)
    """
    caplog.set_level(logging.INFO, logger="trio_httpws.access")
    async with page_server() as page_origin:
        config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(page_origin,))
        public = (
            f"--ip-address-space-overrides={page_origin.removeprefix('http://')}=public",
            f"--unsafely-treat-insecure-origin-as-secure={page_origin}",
        )
        async with (
            running_proxy(config, door) as proxy_url,
            launch_chromium(chromium_executable, *public) as browser,
        ):
            url = json.dumps(proxy_url.replace("127.0.0.1", "localhost") + "/echo")
            post = f"""fetch({url}, {{ method: "POST", credentials: "include",
                headers: {{ "Content-Type": "application/json" }}, body: "{{}}" }}
            ).then((r) => r.status, (e) => e.name)"""
            page = await browser.new_page(page_origin + "/")
            denied = await page.evaluate(post)
            reached = [r for r in caplog.records if r.name == "trio_httpws.access"]
            await browser.cdp.call(
                "Browser.setPermission",
                permission={"name": "loopback-network"},
                setting="granted",
                origin=page_origin,
            )
            allowed = await page.evaluate(post)
    assert (denied, reached) == ("TypeError", [])
    assert allowed == 200
    # Once allowed: the preflight, answered by the proxy itself, then the request.
    fields = [r.fields for r in caplog.records if r.name == "trio_httpws.access"]  # type: ignore[attr-defined]
    assert [(f["method"], f["path"], f["status"]) for f in fields] == [
        ("OPTIONS", "/echo", 204),
        ("POST", "/echo", 200),
    ]


# -- Colab's direct flow, from a real browser, against trio-httpws as a user starts it ----------


@dataclass(frozen=True)
class Runtime:
    """``trio-httpws`` running as a subprocess, as a user starts it."""

    #: The proxy, named ``localhost``: another origin than the page's ``127.0.0.1``.
    url: str
    token: str
    #: The Jupyter behind it, reached without the proxy.
    backend: str
    #: Its log (stderr): access lines and refusals.
    log: Path
    #: The Jupyter root directory, when the CLI started that Jupyter.
    root_dir: Path | None


@asynccontextmanager
async def running_cli(
    tmp_path: Path, allow_origin: str, jupyter: Jupyter | None, door: str
) -> AsyncIterator[Runtime]:
    """``trio-httpws --port 0 --allow-origin ... --server door``, with its own Jupyter or
    ``--backend``."""
    args = [sys.executable, "-m", "trio_httpws", "--port", "0", "--allow-origin", allow_origin]
    # Each request on stderr too; the full log (Jupyter's) in the test's own directory.
    args += ["--server", door, "--log-level", "info", "--log-file", str(tmp_path / "full.log")]
    root_dir = None
    if jupyter is None:
        root_dir = tmp_path / "root"
        root_dir.mkdir()
        args += ["--jupyter-root-dir", str(root_dir)]
    else:
        args += ["--backend", jupyter.url]
    log_path = tmp_path / "trio-httpws.log"
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=example_env(),
            start_new_session=True,
        )
    try:
        assert process.stdout is not None
        output = ""
        while "Press Ctrl-C" not in output:
            output += await read_line(process.stdout, within=60) + "\n"
        proxying = re.search(
            r"proxying http://127\.0\.0\.1:(\d+) -> (http://\S+?)/?$", output, re.M
        )
        assert proxying, output
        port, backend = proxying.groups()
        if jupyter is None:
            printed = re.search(r"http://127\.0\.0\.1:\d+/\?token=(\w+)", output)
            assert printed, output
            token = printed.group(1)
        else:
            token = jupyter.token
        try:
            yield Runtime(f"http://localhost:{port}", token, backend, log_path, root_dir)
        except BaseException:
            # What the proxy and Jupyter saw, for a failure that shows only in the browser (pytest
            # prints a failed test's captured output).
            for name, path in (
                ("trio-httpws", log_path),
                ("Jupyter", jupyter.log if jupyter else None),
            ):
                if path and path.exists():
                    print(f"--- the end of {name}'s log ---\n{path.read_text()[-6000:]}")
            raise
    finally:
        await stop(process)


#: Shows each step's result in the page (for the screenshot) and collects them in ``out``.
STEPS_JS = """
  document.body.innerHTML = `<h2>${%(title)s}</h2><table id="steps"></table>`;
  const out = {};
  const step = (name, value) => {
    out[name] = value;
    document.getElementById("steps").insertAdjacentHTML("beforeend",
      `<tr><td>${name}</td><td><code>${JSON.stringify(value)}</code></td></tr>`);
  };
"""

DIRECT_SCRIPT = """(async () => {
  // What Colab's page does since 2025: credentialed fetch() with the token in the query.
  const m = await import("./httpws.js");
  const base = %(base)s, token = %(token)s, file = %(file)s;
  const withToken = (path) => path + (path.includes("?") ? "&" : "?") + "token=" + token;
  const call = async (method, path, json) => {
    const init = { method, credentials: "include", cache: "no-store" };
    if (json !== undefined) {
      // Not a CORS-safelisted type: the browser sends a preflight first.
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(json);
    }
    const response = await fetch(base + withToken(path), init);
    return { status: response.status, body: await response.text() };
  };
  %(steps)s
  step("buildInfo", (await call("GET", "/api/colab/build-info")).status);
  const specs = await call("GET", "/api/kernelspecs");
  step("kernelspecs", [specs.status, Object.keys(JSON.parse(specs.body).kernelspecs)]);
  const created = await call("POST", "/api/sessions",
    { path: "direct-" + m.randomId(4) + ".ipynb", type: "notebook", name: "",
      kernel: { name: "python3" } });
  const session = JSON.parse(created.body);
  step("createSession", created.status);
  const channels = `/api/kernels/${session.kernel.id}/channels?session_id=${m.randomId()}`;
  const kernel = new WebSocket(base.replace("http", "ws") + withToken(channels));
  step("kernel", await m.executeCode(kernel, "print(6*7)"));
  kernel.close();
  const put = await call("PUT", "/api/contents/" + file,
    { type: "file", format: "text", content: "written from " + location.origin });
  step("putContents", put.status);
  const read = JSON.parse((await call("GET", "/api/contents/" + file)).body);
  step("readBack", read.content);
  window.direct = { call, session, channels, file, step };
  return out;
})()"""

DIRECT_CLEANUP_SCRIPT = """(async () => {
  const { call, session, file, step } = window.direct;
  step("deleteSession", (await call("DELETE", "/api/sessions/" + session.id)).status);
  step("deleteContents", (await call("DELETE", "/api/contents/" + file)).status);
})()"""

REFUSED_SCRIPT = """(async () => {
  // A page on an origin the proxy does not allow, holding the token all the same.
  const base = %(base)s, token = %(token)s, channels = %(channels)s;
  %(steps)s
  const settle = (promise) => promise.then((r) => "read " + r.status, (e) => e.name);
  step("read", await settle(
    fetch(base + "/api/kernelspecs?token=" + token, { credentials: "include" })));
  // A "simple" request: no preflight, so the browser really sends it; Jupyter parses the
  // text/plain body as JSON and would create an untitled file in its root.
  const create = (url) => fetch(url + "/api/contents?token=" + token, {
    method: "POST", mode: "no-cors", credentials: "include",
    headers: { "Content-Type": "text/plain" }, body: JSON.stringify({ type: "file", ext: ".txt" }),
  });
  step("simplePost", await create(base).then((r) => r.type, (e) => e.name));
  const ws = new WebSocket(base.replace("http", "ws") + channels + "&token=" + token);
  step("webSocket", await new Promise((resolve) => {
    ws.onopen = () => resolve("open");
    ws.onclose = (event) => resolve("closed " + event.code);
  }));
  window.create = create;
  return out;
})()"""


def script(template: str, title: str, **values: str) -> str:
    """``template`` with JSON-quoted ``values`` and the steps table titled by a JS expression."""
    quoted = {name: json.dumps(value) for name, value in values.items()}
    return template % {**quoted, "steps": STEPS_JS % {"title": title}}


async def attach_iframe(page: Page, url: str) -> Page:
    """Add an iframe on ``url`` to ``page``; the returned Page runs code inside it.

    The iframe is on another site, so Chromium runs it in a process of its own (an
    out-of-process iframe): it is reached through its own DevTools target.
    """
    await page.cdp.call(
        "Target.setAutoAttach",
        page.session,
        autoAttach=True,
        waitForDebuggerOnStart=False,
        flatten=True,
    )
    await page.evaluate(f"""new Promise((resolve) => {{
        const frame = document.createElement("iframe");
        frame.src = {json.dumps(url)};
        frame.style.cssText = "width: 100%; height: 210px; border: 2px solid #b00020;";
        frame.onload = () => resolve();
        document.body.append(frame);
    }})""")
    while True:
        event = await page.cdp.wait_event("Target.attachedToTarget", page.session)
        if event["params"]["targetInfo"]["type"] == "iframe":
            return Page(page.cdp, event["params"]["sessionId"])


async def contents(runtime: Runtime) -> list[str]:
    """The names in the Jupyter root, asked of Jupyter itself (no proxy, no Origin)."""
    status, _, body = await http_get(runtime.backend, f"/api/contents?token={runtime.token}")
    assert status == 200
    return sorted(item["name"] for item in json.loads(body)["content"])


def log_lines(runtime: Runtime, needle: str) -> list[str]:
    return [line for line in runtime.log.read_text().splitlines() if needle in line]


async def run_example_page(
    browser: Browser, page_origin: str, token_url: str, transport: str, screenshot: str
) -> tuple[str, str | None, str, str]:
    """The example page run once: its state, transport, status line and output."""
    page = await browser.new_page(page_url(page_origin, token_url, "print(6*7)", transport))
    state = await page.wait_for_state("done", "error")
    await page.screenshot(ARTIFACTS / screenshot)
    used = await page.evaluate("document.body.dataset.transport")
    return state, used, await page.text("status"), (await page.text("output")).strip()


@pytest.mark.parametrize("runtime_kind", ["cli", "backend"])
async def test_colab_direct_flow_from_another_origin(
    browser: Browser, tmp_path: Path, runtime_kind: str, request: pytest.FixtureRequest, door: str
) -> None:
    """Colab's flow since 2025 from a page on another origin, and a refused origin in an iframe.

    ``cli``: trio-httpws starts its own Jupyter; ``backend``: a stock Jupyter Server 2 with no
    CORS flags behind ``--backend``. The example page then runs both ways on the same port.
    """
    jupyter = request.getfixturevalue("jupyter") if runtime_kind == "backend" else None
    async with page_server() as page_origin:
        # The same page server under another name is another origin, one the proxy refuses.
        refused_origin = page_origin.replace("127.0.0.1", "localhost")
        async with running_cli(tmp_path, page_origin, jupyter, door) as runtime:
            base, token = runtime.url, runtime.token
            file = f"direct-{os.urandom(4).hex()}.txt"
            with trio.fail_after(120):
                page = await browser.new_page(page_origin + "/")
                title = "`Colab's direct flow from ${location.origin} to ${base}`"
                direct = await page.evaluate(
                    script(DIRECT_SCRIPT, title, base=base, token=token, file=file)
                )
                before = await contents(runtime)
                frame = await attach_iframe(page, refused_origin + "/")
                channels = await page.evaluate("window.direct.channels")
                title = "`A refused origin: ${location.origin}`"
                refused = await frame.evaluate(
                    script(REFUSED_SCRIPT, title, base=base, token=token, channels=channels)
                )
                after = await contents(runtime)
                if runtime.root_dir is not None:
                    on_disk = [p.name for p in runtime.root_dir.iterdir()]
                    assert sorted(n for n in on_disk if not n.startswith(".")) == after
                await page.evaluate(DIRECT_CLEANUP_SCRIPT)
                cleanup = await page.evaluate(
                    "[...document.querySelectorAll('td')].map(td => td.textContent)"
                )
                await page.screenshot(ARTIFACTS / f"browser-direct-{runtime_kind}.png")
                # connect() with a wrong token: the runtime's readable 403, no tunnel attempt.
                wrong_token = await page.evaluate(
                    f"""import("./httpws.js").then((m) => m.connect({json.dumps(base)},
                        {{ token: "wrong" }})).then(() => "connected", (e) => [e.status, e.message])"""
                )
                refused_here = await frame.evaluate("location.origin")
                # The same simple POST straight to Jupyter (no CORS flags) creates a file: the
                # browser does send it, and only the proxy stands in the way.
                control = await frame.evaluate(
                    f"window.create({json.dumps(runtime.backend)}).then((r) => r.type)"
                )
                created = sorted(set(await contents(runtime)) - set(after))
                for name in created:
                    target = f"/api/contents/{name}?token={token}"
                    assert (await http_request(runtime.backend, "DELETE", target)).status == 204
                token_url = f"{base}/?token={token}"
                examples = [
                    await run_example_page(
                        browser,
                        page_origin,
                        token_url,
                        transport,
                        f"browser-example-{runtime_kind}-{transport}.png",
                    )
                    for transport in ("auto", "tunnel")
                ]

    assert direct == {
        "buildInfo": 404,  # Colab's own runtime has it; a readable 404 is what the page expects
        "kernelspecs": [200, ["python3"]],
        "createSession": 201,
        "kernel": "42\n",
        "putContents": 201,
        "readBack": f"written from {page_origin}",
    }
    assert cleanup[-4:] == ["deleteSession", "204", "deleteContents", "204"]
    # hypercorn sends no reason phrase; the proxy's own door passes Jupyter's on.
    reason = " Forbidden" if door == "trio" else ""
    assert wrong_token == [
        403,
        f"could not connect to {base}/: GET /api/status answered 403{reason} (is the token right?)",
    ]
    # The JSON POST was preflighted, and the proxy answered the preflight itself.
    assert log_lines(runtime, "http OPTIONS /api/sessions 204 ")
    assert refused_here == refused_origin
    assert refused == {"read": "TypeError", "simplePost": "opaque", "webSocket": "closed 1006"}
    assert after == before
    assert control == "opaque"
    assert [name.startswith("untitled") for name in created] == [True]
    # Each refused request reached the proxy and stopped there.
    origin = repr(refused_origin)
    assert log_lines(runtime, f"refused GET /api/kernelspecs from origin {origin}")
    assert log_lines(runtime, f"refused POST /api/contents from origin {origin}")
    path = channels.split("?")[0]
    assert log_lines(runtime, f"refused WebSocket from origin {origin} to {path}")

    # The example page, both ways on the same port: directly first when asked to choose.
    assert examples == [
        ("done", "direct", "Done (connected directly).", "42"),
        ("done", "tunnel", "Done (connected through the tunnel).", "42"),
    ]
    assert log_lines(runtime, "tunnel POST /api/sessions 201 ")
    assert log_lines(runtime, "ws GET /http_over_websocket/proxied_ws/api/kernels/")
