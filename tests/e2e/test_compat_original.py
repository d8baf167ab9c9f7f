"""trio_httpws.client against the ORIGINAL jupyter_http_over_ws 0.0.8 in a Notebook 6 server.

Proves the client speaks the protocol as the original does. Runs in ``nox -s compat`` (Python
3.11, the extension, ``notebook<7``, ``tornado<6.5``); everywhere else it is skipped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio_websocket

import trio_httpws
from trio_httpws._protocol import COLAB_ORIGIN
from trio_httpws.client import (
    ConnectionRefused,
    Response,
    diagnose,
    open_client,
    open_proxied_websocket,
    run_code,
)
from trio_httpws.doctor import Mark, doctor, render_json, render_text, verdict_line

from ..support._original_server import AVAILABLE, SKIP_REASON, OriginalServer, original_server
from ..support.proxies import running_proxy

pytestmark = [pytest.mark.original, pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)]

TIMEOUT = 90


@pytest.fixture(scope="module")
def server() -> Iterator[OriginalServer]:
    with original_server() as running:
        yield running


async def json_of(resp: Response) -> Any:
    return json.loads(await resp.read())


async def test_status_needs_the_auth_url_flow(server: OriginalServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(server.url, min_version="0.0.7") as client:
            resp = await client.request("GET", "/api/status")
            assert resp.status == 403  # no credentials: Jupyter refuses
            await resp.aclose()
        async with open_client(server.url, auth_url=server.auth_url, min_version="0.0.7") as client:
            resp = await client.request("GET", "/api/status")
            assert (resp.status, resp.status_text) == (200, "OK")
            assert not resp.is_proxy_error
            assert resp.headers["Content-Type"] == "application/json"
            status = await json_of(resp)
    assert {"started", "last_activity", "kernels", "connections"} <= status.keys()


async def _execute(ws: trio_websocket.WebSocketConnection, session: str, code: str) -> str:
    """Run ``code`` on the default channel protocol; return the stdout it printed."""
    result = await run_code(ws, code, session=session)
    assert result.ok, f"kernel error: {result}"
    return result.stdout


async def test_session_kernel_code_and_delete(server: OriginalServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(server.url, auth_url=server.auth_url) as client:
            body = json.dumps(
                {
                    "path": "compat.ipynb",
                    "type": "notebook",
                    "name": "",
                    "kernel": {"name": "python3"},
                }
            )
            # POST needs the _xsrf cookie the auth URL set: the server adds it to the query.
            resp = await client.request("POST", "/api/sessions", body=body)
            assert resp.status == 201, await resp.read()
            session = await json_of(resp)
            kernel_id = session["kernel"]["id"]

            channels = f"/api/kernels/{kernel_id}/channels?session_id={session['id']}"
            async with open_proxied_websocket(server.url, channels, auth_url=server.auth_url) as ws:
                assert await _execute(ws, session["id"], "print(6*7)") == "42\n"

            resp = await client.request("DELETE", f"/api/sessions/{session['id']}")
            assert resp.status == 204
            assert await resp.read() == b""
            resp = await client.request("GET", "/api/sessions")
            assert resp.status == 200
            assert [s["id"] for s in await json_of(resp)] == []


async def test_streamed_body_cancel_and_concurrent_requests(server: OriginalServer) -> None:
    content = "".join(f"line {i:07d}\n" for i in range(100_000))  # 1.3 MB: many frames
    with trio.fail_after(TIMEOUT):
        async with open_client(server.url, auth_url=server.auth_url, buffer_frames=4) as client:
            body = json.dumps({"type": "file", "format": "text", "content": content})
            resp = await client.request("PUT", "/api/contents/big.txt", body=body)
            assert resp.status in (200, 201), await resp.read()
            await resp.aclose()

            # A whole body in many frames (the original sends one per 64 KiB tornado chunk).
            resp = await client.request("GET", "/files/big.txt")
            assert resp.status == 200
            chunks = [chunk async for chunk in resp.body()]
            assert len(chunks) > 1
            assert b"".join(chunks).decode() == content

            # Cancel mid-body: the original answers our cancel with a 400 error frame, which
            # the client must ignore, and later frames of that request are dropped.
            resp = await client.request("GET", "/files/big.txt")
            with trio.CancelScope() as scope:
                async for _chunk in resp.body():
                    scope.cancel()
            assert scope.cancelled_caught
            assert client.in_flight == 0

            # Several requests in flight at once on the one socket.
            results: dict[int, Any] = {}

            async def fetch(i: int) -> None:
                async with await client.request("GET", "/api/contents/big.txt") as r:
                    results[i] = (r.status, len((await json_of(r))["content"]))

            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(fetch, i)
            assert results == {i: (200, len(content)) for i in range(4)}

            resp = await client.request("DELETE", "/api/contents/big.txt")
            assert resp.status == 204


async def test_proxy_error_frame(server: OriginalServer) -> None:
    # An auth URL on another origin: the original answers every request with a 500 error frame.
    wrong = server.url.replace("127.0.0.1", "localhost") + f"/?token={server.token}"
    with trio.fail_after(TIMEOUT):
        async with open_client(server.url, auth_url=wrong) as client:
            resp = await client.request("GET", "/api/status")
            assert resp.is_proxy_error
            assert resp.status == 500
            assert resp.status_text.startswith("Uncaught server-side exception")
            assert resp.headers == {}
            assert await resp.read() == b""


async def test_min_version_refusal(server: OriginalServer) -> None:
    with trio.fail_after(TIMEOUT):
        start = trio.current_time()
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(server.url, min_version="0.0.8") as client:
                await client.request("GET", "/api/status")
        # The close code 400 is invalid WebSocket: wsproto reports 1002. We still exit at once
        # instead of waiting out tornado's 5 s close timeout.
        assert trio.current_time() - start < 4
    assert info.value.code == 1002
    assert "0.0.8" in str(info.value)


async def test_diagnose(server: OriginalServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(server.url, auth_url=server.auth_url) as client:
            answer = await client.diagnose()
        outdated = await diagnose(server.url, min_version="0.1")
        with_cookie = await diagnose(server.url, extra_headers={"Cookie": "_xsrf=abc"})
    assert answer["extension_version"] == "0.0.7"
    assert answer["is_outdated_extension"] is False
    assert answer["has_authentication_cookie"] is False
    assert outdated["is_outdated_extension"] is True
    assert with_cookie["has_authentication_cookie"] is True


async def test_proxied_websocket_to_unknown_kernel_closes(server: OriginalServer) -> None:
    with trio.fail_after(TIMEOUT):
        start = trio.current_time()
        async with open_proxied_websocket(
            server.url, f"/api/kernels/{uuid.uuid4()}/channels", auth_url=server.auth_url
        ) as ws:
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
        assert trio.current_time() - start < 4
    # The original closes with the backend's HTTP status (404), which wsproto reports as 1002.
    assert info.value.reason is not None
    assert info.value.reason.code == 1002


async def _final_response(
    url: str, auth_url: str, method: str, path: str, body: str | None
) -> tuple[int, str, str, Any]:
    async with open_client(url, auth_url=auth_url) as client:
        resp = await client.request(method, path, body=body)
        content = await resp.read()
    kind = resp.headers.get("Content-Type", "")
    # JSON is compared whole; a page only by its title (it embeds per-login values).
    if kind.startswith("application/json"):
        return resp.status, resp.status_text, kind, json.loads(content)
    return resp.status, resp.status_text, kind, content.split(b"</title>")[0].split(b">")[-1]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        # Notebook 6 answers a path with a trailing slash that no handler takes with a 302 to the
        # path without it; "/" is a 302 to /tree.
        pytest.param("GET", "/api/kernelspecs/", None, id="trailing-slash"),
        pytest.param("GET", "/api/sessions/?x=1", None, id="trailing-slash-with-query"),
        # tornado's client turns the POST into a GET on a 302: no session is created.
        pytest.param("POST", "/api/sessions/", "{}", id="post-becomes-get"),
        pytest.param("GET", "/", None, id="root-to-tree"),
    ],
)
async def test_a_redirecting_path_gives_the_same_final_response(
    server: OriginalServer, method: str, path: str, body: str | None, door: str
) -> None:
    with trio.fail_after(TIMEOUT):
        theirs = await _final_response(server.url, server.auth_url, method, path, body)
        config = trio_httpws.Config(backend=server.url, allow_origins=("*",))
        async with running_proxy(config, door) as proxy:
            ours = await _final_response(
                proxy, f"{proxy}/?token={server.token}", method, path, body
            )
    assert theirs[0] == 200, theirs
    assert ours == theirs


async def test_doctor_on_the_original(server: OriginalServer) -> None:
    """``trio-httpws doctor`` against Notebook 6 with the original extension (allow_origin=*)."""
    with trio.fail_after(TIMEOUT):
        report = await doctor(server.auth_url, COLAB_ORIGIN)
    print(render_text(report))
    assert report.runtime.startswith("Notebook 6.")
    assert report.runtime.endswith(" with jupyter_http_over_ws")
    assert {s.name: s.mark for s in report.steps if s.group in ("reach", "tunnel", "kernel")} == (
        dict.fromkeys(
            (
                "reach.port",
                "reach.host",
                "reach.token",
                "tunnel.diagnose",
                "tunnel.get",
                "tunnel.kernel_ws",
                "kernel.start",
                "kernel.delete",
            ),
            Mark.OK,
        )
    )
    assert report.step("tunnel.kernel_ws").saw.endswith("print(6*7) printed 42")
    # allow_origin=* answers with a literal *, which no browser accepts with credentials.
    preflight = report.step("direct.preflight")
    assert preflight.mark is Mark.FAIL
    assert "Access-Control-Allow-Origin: *" in preflight.saw
    assert preflight.fix.startswith(
        f"Allow the exact origin (--NotebookApp.allow_origin={COLAB_ORIGIN}, not *) with "
        "--NotebookApp.allow_credentials=True"
    )
    assert report.ok
    assert verdict_line(report).endswith("old tunnel ok")
    assert server.token not in render_text(report) + render_json(report)

    # Without a kernel: Notebook 6 has no kernel-free socket, so the socket steps are skipped.
    with trio.fail_after(TIMEOUT):
        report = await doctor(server.auth_url, COLAB_ORIGIN, kernel=False)
    assert report.step("tunnel.kernel_ws").mark is Mark.SKIP
    assert (
        "closed with 1002, this runtime has no such socket" in report.step("tunnel.kernel_ws").saw
    )
    assert report.step("direct.kernel_ws").mark is Mark.SKIP
    assert [f.works for f in report.flows] == [False, True]
