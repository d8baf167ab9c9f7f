"""Hostile and broken client input against a real proxy (hypercorn) and the fake backend.

Every refusal is checked three ways: the exact error frame (or HTTP status), a warning in the
log, and that the proxy keeps serving: the same socket answers a normal request afterwards,
and new sockets are still accepted. An autouse fixture fails any test during which the ASGI app
crashed (hypercorn's "Error in ASGI Framework").
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import h11
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto.events as wse
from wsproto.connection import ConnectionState

import trio_httpws
from trio_httpws._session import HttpOverWsSession
from trio_httpws._socket import Upgrade

from ..support.fake_backend import XSRF_VALUE, FakeBackend, pattern
from ..support.fake_socket import FakeSocket
from ..support.jupyter import Jupyter
from ..support.processes import hypercorn_example
from ..support.proxies import running_handler_proxy, running_proxy, wait_until
from ..support.ws import (
    connect,
    fetch,
    port_of,
    raw_websocket,
    read_frame,
    read_response,
    request_json,
)

#: Bound on every test's waits: generous, as a hang is the failure we guard against.
TIMEOUT = 10
COLAB = "https://colab.research.google.com"
BAD_JSON = {"done": True, "status": 400, "statusText": "JSON input is required."}
BAD_ID = {
    "done": True,
    "status": 400,
    "statusText": "Invalid request: message_id must be a string or an integer.",
}
UNCAUGHT = "Uncaught server-side exception. Check logs for additional details."


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_app_crash(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    crashes = [
        r.getMessage()
        for r in caplog.get_records("call")
        if r.name.startswith("hypercorn") and r.levelno >= logging.ERROR
    ]
    assert not crashes, "the ASGI app crashed"


@pytest.fixture
def backend_log(fake_backend: FakeBackend) -> Iterator[list[tuple[str, str]]]:
    """(method, uri) of every request the fake backend received while the test ran."""
    seen: list[tuple[str, str]] = []
    started = time.time()

    def log_function(handler: Any) -> None:
        # Called when a request finishes: a slow request of an earlier test (the backend is
        # shared) may finish now, so keep only those that arrived during this test.
        if handler.request._start_time >= started:
            seen.append((handler.request.method, handler.request.uri))

    fake_backend.app.settings["log_function"] = log_function
    yield seen
    fake_backend.app.settings.pop("log_function", None)


async def backend_saw_only(log: list[tuple[str, str]], request: tuple[str, str]) -> None:
    """The backend got ``request`` (the follow-up that shows the socket still serves), and
    nothing else. The backend logs a request just after answering it: wait for the line."""
    await wait_until(lambda: request in log)
    assert set(log) == {request}


def warned(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(r.levelno >= logging.WARNING and text in r.getMessage() for r in caplog.records)


async def ask(ws: trio_websocket.WebSocketConnection, message: str | bytes) -> dict[str, Any]:
    """Send one raw message and read the one frame that answers it."""
    await ws.send_message(message)
    return await read_frame(ws)


async def assert_still_serves(ws: trio_websocket.WebSocketConnection) -> None:
    response = await fetch(ws, "after", "GET", "/api/sessions")
    assert (response.status, response.body) == (200, b"ok")


async def assert_accepts_new_sockets(url: str) -> None:
    async with connect(url) as ws:
        await assert_still_serves(ws)


async def assert_refused_then_serves(
    url: str,
    caplog: pytest.LogCaptureFixture,
    message: str | bytes,
    expected: dict[str, Any],
    log_text: str | None = None,
) -> None:
    """The whole contract for a refused message, on one socket and then a new one."""
    with trio.fail_after(TIMEOUT):
        async with connect(url) as ws:
            assert await ask(ws, message) == expected
            await assert_still_serves(ws)
        await assert_accepts_new_sockets(url)
    assert warned(caplog, log_text or expected["statusText"])


async def http_get(url: str, host: str, target: str) -> tuple[int, bytes]:
    """A plain HTTP/1.1 GET with the given Host header."""
    conn = h11.Connection(h11.CLIENT)
    async with await trio.open_tcp_stream("127.0.0.1", port_of(url)) as stream:
        request = h11.Request(
            method="GET", target=target, headers=[("Host", host), ("Connection", "close")]
        )
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, body = 0, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            else:
                raise AssertionError(event)


def auth_path(url: str, auth_url: str) -> str:
    return "/http_over_websocket?" + urlencode({"jupyter_http_over_ws_auth_url": auth_url})


# -- messages that are not requests ----------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("invalid json", id="text"),
        pytest.param("", id="empty"),
        pytest.param('{"message_id": "1", "method": "GET"', id="truncated"),
        pytest.param("[" * 100_000, id="deeply-nested"),
        pytest.param('{"message_id": ' + "9" * 5000 + "}", id="int-beyond-python-limit"),
    ],
)
async def test_non_json(proxy: str, caplog: pytest.LogCaptureFixture, message: str) -> None:
    await assert_refused_then_serves(proxy, caplog, message, BAD_JSON)


@pytest.mark.parametrize("message", ["[]", '"x"', "1", "null", "true", '[{"message_id": "1"}]'])
async def test_json_not_an_object(
    proxy: str, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    await assert_refused_then_serves(proxy, caplog, message, BAD_JSON)


async def test_empty_object(proxy: str, caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "Invalid request. The body must contain the following keys: message_id, method, path."
        " Missing: message_id, method, path"
    )
    await assert_refused_then_serves(
        proxy, caplog, "{}", {"done": True, "status": 400, "statusText": text}
    )


@pytest.mark.parametrize(
    "message_id",
    [[1], {"id": 1}, True, None, 1.5],
    ids=["list", "object", "bool", "null", "float"],
)
async def test_wrong_type_message_id(
    proxy: str, caplog: pytest.LogCaptureFixture, message_id: object
) -> None:
    message = request_json(message_id, "GET", "/api/sessions")
    await assert_refused_then_serves(proxy, caplog, message, BAD_ID)


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        pytest.param({"method": 1}, "method must be an HTTP token such as GET or POST.", id="method-int"),
        pytest.param({"method": ["GET"]}, "method must be an HTTP token such as GET or POST.", id="method-list"),
        pytest.param({"path": 1}, "path must be a string.", id="path-int"),
        pytest.param({"body": 1}, "body must be a string.", id="body-int"),
        pytest.param({"body": {"a": "b"}}, "body must be a string.", id="body-object"),
        pytest.param({"body_base64": 1}, "body_base64 must be a string.", id="body_base64-int"),
        pytest.param({"headers": ["a", "b"]}, "headers must be an object of strings.", id="headers-list"),
        pytest.param({"headers": {"a": 1}}, "headers must be an object of strings.", id="headers-non-string"),
        pytest.param({"body_base64": "!!!!"}, "body_base64 is not valid base64.", id="base64-alphabet"),
        pytest.param({"body_base64": "QUJD\nRA=="}, "body_base64 is not valid base64.", id="base64-newline"),
        pytest.param({"body_base64": "QUJDRA"}, "body_base64 is not valid base64.", id="base64-padding"),
        pytest.param({"body": "\ud800"}, "body is not valid Unicode text.", id="body-lone-surrogate"),
    ],
)  # fmt: skip
async def test_wrong_field(
    proxy: str, caplog: pytest.LogCaptureFixture, fields: dict[str, Any], text: str
) -> None:
    message = json.dumps({"message_id": "m1", "method": "POST", "path": "/echo", **fields})
    expected = {"done": True, "status": 400, "statusText": f"Invalid request: {text}"}
    await assert_refused_then_serves(proxy, caplog, message, {**expected, "message_id": "m1"})


async def test_int_message_id_is_echoed_as_int(
    proxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    message = json.dumps({"message_id": 42, "method": "GET", "path": 7})
    expected = {
        "done": True,
        "status": 400,
        "statusText": "Invalid request: path must be a string.",
        "message_id": 42,
    }
    await assert_refused_then_serves(proxy, caplog, message, expected)


@pytest.mark.parametrize(
    "payload", [b'{"message_id": "1", "method": "GET", "path": "/"}', b"\xff\xfe\x00"]
)
async def test_binary_frame(proxy: str, caplog: pytest.LogCaptureFixture, payload: bytes) -> None:
    expected = {
        "done": True,
        "status": 400,
        "statusText": "Binary messages are not supported: send JSON text.",
    }
    await assert_refused_then_serves(proxy, caplog, payload, expected)


def text_frame(payload: bytes, *, masked: bool = True) -> bytes:
    """One final text frame carrying ``payload`` as it is (short payloads only)."""
    if not masked:
        return bytes([0x81, len(payload)]) + payload
    mask = b"\x01\x02\x03\x04"
    return (
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


INVALID_UTF8 = text_frame(b'{"message_id": "\xff"}')


async def close_after_frame(
    url: str, frame: bytes = INVALID_UTF8
) -> tuple[wse.CloseConnection, ConnectionState]:
    """Send a raw frame on a new socket; return how the server closed it.

    The state says whether a Close frame came (REMOTE_CLOSING) or only the end of the TCP
    stream (CLOSED: wsproto then reports 1006 itself).
    """
    async with raw_websocket(url) as raw:
        assert await raw.handshake(f"127.0.0.1:{port_of(url)}", "/http_over_websocket") == 101
        await raw.stream.send_all(frame)
        event = await raw.next_event()
        assert isinstance(event, wse.CloseConnection)
        return event, raw.ws.state


async def test_text_frame_with_invalid_utf8_closes_1007(
    proxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A text frame must be UTF-8 (RFC 6455 8.1): the WebSocket layer fails the connection before
    # the proxy sees a message, with a Close frame carrying 1007 (7.4.1). hypercorn alone drops
    # the TCP connection (1006 for the client); trio_httpws carries the fix (_hypercorn_fix).
    # Only that socket goes; the server and its other sockets stay.
    with trio.fail_after(TIMEOUT):
        async with connect(proxy) as bystander:
            event, state = await close_after_frame(proxy)
            await assert_still_serves(bystander)
        await assert_accepts_new_sockets(proxy)
    assert (event.code, state) == (1007, ConnectionState.REMOTE_CLOSING)
    assert "can't decode byte 0xff" in (event.reason or "")
    assert warned(caplog, "closing a WebSocket with 1007")


async def test_unmasked_frame_closes_1002(proxy: str, caplog: pytest.LogCaptureFixture) -> None:
    # The same fix covers wsproto's other refusals: a client frame must be masked (RFC 6455 5.1).
    with trio.fail_after(TIMEOUT):
        event, state = await close_after_frame(proxy, text_frame(b"{}", masked=False))
        await assert_accepts_new_sockets(proxy)
    assert (event.code, state) == (1002, ConnectionState.REMOTE_CLOSING)
    assert warned(caplog, "closing a WebSocket with 1002")


async def test_text_frame_with_invalid_utf8_closes_1007_under_the_hypercorn_cli(
    jupyter: Jupyter,
) -> None:
    # `hypercorn --worker-class trio trio_httpws:app` builds the app on its lifespan startup,
    # which installs the fix in that process too.
    async with hypercorn_example(jupyter.url) as (url, _process, _log):
        with trio.fail_after(TIMEOUT):
            event, state = await close_after_frame(url)
    assert (event.code, state) == (1007, ConnectionState.REMOTE_CLOSING)


async def test_text_frame_with_invalid_utf8_under_handler_is_dropped_without_close_frame(
    fake_backend: FakeBackend,
) -> None:
    # handler() on trio-websocket 0.12: its reader, like hypercorn's, takes wsproto's failure for
    # the peer's close and closes the TCP connection with no Close frame, so the client sees
    # 1006 (README, known limits). We do not patch the user's own trio-websocket server.
    config = trio_httpws.Config(backend=fake_backend.url)
    with trio.fail_after(TIMEOUT):
        async with running_handler_proxy(config) as url:
            event, state = await close_after_frame(url)
            assert (event.code, state) == (1006, ConnectionState.CLOSED)
            await assert_accepts_new_sockets(url)


async def test_lone_surrogate_message_id_is_served(proxy: str) -> None:
    # json.loads turns "\ud800" into a lone surrogate; echoed raw it would be unencodable as
    # UTF-8 (this used to crash the socket with 1011). It goes back as the same JSON escape.
    with trio.fail_after(TIMEOUT):
        async with connect(proxy) as ws:
            await ws.send_message(
                '{"message_id": "\\ud800", "method": "GET", "path": "/api/sessions"}'
            )
            response = await read_response(ws, "\ud800")
            assert (response.status, response.body) == (200, b"ok")
            await assert_still_serves(ws)


# -- request lines that could inject -------------------------------------------------------

BAD_METHOD = "Invalid request: method must be an HTTP token such as GET or POST."
BAD_PATH_CHARS = "Invalid request: path must not contain spaces or control characters."


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("GET /x HTTP/1.1", id="space"),
        pytest.param("GET\r\nX-Injected: 1\r\n", id="crlf"),
        pytest.param("GET\n", id="trailing-lf"),
        pytest.param("GET\r", id="cr"),
        pytest.param("G\x00T", id="nul"),
        pytest.param("GET\x01", id="control"),
        pytest.param("GET\x7f", id="del"),
        pytest.param("GET\t", id="tab"),
        pytest.param("", id="empty"),
        pytest.param("GÉT", id="non-ascii"),
    ],
)
async def test_method_with_bad_characters(
    proxy: str,
    caplog: pytest.LogCaptureFixture,
    backend_log: list[tuple[str, str]],
    method: str,
) -> None:
    message = request_json("m", method, "/headers")
    expected = {"done": True, "status": 400, "statusText": BAD_METHOD, "message_id": "m"}
    await assert_refused_then_serves(proxy, caplog, message, expected)
    await backend_saw_only(backend_log, ("GET", "/api/sessions"))


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/headers x", id="space"),
        pytest.param("/headers HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /x", id="crlf"),
        pytest.param("/headers\n", id="lf"),
        pytest.param("/headers\r", id="cr"),
        pytest.param("/headers\x00", id="nul"),
        pytest.param("/headers\x01", id="control"),
        pytest.param("/headers\x7f", id="del"),
        pytest.param("/headers\t", id="tab"),
    ],
)
async def test_path_with_bad_characters(
    proxy: str,
    caplog: pytest.LogCaptureFixture,
    backend_log: list[tuple[str, str]],
    path: str,
) -> None:
    message = request_json("m", "GET", path)
    expected = {"done": True, "status": 400, "statusText": BAD_PATH_CHARS, "message_id": "m"}
    await assert_refused_then_serves(proxy, caplog, message, expected)
    await backend_saw_only(backend_log, ("GET", "/api/sessions"))


async def test_lone_surrogate_in_path(proxy: str, caplog: pytest.LogCaptureFixture) -> None:
    message = '{"message_id": "m", "method": "GET", "path": "/headers\\ud800"}'
    expected = {
        "done": True,
        "status": 400,
        "statusText": "Invalid request: path is not valid Unicode text.",
        "message_id": "m",
    }
    await assert_refused_then_serves(proxy, caplog, message, expected)


@pytest.mark.parametrize(
    ("method", "path", "want_method", "want_uri"),
    [
        pytest.param(
            "GET",
            "/headers?x=%0D%0AX-Injected:%201",
            "GET",
            "/headers?x=%0D%0AX-Injected:%201",
            id="encoded-crlf",
        ),
        pytest.param(
            "GET", "/headers?q=é\u2028\x85", "GET", "/headers?q=%C3%A9%E2%80%A8%C2%85", id="unicode"
        ),
        pytest.param("GET", "/headers#X-Injected:1", "GET", "/headers", id="fragment"),
        pytest.param("post", "/headers?a=1", "POST", "/headers?a=1", id="lowercase-method"),
    ],
)
async def test_near_miss_reaches_backend_unaltered(
    proxy: str, method: str, path: str, want_method: str, want_uri: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(proxy) as ws:
            response = await fetch(ws, "m", method, path)
            assert response.status == 200
            seen = json.loads(response.body)
            assert (seen["method"], seen["uri"]) == (want_method, want_uri)
            names = [name.lower() for name, _ in seen["headers"]]
            assert "x-injected" not in names
            assert names.count("host") == 1
            await assert_still_serves(ws)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param("//evil.example/x", "path must not name a host.", id="authority"),
        pytest.param("/\\evil.example/x", "path must not name a host.", id="backslash"),
        pytest.param("http://evil.example/", "path must start with '/'.", id="absolute-url"),
        pytest.param("@evil.example", "path must start with '/'.", id="userinfo"),
        pytest.param("evil.example:80", "path must start with '/'.", id="authority-form"),
        pytest.param("*", "path must start with '/'.", id="asterisk"),
        pytest.param("", "path must start with '/'.", id="empty"),
        pytest.param("api/sessions", "path must start with '/'.", id="relative"),
    ],
)
async def test_path_naming_another_host(
    proxy: str,
    caplog: pytest.LogCaptureFixture,
    backend_log: list[tuple[str, str]],
    path: str,
    text: str,
) -> None:
    message = request_json("m", "GET", path)
    expected = {"done": True, "status": 400, "statusText": f"Invalid request: {text}"}
    await assert_refused_then_serves(proxy, caplog, message, {**expected, "message_id": "m"})
    # Refused before any connection: the backend saw only the follow-up requests.
    await backend_saw_only(backend_log, ("GET", "/api/sessions"))


# -- limits ---------------------------------------------------------------------------------


async def test_message_over_size_limit_closes_only_that_socket(
    fake_backend: FakeBackend, door: str
) -> None:
    limit = 64 * 1024
    config = trio_httpws.Config(backend=fake_backend.url, max_message_size=limit)
    with trio.fail_after(TIMEOUT):
        async with running_proxy(config, door) as url, connect(url) as bystander:
            async with connect(url) as ws:
                # Just under the limit (the limit counts the whole JSON message) is served.
                body = "x" * (limit - 200)
                response = await fetch(ws, "fits", "POST", "/echo", body=body)
                assert (response.status, response.body) == (200, body.encode())
                await ws.send_message(request_json("big", "POST", "/echo", body="x" * limit))
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1009  # hypercorn: Message Too Big
            await assert_still_serves(bystander)
            await assert_accepts_new_sockets(url)


async def test_socket_closed_in_the_middle_of_a_message_in_parts(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture, door: str
) -> None:
    # Over the limit after some parts: the session has begun assembling when hypercorn closes.
    limit = 3 * 1024 * 1024
    config = trio_httpws.Config(backend=fake_backend.url, max_message_size=limit)
    with trio.fail_after(TIMEOUT):
        async with running_proxy(config, door) as url, connect(url) as bystander:
            async with connect(url) as ws:
                body = base64.b64encode(b"x" * limit).decode()
                await ws.send_message(request_json("big", "POST", "/echo", body_base64=body))
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1009
            await assert_still_serves(bystander)
            await assert_accepts_new_sockets(url)
    assert warned(caplog, "closing a WebSocket with 1009: a message over 3145728 characters")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_duplicate_in_flight_message_id(proxy: str, caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(proxy) as ws:
            await ws.send_message(request_json("dup", "GET", "/slow?delay=0.5"))
            assert await ask(ws, request_json("dup", "GET", "/api/sessions")) == {
                "done": True,
                "status": 400,
                "statusText": "Invalid request: this message_id is already in flight.",
                "message_id": "dup",
            }
            original = await read_response(ws, "dup")
            assert (original.status, original.body) == (200, b"slow")
            # Once finished, the id is free again.
            again = await fetch(ws, "dup", "GET", "/api/sessions")
            assert (again.status, again.body) == (200, b"ok")
            await assert_still_serves(ws)
    assert warned(caplog, "refused duplicate in-flight message_id")


async def test_hostile_input_with_other_requests_in_flight(proxy: str) -> None:
    """Refusals on a socket whose other requests are mid-flight: those finish byte-exact."""
    hostile = [
        ("invalid json", BAD_JSON),
        ("[1, 2]", BAD_JSON),
        (b"\x00binary", None),
        (request_json("bad-path", "GET", "//evil.example/x"), 400),
        (request_json("bad-method", "G ET", "/"), 400),
        (request_json("slow-0", "GET", "/api/sessions"), 400),  # a duplicate in-flight id
        (request_json("bad-b64", "POST", "/echo", body_base64="!!"), 400),
    ]
    with trio.fail_after(TIMEOUT):
        async with connect(proxy) as ws:
            for i in range(4):
                await ws.send_message(request_json(f"slow-{i}", "GET", "/slow?delay=0.5"))
            await ws.send_message(request_json("download", "GET", "/bytes?n=3000000&delay=0.02"))
            for message, _ in hostile:
                await ws.send_message(message)
            finals: dict[str, dict[str, Any]] = {}
            errors: list[dict[str, Any]] = []
            body = b""
            while len(finals) < 5 or len(errors) < len(hostile):
                frame = await read_frame(ws)
                mid = frame.get("message_id")
                if frame.get("status", 200) >= 400:
                    errors.append(frame)
                    continue
                if mid == "download":
                    body += base64.b64decode(frame.get("data", ""))
                if frame["done"]:
                    finals[mid] = frame
            await assert_still_serves(ws)
    assert sorted(finals) == ["download", "slow-0", "slow-1", "slow-2", "slow-3"]
    assert all(finals[f"slow-{i}"]["status"] == 200 for i in range(4))
    assert body == pattern(3_000_000)
    assert [e["status"] for e in errors] == [400] * len(hostile)
    assert errors[0] == errors[1] == BAD_JSON
    assert {e.get("message_id") for e in errors[3:]} == {
        "bad-path",
        "bad-method",
        "slow-0",
        "bad-b64",
    }


async def test_more_requests_than_in_flight_limit(fake_backend: FakeBackend, door: str) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, max_in_flight=2)
    key = uuid.uuid4().hex
    count = 10  # beyond the 4 x max_in_flight queue, so the reader has to wait too
    with trio.fail_after(TIMEOUT):
        async with running_proxy(config, door) as url, connect(url) as ws:
            for i in range(count):
                await ws.send_message(request_json(i, "GET", f"/concurrency?key={key}&delay=0.05"))
            done: dict[int, dict[str, Any]] = {}
            while len(done) < count:
                frame = await read_frame(ws)
                assert frame["status"] == 200, frame
                assert frame["done"] is True
                done[frame["message_id"]] = frame
            report = await fetch(ws, "report", "GET", f"/concurrency?key={key}&report=1")
            await assert_still_serves(ws)
    stats = json.loads(report.body)
    assert sorted(done) == list(range(count))
    assert stats == {"running": 0, "max": 2, "total": count}


# -- the cancel extension -------------------------------------------------------------------


async def test_cancel_stops_only_that_request(
    proxy: str, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_httpws.session")
    tag = uuid.uuid4().hex
    active: dict[str, int] = fake_backend.app.settings["slow_active"]
    with trio.fail_after(TIMEOUT):
        async with connect(proxy) as ws:
            await ws.send_message(request_json("victim", "GET", f"/slow?delay=5&tag={tag}"))
            await ws.send_message(request_json("other", "GET", "/slow?delay=0.3"))
            await wait_until(lambda: active.get(tag) == 1)
            await ws.send_message(json.dumps({"message_id": "victim", "cancel": True}))
            assert await read_frame(ws) == {
                "done": True,
                "status": 499,
                "statusText": "Request cancelled by the client",
                "message_id": "victim",
            }
            other = await read_response(ws, "other")
            assert (other.status, other.body) == (200, b"slow")
            # The backend saw its connection go: nothing keeps running for nobody.
            await wait_until(lambda: active.get(tag) == 0)
            await assert_still_serves(ws)
    assert any("cancelled by the client" in r.getMessage() for r in caplog.records)


async def test_cancel_of_unknown_id_sends_nothing(proxy: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(proxy) as ws:
            await ws.send_message(json.dumps({"message_id": "nobody", "cancel": True}))
            await ws.send_message(json.dumps({"message_id": 7, "cancel": True}))
            # The next frame on the socket belongs to the next request (read_response checks).
            await assert_still_serves(ws)


class _CancelAsBodyEndsPool:
    """A backend whose one-chunk body ends just as the client's cancel for it arrives."""

    def __init__(self, sock: FakeSocket) -> None:
        self.sock = sock

    @asynccontextmanager
    async def request(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        sock = self.sock

        class Response:
            status, reason = 200, "OK"
            headers: list[tuple[bytes, bytes]] = []  # noqa: RUF012

            async def iter_pieces(self, limit: int) -> AsyncIterator[bytes]:
                yield b"x"
                sock.inbox.send_nowait(json.dumps({"message_id": "r", "cancel": True}))

        yield Response()


async def test_cancel_racing_the_final_frame_sends_one_final_frame() -> None:
    # Socket-free: the race needs the cancel to land while the final frame is being queued.
    # Trio's scheduler orders that batch at random, so the old code (a 499 after the final
    # frame, for a request already complete) failed about half of these rounds.
    upgrade = Upgrade("ws", "/http_over_websocket", "", [(b"host", b"localhost")])
    with trio.fail_after(TIMEOUT):
        for _ in range(40):
            sock = FakeSocket()
            pool = _CancelAsBodyEndsPool(sock)
            session = HttpOverWsSession(sock, upgrade, trio_httpws.Config(), pool)  # type: ignore[arg-type]
            sock.inbox.send_nowait(request_json("r", "GET", "/"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.run)
                await trio.testing.wait_all_tasks_blocked()
                sock.inbox.close()
            finals = [frame for frame in sock.sent if frame.get("done")]
            assert len(finals) == 1, sock.sent
            assert finals[0]["status"] in (200, 499)


# -- Origin ---------------------------------------------------------------------------------


@pytest.fixture
async def colab_proxy(fake_backend: FakeBackend, door: str) -> AsyncIterator[str]:
    """The proxy with the default Config: only Colab's origin is allowed."""
    async with running_proxy(trio_httpws.Config(backend=fake_backend.url), door) as url:
        yield url


@pytest.mark.parametrize(
    "origin",
    [
        COLAB + ".evil.example",
        COLAB + "/",
        "https://COLAB.research.google.com",
        "http://colab.research.google.com",
        COLAB + ":443",
        "https://evil.example",
        "null",
    ],
)
@pytest.mark.parametrize(
    "path",
    [
        "/http_over_websocket",
        "/http_over_websocket/diagnose",
        "/http_over_websocket/proxied_ws/plain-echo-ws",
    ],
    ids=["session", "diagnose", "proxied_ws"],
)
async def test_spoofed_origin_refused(
    colab_proxy: str, caplog: pytest.LogCaptureFixture, origin: str, path: str
) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with connect(colab_proxy, path, headers=[("Origin", origin)]):
                pass
        assert info.value.status_code == 403
        async with connect(colab_proxy, headers=[("Origin", COLAB)]) as ws:
            await assert_still_serves(ws)
    assert warned(caplog, f"refused WebSocket from origin {origin!r}")


async def test_same_origin_allowed(colab_proxy: str) -> None:
    own = f"http://127.0.0.1:{port_of(colab_proxy)}"
    with trio.fail_after(TIMEOUT):
        async with connect(colab_proxy, headers=[("Origin", own)]) as ws:
            await assert_still_serves(ws)


# -- Host (DNS rebinding) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1.evil.example:{port}",
        "localhost.evil.example",
    ],
)
async def test_dns_rebinding_host_refused(
    proxy: str, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    host = host.format(port=port_of(proxy))
    with trio.fail_after(TIMEOUT):
        async with raw_websocket(proxy) as raw:
            assert await raw.handshake(host, "/http_over_websocket") == 403
        assert await http_get(proxy, host, "/api/sessions") == (403, b"Host not allowed")
        await assert_accepts_new_sockets(proxy)
    assert warned(caplog, f"refused WebSocket with non-local Host {host!r}")
    assert warned(caplog, f"refused HTTP request with non-local Host {host!r}")


@pytest.mark.parametrize(
    "host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "localhost"]
)
async def test_local_host_allowed(proxy: str, host: str) -> None:
    host = host.format(port=port_of(proxy))
    with trio.fail_after(TIMEOUT):
        async with raw_websocket(proxy) as raw:
            assert await raw.handshake(host, "/http_over_websocket") == 101
            frame = await raw.fetch("m", "GET", "/api/sessions")
            assert (frame["status"], frame["data"], frame["done"]) == (200, "b2s=", True)
        assert await http_get(proxy, host, "/api/sessions") == (200, b"ok")


async def test_allow_hosts_name_allowed(fake_backend: FakeBackend, door: str) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, allow_hosts=("mybox.lan",))
    with trio.fail_after(TIMEOUT):
        async with running_proxy(config, door) as url:
            port = port_of(url)
            async with raw_websocket(url) as raw:
                assert await raw.handshake(f"MyBox.lan:{port}", "/http_over_websocket") == 101
                frame = await raw.fetch("m", "GET", "/api/sessions")
                assert frame["status"] == 200
            assert await http_get(url, f"mybox.lan:{port}", "/api/sessions") == (200, b"ok")
            async with raw_websocket(url) as raw:
                assert await raw.handshake(f"other.lan:{port}", "/http_over_websocket") == 403
            assert (await http_get(url, f"other.lan:{port}", "/api/sessions"))[0] == 403


