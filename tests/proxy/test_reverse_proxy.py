"""Every path that is not a protocol endpoint goes to the backend as a transparent reverse proxy."""

from __future__ import annotations

import hashlib
import json
import os

import h11
import pytest
import trio
import trio_websocket

import trio_httpws

from ..support._http import asgi_http_scope, http, http_request
from ..support.fake_backend import FakeBackend, pattern
from ..support.proxies import access_lines, running_proxy, wait_until
from ..support.ws import connect


async def test_streamed_download(proxy: str) -> None:
    size = 5_000_000
    status, headers, body = await http(proxy, "GET", f"/bytes?n={size}")
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(body).digest() == hashlib.sha256(pattern(size)).digest()


async def test_streamed_upload_is_byte_exact(proxy: str) -> None:
    pieces = [bytes(range(256)) * 1000, b"\x00\xff" * 5000, b"end"]
    status, headers, body = await http(proxy, "POST", "/echo", body_pieces=pieces)
    assert status == 200
    assert body == b"".join(pieces)
    assert headers["x-body-length"] == str(len(body))


async def test_request_line_and_headers_pass_through(proxy: str) -> None:
    status, _, body = await http(
        proxy,
        "GET",
        "/headers?a=1&b=%20x",
        headers=[("X-Custom", "yes"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "drop me")],
    )
    assert status == 200
    seen = json.loads(body)
    received = {k.lower(): v for k, v in seen["headers"]}
    assert seen["uri"] == "/headers?a=1&b=%20x"
    assert received["x-custom"] == "yes"
    # Hop-by-hop headers, and those the client's Connection header names, stay with this hop.
    assert "x-hop" not in received
    # The client's Host is kept (Jupyter names cookies and redirects after it).
    assert received["host"] == proxy.removeprefix("http://")


async def test_head_request(proxy: str) -> None:
    # A HEAD response announces a body it does not carry: the proxy must not wait for it.
    status, headers, body = await http(proxy, "HEAD", "/api/largeresponse")
    assert (status, headers["content-length"], body) == (200, "100000", b"")


async def test_backend_down_is_a_502(fake_backend: FakeBackend, door: str) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    async with running_proxy(trio_httpws.Config(backend=f"http://127.0.0.1:{port}"), door) as url:
        status, _, body = await http(url, "GET", "/api/status")
    assert status == 502
    assert f"127.0.0.1:{port}".encode() in body


async def test_plain_websocket_is_relayed(proxy: str) -> None:
    async with connect(proxy, "/plain-echo-ws") as ws:
        await ws.send_message("text")
        assert await ws.get_message() == "text"
        await ws.send_message(b"\x00\x01 bytes")
        assert await ws.get_message() == b"\x00\x01 bytes"


async def test_plain_websocket_refused_by_backend_is_refused_with_its_status(proxy: str) -> None:
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with connect(proxy, "/no-such-websocket"):
            pass
    assert info.value.status_code == 404


async def test_client_leaving_before_the_response_cancels_the_backend_request(
    proxy: str, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """Waiting for the backend's answer, a client that leaves frees the backend at once."""
    caplog.set_level("INFO", logger="trio_httpws.access")
    tag = "left-" + os.urandom(4).hex()
    host, port = proxy.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET", target=f"/slow?delay=30&tag={tag}", headers=[("Host", host)]
        )
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        await wait_until(lambda: fake_backend.slow_active(tag) == 1)
    # The backend sees its connection closed, well before its 30 s answer.
    await wait_until(lambda: fake_backend.slow_active(tag) == 0, within=5)
    [line] = await access_lines(caplog, 1)
    assert line.fields["status"] == 499  # type: ignore[attr-defined]


async def test_a_completed_response_is_not_logged_as_the_client_leaving(
    proxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    # hypercorn puts an http.disconnect in the request's channel as it closes a completed
    # response's stream; the watcher of the client once read it as the client leaving.
    caplog.set_level("INFO", logger="trio_httpws")
    for _ in range(5):
        status, _, _ = await http(proxy, "GET", "/api/sessions")
        assert status == 200
    lines = await access_lines(caplog, 5)
    assert [line.fields["status"] for line in lines] == [200] * 5  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if "client left" in r.getMessage()]


async def _asgi_messages(
    fake_backend: FakeBackend, method: str, path: str
) -> list[dict[str, object]]:
    """The ASGI messages the app sends for one request without a body (no server between)."""
    app = trio_httpws.create_app(trio_httpws.Config(backend=fake_backend.url))
    scope = asgi_http_scope(method, path)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    with trio.fail_after(10):
        await app(scope, receive, send)
    await app.proxy.aclose()
    return sent


async def test_a_content_length_body_ends_with_its_last_chunk(fake_backend: FakeBackend) -> None:
    """No empty closing body event after a body whose Content-Length is complete."""
    sent = await _asgi_messages(fake_backend, "GET", "/api/sessions")
    headers = [(n.lower(), v) for n, v in sent[0]["headers"]]  # type: ignore[attr-defined]
    assert (b"content-length", b"2") in headers
    assert [(m["type"], m["body"], m["more_body"]) for m in sent[1:]] == [
        ("http.response.body", b"ok", False)
    ]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/streamedresponse", b"firstlast"),  # chunked: no length known
        ("HEAD", "/api/largeresponse", b""),  # no body
    ],
)
async def test_bodies_without_a_content_length_end_with_an_empty_event(
    fake_backend: FakeBackend, method: str, path: str, body: bytes
) -> None:
    sent = await _asgi_messages(fake_backend, method, path)
    assert b"".join(m["body"] for m in sent[1:]) == body  # type: ignore[misc]
    assert sent[-1]["body"] == b""
    assert [m["more_body"] for m in sent[1:]] == [True] * (len(sent) - 2) + [False]


async def test_a_chunked_body_that_also_names_a_content_length_arrives_whole(door: str) -> None:
    """A backend sending both framings: h11 reads the chunks (Transfer-Encoding wins), and the
    Content-Length beside it is neither believed nor passed on. It used to be both, and the
    client got no complete response (an ASGI error in hypercorn)."""

    async def backend(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive_some(65536)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\naaaaa\r\n5\r\nbbbbb\r\n5\r\nccccc\r\n0\r\n\r\n"
            )
            await stream.receive_some(65536)  # until the proxy closes or reuses it

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, backend, 0)
        port = listeners[0].socket.getsockname()[1]
        config = trio_httpws.Config(backend=f"http://127.0.0.1:{port}")
        async with running_proxy(config, door) as url:
            response = await http_request(url, "GET", "/both-framings")
        nursery.cancel_scope.cancel()
    assert response.status == 200
    assert response.body == b"aaaaabbbbbccccc"
    assert response.get("content-length") != "10"
