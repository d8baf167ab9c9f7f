"""End to end: a real hypercorn serving trio_httpws in front of a real Jupyter Server 2.

The flow is the one a browser front end such as Colab uses: open /http_over_websocket with the
token URL as the auth URL, create a session over it, run code on the kernel through
/http_over_websocket/proxied_ws/api/kernels/<id>/channels, delete the session.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
import trio
import trio_websocket

import trio_httpws
from trio_httpws.client import run_code

from ._http import http_request
from .conftest import Jupyter, connect, fetch, running_proxy

COLAB = "https://colab.research.google.com"


@pytest.fixture
async def jproxy(jupyter: Jupyter, door: str) -> AsyncIterator[str]:
    async with running_proxy(trio_httpws.Config(backend=jupyter.url), door) as url:
        yield url


async def run_cell(ws: trio_websocket.WebSocketConnection, code: str) -> str:
    """Execute ``code`` and return what it printed on stdout."""
    with trio.fail_after(60):
        result = await run_code(ws, code, session=uuid.uuid4().hex)
    assert result.ok, result
    return result.stdout


async def test_colab_flow_runs_code_on_a_kernel(jproxy: str, jupyter: Jupyter) -> None:
    auth = {"jupyter_http_over_ws_auth_url": f"{jproxy}/?token={jupyter.token}"}
    query = "?min_version=0.0.7&" + urlencode(auth)
    async with connect(jproxy, "/http_over_websocket" + query, headers=[("Origin", COLAB)]) as ws:
        status = await fetch(ws, "s", "GET", "/api/status")
        assert status.status == 200
        created = await fetch(
            ws,
            "create",
            "POST",
            "/api/sessions",
            body=json.dumps(
                {"path": "e2e.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}}
            ),
        )
        assert created.status == 201, created.body
        session = json.loads(created.body)
        kernel_id = session["kernel"]["id"]

        channels = (
            f"/http_over_websocket/proxied_ws/api/kernels/{kernel_id}/channels"
            f"?session_id={uuid.uuid4().hex}&" + urlencode(auth)
        )
        async with connect(jproxy, channels, headers=[("Origin", COLAB)]) as kernel:
            assert await run_cell(kernel, "print(6*7)") == "42\n"
            # State persists between cells: it really is one live kernel.
            assert await run_cell(kernel, "x = 5") == ""
            assert await run_cell(kernel, "print(x * 2)") == "10\n"

        deleted = await fetch(ws, "delete", "DELETE", f"/api/sessions/{session['id']}")
        assert deleted.status == 204
        remaining = await fetch(ws, "list", "GET", "/api/sessions")
        assert session["id"] not in {s["id"] for s in json.loads(remaining.body)}


async def test_without_credentials_the_backend_refuses(jproxy: str) -> None:
    """The proxy adds no access of its own: no token, no cookies, no API."""
    async with connect(jproxy, headers=[("Origin", COLAB)]) as ws:
        response = await fetch(ws, "1", "GET", "/api/sessions")
    assert response.status == 403


async def test_kernel_channels_refused_without_credentials(jproxy: str) -> None:
    async with connect(
        jproxy,
        "/http_over_websocket/proxied_ws/api/kernels/00000000-0000-0000-0000-000000000000/channels",
        headers=[("Origin", COLAB)],
    ) as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code in (4403, 4404)


async def http_get(url: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET with h11 (no client library between us and the proxy)."""
    response = await http_request(url, "GET", target)
    return response.status, response.headers, response.body


async def test_reverse_proxy_serves_the_rest_api_and_ui(jproxy: str, jupyter: Jupyter) -> None:
    status, _, body = await http_get(jproxy, f"/api/status?token={jupyter.token}")
    assert status == 200
    assert "kernels" in json.loads(body)
    status, _, _ = await http_get(jproxy, "/api/sessions")
    assert status == 403
    # The token URL the user pastes works on the proxy's port: it logs in and redirects.
    status, headers, _ = await http_get(jproxy, f"/?token={jupyter.token}")
    assert status in (200, 302)
    if status == 302:
        assert headers["location"].startswith("/")