# -- the auth URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth_url",
    [
        pytest.param("https://127.0.0.1:{port}/fake-auth?t={t}", id="scheme"),
        pytest.param("http://evil.example:{port}/fake-auth?t={t}", id="host"),
        pytest.param("http://localhost:{port}/fake-auth?t={t}", id="other-name-same-machine"),
        pytest.param("http://127.0.0.1:1/fake-auth?t={t}", id="port"),
        pytest.param("http://127.0.0.1/fake-auth?t={t}", id="default-port"),
        pytest.param("http://[::1]:{port}/fake-auth?t={t}", id="ipv6"),
        pytest.param("http://a@127.0.0.1:{port}/fake-auth?t={t}", id="userinfo"),
        pytest.param("http://127.0.0.1:{port}@evil.example/fake-auth?t={t}", id="userinfo-host"),
        pytest.param("/fake-auth?t={t}", id="relative"),
        # Same origin, but no valid request target: these used to crash the socket (1011).
        pytest.param("http://127.0.0.1:{port}/fake-auth x?t={t}", id="path-space"),
        pytest.param("http://127.0.0.1:{port}//evil.example/fake-auth?t={t}", id="path-authority"),
    ],
)
async def test_auth_url_elsewhere_refused(
    proxy: str, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture, auth_url: str
) -> None:
    t = uuid.uuid4().hex
    auth_url = auth_url.format(port=port_of(proxy), t=t)
    expected = {"done": True, "status": 500, "statusText": UNCAUGHT, "message_id": "m"}
    with trio.fail_after(TIMEOUT):
        async with connect(proxy, auth_path(proxy, auth_url)) as ws:
            assert await ask(ws, request_json("m", "GET", "/api/sessions")) == expected
            # A failure is not cached: the socket stays open and the next request says the same.
            assert await ask(ws, request_json("m", "GET", "/api/sessions")) == expected
        await assert_accepts_new_sockets(proxy)
    assert not [hit for hit in fake_backend.auth_hits if t in hit]
    # An expected refusal: a warning naming it, not an error-level "uncaught" line.
    assert warned(caplog, "auth URL refused")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_auth_url_redirect_to_other_origin_not_followed(
    proxy: str,
    fake_backend: FakeBackend,
    caplog: pytest.LogCaptureFixture,
    backend_log: list[tuple[str, str]],
) -> None:
    path = f"/fake-auth?redirect_away=1&t={uuid.uuid4().hex}"
    with trio.fail_after(TIMEOUT):
        async with connect(proxy, auth_path(proxy, f"{proxy}{path}")) as ws:
            assert await ask(ws, request_json("m", "GET", "/api/sessions")) == {
                "done": True,
                "status": 500,
                "statusText": UNCAUGHT,
                "message_id": "m",
            }
        await assert_accepts_new_sockets(proxy)
    assert fake_backend.auth_hits.count(path) == 1
    # The log works (it has the auth URL's hit), and the redirect's target is not in it.
    await wait_until(lambda: ("GET", path) in backend_log)
    assert not [uri for _, uri in backend_log if "steal" in uri]
    assert warned(caplog, "redirected to another origin")


async def test_auth_url_same_origin_redirect_keeps_cookies_of_both_hops(
    proxy: str, fake_backend: FakeBackend
) -> None:
    path = f"/fake-auth?redirect=1&t={uuid.uuid4().hex}"
    with trio.fail_after(TIMEOUT):
        async with connect(proxy, auth_path(proxy, f"{proxy}{path}")) as ws:
            response = await fetch(ws, "m", "GET", "/headers")
            assert response.status == 200
            headers = dict(json.loads(response.body)["headers"])
            await assert_still_serves(ws)
    cookies = {
        pair.split("=", 1)[0]: pair.split("=", 1)[1] for pair in headers["Cookie"].split("; ")
    }
    assert cookies["Before-Redirect"] == "yes"  # set by the first hop
    assert cookies["_xsrf"] == XSRF_VALUE  # set by the second
    assert cookies["X-Test-Cookie"] == "1"
    hits = fake_backend.auth_hits
    assert hits[hits.index(path) + 1] == "/fake-auth?landed=1"
