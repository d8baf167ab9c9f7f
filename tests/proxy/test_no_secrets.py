"""Nothing secret in the logs: every path, its errors included, run with a known token and cookie.

Records are captured at every level from every logger (ours, hypercorn's, trio-websocket's), and
each is checked as the text formatter and the JSON formatter would write it, tracebacks and
record fields included.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

import h11
import pytest
import trio_websocket

import trio_httpws
from trio_httpws._cli import JsonFormatter
from trio_httpws._jupyter import free_port

from ..support._http import http_request
from ..support.fake_backend import FakeBackend
from ..support.proxies import access_lines, running_proxy
from ..support.ws import connect, fetch

TOKEN = "SECRET-t0ken-4f9a"
COOKIE = "SECRET-c00kie-77b1"
COLAB = "https://colab.research.google.com"
EVIL = "https://evil.example"


def from_the_proxy(record: logging.LogRecord) -> bool:
    """Records of the proxy's process: not the fake backend's (tornado, in this process for the
    test) nor the test client's own connect line (the proxy never calls trio-websocket's
    ``connect_websocket``, which writes it)."""
    if record.name.startswith("tornado"):
        return False
    return not (record.name == "trio-websocket" and record.msg.startswith("Connecting to"))


def leaked(caplog: pytest.LogCaptureFixture) -> list[str]:
    text, as_json = logging.Formatter(), JsonFormatter()
    found = []
    for record in filter(from_the_proxy, caplog.records):
        for line in (text.format(record), as_json.format(record)):
            if TOKEN in line or COOKIE in line:
                found.append(line)
    return found


def auth_query(base: str, path: str = "/fake-auth") -> str:
    return urlencode({"jupyter_http_over_ws_auth_url": f"{base}{path}?token={TOKEN}"})


async def every_path(proxy: str) -> None:
    """Each door with the token in the query and a secret cookie, successes and failures."""
    cookie = [("Cookie", f"session={COOKIE}")]
    secret = f"token={TOKEN}"
    # The tunnel, with an auth URL carrying the token.
    async with connect(proxy, f"/http_over_websocket?{auth_query(proxy)}", headers=cookie) as ws:
        await fetch(ws, "1", "GET", f"/api/sessions?{secret}")
        await fetch(ws, "2", "POST", f"/api/sessions?{secret}", body="x")
        await fetch(ws, "3", "GET", f"/die-mid-body?{secret}")
        await fetch(ws, "4", "GET", f"/no-such-path?{secret}")
    # proxied_ws, and a refused backend handshake.
    for path in ("/echoing-ws", "/no-such-ws"):
        query = f"{secret}&{auth_query(proxy)}"
        async with connect(proxy, f"/http_over_websocket/proxied_ws{path}?{query}") as ws:
            try:
                await ws.send_message("hello")
                await ws.get_message()
            except trio_websocket.ConnectionClosed:
                pass
    # An auth URL on another origin, and one whose fetch fails.
    for url in (f"http://evil.example/?{secret}", f"{proxy}/fake-auth?always_fail=1&{secret}"):
        query = urlencode({"jupyter_http_over_ws_auth_url": url})
        async with connect(proxy, f"/http_over_websocket?{query}") as ws:
            await fetch(ws, "1", "GET", f"/api/sessions?{secret}")
    # The reverse proxy: HTTP, a body dying midway, plain WebSockets, refused origins.
    for origin in (None, COLAB, EVIL):
        headers = [*cookie, *([("Origin", origin)] if origin else [])]
        await http_request(proxy, "GET", f"/api/sessions?{secret}", headers=headers)
    with pytest.raises(h11.RemoteProtocolError):  # the body is cut short on purpose
        await http_request(proxy, "GET", f"/die-mid-body?{secret}")
    async with connect(proxy, f"/plain-echo-ws?{secret}", headers=cookie) as ws:
        await ws.send_message("hello")
        await ws.get_message()
    for path, origin in (("/no-such-ws", COLAB), ("/plain-echo-ws", EVIL)):
        with pytest.raises(trio_websocket.ConnectionRejected):
            async with connect(proxy, f"{path}?{secret}", headers=[("Origin", origin)]):
                pass  # pragma: no cover - refused


async def test_no_secret_in_any_log_line(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture, door: str
) -> None:
    caplog.set_level(logging.DEBUG)
    config = trio_httpws.Config(backend=fake_backend.url)
    async with running_proxy(config, door) as proxy:
        await every_path(proxy)
    assert len(caplog.records) > 20  # the paths above really logged
    assert leaked(caplog) == []


async def test_no_secret_when_the_backend_is_down(
    caplog: pytest.LogCaptureFixture, door: str
) -> None:
    caplog.set_level(logging.DEBUG)
    config = trio_httpws.Config(backend=f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    async with running_proxy(config, door) as proxy:
        async with connect(proxy, f"/http_over_websocket?{auth_query(proxy)}") as ws:
            response = await fetch(ws, "1", "GET", f"/api/sessions?token={TOKEN}")
        assert response.status == 500  # the auth URL could not be fetched
        async with connect(proxy) as ws:
            response = await fetch(ws, "1", "GET", f"/api/sessions?token={TOKEN}")
        assert response.status == 502
        reverse = await http_request(proxy, "GET", f"/api/sessions?token={TOKEN}")
        assert reverse.status == 502
        with pytest.raises(trio_websocket.ConnectionRejected):
            async with connect(proxy, f"/api/kernels/x/channels?token={TOKEN}"):
                pass  # pragma: no cover - refused
    assert [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert leaked(caplog) == []


async def test_no_secret_when_tls_fails(
    tls_backend: FakeBackend,
    caplog: pytest.LogCaptureFixture,
    door: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    # No backend_ca: the system's CAs do not know the test CA, so every connect fails.
    config = trio_httpws.Config(backend=tls_backend.url)
    async with running_proxy(config, door) as proxy:
        async with connect(proxy) as ws:
            response = await fetch(ws, "1", "GET", f"/api/sessions?token={TOKEN}")
        reverse = await http_request(proxy, "GET", f"/api/sessions?token={TOKEN}")
    assert response.status == 502
    assert "certificate" in response.first["statusText"].lower()
    assert reverse.status == 502
    assert leaked(caplog) == []


async def test_backend_dying_mid_body_is_one_warning_of_ours(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture, door: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_proxy(trio_httpws.Config(backend=fake_backend.url), door) as proxy:
        with pytest.raises(h11.RemoteProtocolError):  # the client sees a cut response
            await http_request(proxy, "GET", "/die-mid-body")
        await access_lines(caplog, 1)
    serious = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.getMessage().split(":")[0]) for r in serious] == [
        ("trio_httpws", "GET /die-mid-body truncated")
    ]
    assert not [r for r in caplog.records if r.exc_info]


def test_json_formatter_keeps_fields() -> None:
    # The check above reads JSON lines too: make sure fields really are in them.
    record = logging.LogRecord("trio_httpws.access", logging.INFO, __file__, 1, "x", None, None)
    record.fields = {"path": "/p"}
    assert json.loads(JsonFormatter().format(record))["path"] == "/p"
