"""The scenarios of the original extension's own test suite, against trio_httpws.

Each test runs a real hypercorn serving trio_httpws in front of the tornado fake backend, and
talks to it with a real WebSocket client. Where we differ from the original on purpose (close
codes 4000 + status), the test says so.
"""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import urlencode

import pytest
import trio_websocket

from ..support.fake_backend import XSRF_ECHO_HEADER, XSRF_VALUE, pattern
from ..support.proxies import ALLOWED_ORIGIN
from ..support.ws import connect, fetch, read_frame, request_json


def auth_query(base: str, path: str = "/fake-auth") -> str:
    return "?" + urlencode({"jupyter_http_over_ws_auth_url": base + path})


async def test_proxied_get(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1234", "GET", "/api/sessions")
    assert len(response.frames) == 1
    assert response.status == 200
    assert response.body == b"ok"
    assert response.first["done"] is True
    assert response.first["statusText"] == "OK"


async def test_proxied_get_empty_body_field(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1234", "GET", "/api/sessions", body="")
    assert (response.status, response.body) == (200, b"ok")


async def test_proxied_post_no_body(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1234", "POST", "/api/sessions", body=None)
    assert (response.status, response.body) == (200, b"")
    # An empty body: one frame, and no "data" key at all.
    assert "data" not in response.first


async def test_proxied_post_base64_body(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(
            ws, "1234", "POST", "/api/sessions", body_base64=base64.b64encode(b"the_data").decode()
        )
    assert (response.status, response.body) == (200, b"the_data")


async def test_proxied_nonstandard_method(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1234", "custommethod", "/api/sessions")
    assert (response.status, response.body) == (200, b"ok")


async def test_streamed_response(proxy: str) -> None:
    # The backend flushes "first" and "last" back to back, so they usually reach the proxy in
    # one read: the frames follow the backend's HTTP chunks, not the reads.
    async with connect(proxy) as ws:
        response = await fetch(ws, "1234", "GET", "/api/streamedresponse")
    first, second = response.frames
    assert first["status"] == 200
    assert base64.b64decode(first["data"]) == b"first"
    assert first["done"] is False
    assert set(second) == {"message_id", "data", "done"}
    assert base64.b64decode(second["data"]) == b"last"
    assert second["done"] is True


async def test_request_for_invalid_url(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1234", "GET", "/invalid/path")
    assert response.status == 404
    assert response.frames[-1]["done"] is True


async def test_proxied_endpoint_has_error(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1234", "GET", "/api/sessions?throw_500=1")
    assert response.status == 500
    assert response.first["statusText"] == "Server error"


@pytest.mark.parametrize(
    "path",
    [
        "/http_over_websocket",
        "/http_over_websocket/diagnose",
        "/http_over_websocket/proxied_ws/echoing-ws",
    ],
)
async def test_unallowed_cross_domain_origin(proxy: str, path: str) -> None:
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with connect(proxy, path, headers=[("Origin", "http://www.example.com")]):
            pass
    assert info.value.status_code == 403


async def test_allowed_cross_domain_origin(proxy: str) -> None:
    async with connect(proxy, headers=[("Origin", ALLOWED_ORIGIN)]) as ws:
        response = await fetch(ws, "1", "GET", "/api/sessions")
    assert response.status == 200


async def test_propagates_body_text_and_xsrf(proxy: str) -> None:
    async with connect(proxy, headers=[("Cookie", f"_xsrf={XSRF_VALUE}")]) as ws:
        response = await fetch(ws, "1234", "POST", "/api/sessions?keep=me", body="somedata")
    assert response.body == b"somedata"
    assert response.headers[XSRF_ECHO_HEADER] == XSRF_VALUE
    # Ours keeps the client's query and adds _xsrf (the original replaced the query).
    assert response.headers["X-Query"] == f"keep=me&_xsrf={XSRF_VALUE}"


async def test_auth_url_forwards_cookies_and_propagates_xsrf(proxy: str) -> None:
    async with connect(proxy, "/http_over_websocket" + auth_query(proxy)) as ws:
        response = await fetch(ws, "1234", "POST", "/api/sessions", body="somedata")
    assert response.body == b"somedata"
    assert response.headers[XSRF_ECHO_HEADER] == XSRF_VALUE


async def test_auth_url_forwards_cookies(proxy: str) -> None:
    async with connect(proxy, "/http_over_websocket" + auth_query(proxy)) as ws:
        response = await fetch(ws, "1234", "GET", "/requires-cookies-from-fake-auth")
    assert response.body == b'X-Test-Cookie: "1" X-Other-Test-Cookie: "2"'


async def test_auth_url_fetched_once_per_socket(proxy: str, fake_backend) -> None:  # type: ignore[no-untyped-def]
    path = "/fake-auth?once=" + proxy.rsplit(":", 1)[1]
    async with connect(proxy, "/http_over_websocket" + auth_query(proxy, path)) as ws:
        for i in range(5):
            response = await fetch(ws, i, "GET", "/requires-cookies-from-fake-auth")
            assert response.status == 200
    assert fake_backend.auth_hits.count(path) == 1


async def test_max_chunk_size_64k(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1234", "GET", "/api/largeresponse")
    assert response.body == b"a" * 100000
    # One 100 000-byte chunk: a full 64 KiB frame, then the rest.
    assert [len(base64.b64decode(f["data"])) for f in response.frames] == [65536, 34464]


async def test_bad_json(proxy: str) -> None:
    async with connect(proxy) as ws:
        await ws.send_message("invalid json")
        frame = await read_frame(ws)
    assert frame == {"done": True, "status": 400, "statusText": "JSON input is required."}


async def test_missing_param(proxy: str) -> None:
    async with connect(proxy) as ws:
        await ws.send_message('{"path": "/api/sessions", "method": "GET"}')
        frame = await read_frame(ws)
    assert frame["status"] == 400
    assert "body must contain" in frame["statusText"]
    assert frame["done"] is True


async def test_invalid_protocol_version_requested(proxy: str) -> None:
    async with connect(proxy, "/http_over_websocket?min_version=abc") as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 4400  # the original: 400, which RFC 6455 leaves unused
    assert info.value.reason.reason == 'Invalid "min_version" provided: abc'


async def test_newer_protocol_version_requested(
    proxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(proxy, "/http_over_websocket?min_version=9.0.0") as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 4400
    assert "Please upgrade" in (info.value.reason.reason or "")
    assert any(
        "Rejecting connection" in r.getMessage() and "Please upgrade" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("version", ["0.0.1a0", "0.0.1a3", "0.0.7", "0.0.7b9"])
async def test_acceptable_version_requested(proxy: str, version: str) -> None:
    async with connect(proxy, f"/http_over_websocket?min_version={version}") as ws:
        await ws.send_message("abc")
        frame = await read_frame(ws)
    assert frame["status"] == 400


async def test_auth_url_provided_fails(proxy: str) -> None:
    query = auth_query(proxy, "/fake-auth?always_fail=1")
    async with connect(proxy, "/http_over_websocket" + query) as ws:
        response = await fetch(ws, "1234", "GET", "/requires-cookies-from-fake-auth")
    assert response.frames == [
        {
            "done": True,
            "status": 500,
            "statusText": "Uncaught server-side exception. Check logs for additional details.",
            "message_id": "1234",
        }
    ]


@pytest.mark.parametrize(
    "auth_url",
    [
        "https://127.0.0.1:{port}/fake-auth",  # another scheme
        "http://www.example.com:{port}/fake-auth",  # another host
        "http://127.0.0.1:1/fake-auth",  # another port
    ],
)
async def test_auth_url_cross_domain_fails(
    proxy: str,
    auth_url: str,
    caplog: pytest.LogCaptureFixture,
    fake_backend,  # type: ignore[no-untyped-def]
) -> None:
    port = proxy.rsplit(":", 1)[1]
    hits_before = len(fake_backend.auth_hits)
    query = "?" + urlencode({"jupyter_http_over_ws_auth_url": auth_url.format(port=port)})
    async with connect(proxy, "/http_over_websocket" + query) as ws:
        response = await fetch(ws, "1234", "GET", "/requires-cookies-from-fake-auth")
    assert response.status == 500
    assert response.first["statusText"].startswith("Uncaught server-side exception")
    assert any(
        r.levelno == logging.WARNING and "auth URL refused" in r.getMessage()
        for r in caplog.records
    )
    assert len(fake_backend.auth_hits) == hits_before


# -- /http_over_websocket/diagnose ---------------------------------------------------------


async def test_diagnose_no_problems(proxy: str) -> None:
    async with connect(
        proxy,
        "/http_over_websocket/diagnose?min_version=0.0.7",
        headers=[("Origin", ALLOWED_ORIGIN), ("Cookie", f"_xsrf={XSRF_VALUE}")],
    ) as ws:
        await ws.send_message("1")
        frame = await read_frame(ws)
    assert frame == {
        "message_id": "1",
        "extension_version": "0.0.7",
        "has_authentication_cookie": True,
        "is_outdated_extension": False,
    }


async def test_diagnose_missing_xsrf_cookie(proxy: str) -> None:
    async with connect(
        proxy, "/http_over_websocket/diagnose", headers=[("Origin", ALLOWED_ORIGIN)]
    ) as ws:
        await ws.send_message("1")
        frame = await read_frame(ws)
    assert frame["has_authentication_cookie"] is False
    assert frame["is_outdated_extension"] is False


async def test_diagnose_newer_version_requested(proxy: str) -> None:
    async with connect(
        proxy,
        "/http_over_websocket/diagnose?min_version=0.0.8",
        headers=[("Cookie", f"_xsrf={XSRF_VALUE}")],
    ) as ws:
        await ws.send_message("1")
        frame = await read_frame(ws)
    assert frame["has_authentication_cookie"] is True
    assert frame["is_outdated_extension"] is True


# -- /http_over_websocket/proxied_ws/... ---------------------------------------------------


async def test_proxied_ws_auth_url_forwards_cookies(proxy: str) -> None:
    path = "/http_over_websocket/proxied_ws/requires-cookies-from-fake-auth-ws" + auth_query(proxy)
    async with connect(proxy, path, headers=[("Origin", ALLOWED_ORIGIN)]) as ws:
        await ws.send_message("")
        assert await ws.get_message() == 'X-Test-Cookie: "1" X-Other-Test-Cookie: "2"'


async def test_proxied_ws_auth_url_fails(proxy: str) -> None:
    path = "/http_over_websocket/proxied_ws/requires-cookies-from-fake-auth-ws" + auth_query(
        proxy, "/fake-auth?always_fail=1"
    )
    async with connect(proxy, path, headers=[("Origin", ALLOWED_ORIGIN)]) as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 4500
    assert info.value.reason.reason == "Uncaught error when proxying request"


async def test_proxied_ws_auth_url_cross_domain_fails(proxy: str) -> None:
    query = "?" + urlencode({"jupyter_http_over_ws_auth_url": "http://www.example.com/fake-auth"})
    path = "/http_over_websocket/proxied_ws/requires-cookies-from-fake-auth-ws" + query
    async with connect(proxy, path, headers=[("Origin", ALLOWED_ORIGIN)]) as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 4500


async def test_proxied_connection_io(proxy: str) -> None:
    async with connect(
        proxy,
        "/http_over_websocket/proxied_ws/echoing-ws?someparam=1",
        headers=[("Origin", ALLOWED_ORIGIN), ("X-Echo-Header", "example")],
    ) as ws:
        assert await ws.get_message() == (
            "<ECHO INIT> GET /echoing-ws?someparam=1 X-Echo-Header: example"
        )
        await ws.send_message("1")
        assert await ws.get_message() == "<ECHO RESPONSE> 1"
        await ws.send_message("something else!")
        assert await ws.get_message() == "<ECHO RESPONSE> something else!"
        await ws.send_message(b"\x00\xff binary")
        assert await ws.get_message() == b"<ECHO BYTES> \x00\xff binary"


async def test_proxied_connection_closed_passes_code_and_reason(proxy: str) -> None:
    async with connect(proxy, "/http_over_websocket/proxied_ws/close-on-first-message-ws") as ws:
        await ws.send_message("")
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert (info.value.reason.code, info.value.reason.reason) == (4321, "closing as asked")


async def test_proxied_ws_unknown_path(proxy: str) -> None:
    async with connect(proxy, "/http_over_websocket/proxied_ws/unknown-path") as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 4404


async def test_proxied_ws_does_not_pass_origin_or_auth_param(proxy: str) -> None:
    path = "/http_over_websocket/proxied_ws/headers-ws" + auth_query(proxy)
    async with connect(proxy, path, headers=[("Origin", ALLOWED_ORIGIN)]) as ws:
        headers = dict(json.loads(await ws.get_message()))
    assert "Origin" not in headers
    assert "X-Test-Cookie=1" in headers["Cookie"]


async def test_proxied_ws_subprotocol_negotiated_with_backend(proxy: str) -> None:
    async with connect(
        proxy, "/http_over_websocket/proxied_ws/subprotocol-ws", subprotocols=["v1.test", "x"]
    ) as ws:
        assert ws.subprotocol == "v1.test"
        assert await ws.get_message() == "subprotocol=v1.test"


async def test_interleaved_requests_keep_their_ids(proxy: str) -> None:
    async with connect(proxy) as ws:
        await ws.send_message(
            request_json("slow", "GET", "/bytes?n=600000&chunk=100000&delay=0.02")
        )
        for i in range(5):
            await ws.send_message(request_json(i, "GET", "/api/sessions"))
        frames: dict[object, list[dict[str, object]]] = {}
        done = 0
        order = []
        while done < 6:
            frame = await read_frame(ws)
            frames.setdefault(frame["message_id"], []).append(frame)
            order.append(frame["message_id"])
            done += bool(frame["done"])
    # The small requests finished while the slow body was still streaming.
    assert order.index(4) < len(order) - 1
    assert set(frames) == {"slow", 0, 1, 2, 3, 4}
    body = b"".join(base64.b64decode(str(f["data"])) for f in frames["slow"] if "data" in f)
    assert body == pattern(600000)
