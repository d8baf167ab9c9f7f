"""Colab's current flow: credentialed cross-origin HTTP and WebSockets straight to the proxy's port.

The origin policy of ``_cors`` on real sockets: preflights answered by the proxy, refused origins
stopped before the backend, allowed ones answered with CORS headers and passed on without their
Origin. The backend is a recording h11 server here (it shows exactly what reached it), the tornado
fake for WebSockets, and a real Jupyter Server 2 started with no CORS flags at all.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from functools import partial

import h11
import pytest
import trio
import trio_websocket

import trio_httpws
from trio_httpws._jupyter import free_port

from ..support._http import HttpResponse, asgi_http_scope, http_request
from ..support.fake_backend import FakeBackend
from ..support.jupyter import Jupyter, run_cell
from ..support.proxies import SERVER_NAMES, access_lines, running_proxy
from ..support.recorder import Recorder, running_recorder
from ..support.ws import connect, fetch

COLAB = "https://colab.research.google.com"
#: Colab's second address: Google's own Colab tools trust both.
COLAB_SHORT = "https://colab.google.com"
EVIL = "https://evil.example"


# -- a backend that records what reached it -----------------------------------------------------


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    async with running_recorder() as rec:
        yield rec


@pytest.fixture
async def rproxy(recorder: Recorder, door: str) -> AsyncIterator[str]:
    config = trio_httpws.Config(backend=recorder.url, allow_origins=(COLAB,))
    async with running_proxy(config, door) as url:
        yield url


def preflight_headers(origin: str, method: str = "POST", **more: str) -> list[tuple[str, str]]:
    headers = [("Origin", origin), ("Access-Control-Request-Method", method)]
    headers += [(f"Access-Control-Request-{k.replace('_', '-')}", v) for k, v in more.items()]
    return headers


def assert_cors(response: HttpResponse, origin: str = COLAB) -> None:
    assert response.all("access-control-allow-origin") == [origin]
    assert response.all("access-control-allow-credentials") == ["true"]
    [vary] = response.all("vary")
    assert "Origin" in [v.strip() for v in vary.split(",")]


# -- preflights ---------------------------------------------------------------------------------


async def test_preflight_is_answered_by_the_proxy_with_private_network_access(
    rproxy: str, recorder: Recorder
) -> None:
    response = await http_request(
        rproxy,
        "OPTIONS",
        "/api/sessions?token=abc",
        headers=preflight_headers(
            COLAB, "POST", headers="content-type, x-xsrftoken", private_network="true"
        ),
    )
    assert response.status == 204
    assert_cors(response)
    assert response.all("access-control-allow-methods") == [
        "GET, PUT, POST, PATCH, DELETE, OPTIONS"
    ]
    assert response.all("access-control-allow-headers") == ["content-type, x-xsrftoken"]
    assert response.all("access-control-allow-private-network") == ["true"]
    assert response.all("access-control-max-age") == ["600"]
    assert recorder.seen == []  # never forwarded


async def test_preflight_from_a_refused_origin_gets_no_cors(
    rproxy: str, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    response = await http_request(
        rproxy,
        "OPTIONS",
        "/api/kernels",
        headers=preflight_headers(EVIL, "GET", private_network="true"),
    )
    assert response.status == 403
    assert response.body == b"Origin not allowed"
    assert not [n for n, _ in response.raw_headers if n.startswith("access-control-")]
    assert recorder.seen == []
    assert f"refused OPTIONS /api/kernels from origin {EVIL!r}" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(
    ("method", "headers"),
    [("PO ST", ""), ("GET", "x-ok, not a header"), ("GET", "x(y)")],
)
async def test_bad_preflight_is_a_clear_400(
    rproxy: str, recorder: Recorder, method: str, headers: str
) -> None:
    # Any visible text is a valid field value, so the malformed question reaches the proxy.
    response = await http_request(
        rproxy, "OPTIONS", "/api/x", headers=preflight_headers(COLAB, method, headers=headers)
    )
    assert response.status == 400
    assert response.body.startswith(b"Bad preflight: Access-Control-Request-")
    assert_cors(response)
    assert recorder.seen == []


# -- refused and allowed origins on plain HTTP --------------------------------------------------


@pytest.mark.parametrize(
    ("method", "content_type"),
    [("GET", None), ("POST", "text/plain"), ("PUT", "text/plain"), ("DELETE", None)],
)
async def test_refused_origin_reaches_nothing_whatever_it_carries(
    rproxy: str, recorder: Recorder, method: str, content_type: str | None
) -> None:
    """A "simple" cross-origin POST (no preflight) from a refused page never reaches Jupyter."""
    headers = [("Origin", EVIL), ("Cookie", "_xsrf=1; username-127-0-0-1-8888=secret")]
    if content_type:
        headers.append(("Content-Type", content_type))
    response = await http_request(
        rproxy,
        method,
        "/api/contents/x.txt?token=the-real-token",
        headers=headers,
        body=b"payload" if content_type else None,
    )
    assert response.status == 403
    assert response.body == b"Origin not allowed"
    assert response.get("access-control-allow-origin") is None
    assert recorder.seen == []


async def test_allowed_origin_is_answered_with_cors_and_not_passed_on(
    rproxy: str, recorder: Recorder, door: str
) -> None:
    # The backend's own CORS headers (Jupyter's, when started with flags) are replaced.
    recorder.answer_headers = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Credentials", "false"),
        ("Vary", "Accept-Encoding"),
    ]
    response = await http_request(
        rproxy,
        "POST",
        "/api/sessions?token=abc",
        headers=[
            ("Origin", COLAB),
            ("Referer", COLAB + "/drive/notebook"),
            ("Content-Type", "application/json"),
        ],
        body=b'{"a": 1}',
    )
    assert response.status == 200
    assert response.body == b"recorded"
    assert_cors(response)
    assert response.all("vary") == ["Accept-Encoding, Origin"]
    # One Date and one Server: the proxy's server's, not the backend's as well.
    assert len(response.all("date")) == 1
    assert response.all("server") == [SERVER_NAMES[door]]
    [seen] = recorder.seen
    assert (seen.method, seen.target, seen.body) == ("POST", "/api/sessions?token=abc", b'{"a": 1}')
    assert "origin" not in seen.headers
    host = rproxy.removeprefix("http://")
    assert seen.headers["referer"] == f"http://{host}/"


@pytest.mark.parametrize("origin", [None, "same"])
async def test_no_origin_and_same_origin_pass_as_before(
    rproxy: str, recorder: Recorder, origin: str | None
) -> None:
    recorder.answer_headers = [("Access-Control-Allow-Origin", "http://backend.example")]
    headers = []
    if origin == "same":
        origin = rproxy
        headers.append(("Origin", origin))
    response = await http_request(rproxy, "GET", "/tree", headers=headers)
    assert response.status == 200
    # Nothing of ours added: the backend's own answer stands.
    assert response.all("access-control-allow-origin") == ["http://backend.example"]
    assert response.get("access-control-allow-credentials") is None
    [seen] = recorder.seen
    assert seen.headers.get("origin") == origin


async def test_star_echoes_the_request_origin(door: str) -> None:
    async with running_recorder() as rec:
        config = trio_httpws.Config(backend=rec.url, allow_origins=("*",))
        async with running_proxy(config, door) as url:
            response = await http_request(url, "GET", "/x", headers=[("Origin", EVIL)])
    assert response.status == 200
    assert_cors(response, EVIL)


async def test_both_colab_origins_by_default_and_an_override_replaces_both(door: str) -> None:
    async with running_recorder() as rec:
        async with running_proxy(trio_httpws.Config(backend=rec.url), door) as url:
            for origin in (COLAB, COLAB_SHORT):
                response = await http_request(
                    url, "GET", "/api/kernelspecs", headers=[("Origin", origin)]
                )
                assert response.status == 200, origin
                assert_cors(response, origin)
                async with connect(url, headers=[("Origin", origin)]) as ws:
                    assert (await fetch(ws, "1", "GET", "/api/kernelspecs")).status == 200
            refused = await http_request(url, "GET", "/x", headers=[("Origin", EVIL)])
            assert refused.status == 403
        mine = "https://front.example"
        config = trio_httpws.Config(backend=rec.url, allow_origins=(mine,))
        async with running_proxy(config, door) as url:
            for origin in (COLAB, COLAB_SHORT):
                response = await http_request(url, "GET", "/x", headers=[("Origin", origin)])
                assert response.status == 403, origin
                with pytest.raises(trio_websocket.ConnectionRejected):
                    async with connect(url, headers=[("Origin", origin)]):
                        pass  # pragma: no cover - the handshake fails
            allowed = await http_request(url, "GET", "/x", headers=[("Origin", mine)])
            assert allowed.status == 200
            assert_cors(allowed, mine)


async def test_the_proxys_own_errors_carry_cors_for_allowed_origins(door: str) -> None:
    config = trio_httpws.Config(
        backend=f"http://127.0.0.1:{free_port()}", allow_origins=(COLAB,), connect_timeout=2
    )
    async with running_proxy(config, door) as url:
        down = await http_request(url, "GET", "/api/kernelspecs", headers=[("Origin", COLAB)])
        plain = await http_request(url, "GET", "/api/kernelspecs")
    assert down.status == 502
    assert down.body.startswith(b"Bad Gateway")
    assert_cors(down)
    assert plain.status == 502
    assert plain.get("access-control-allow-origin") is None


async def test_access_line_for_reverse_http_has_the_origin_class(
    rproxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="trio_httpws.access")
    await http_request(rproxy, "GET", "/api/status?token=secret-t0ken", headers=[("Origin", COLAB)])
    await http_request(rproxy, "GET", "/api/status?token=secret-t0ken", headers=[("Origin", EVIL)])
    lines = await access_lines(caplog, 2)
    fields = [r.fields for r in lines]  # type: ignore[attr-defined]
    assert [(f["kind"], f["path"], f["status"], f["origin"], f["outcome"]) for f in fields] == [
        ("http", "/api/status", 200, "allowed", "complete"),
        ("http", "/api/status", 403, "refused", "refused_origin"),
    ]
    assert fields[0]["bytes"] == len(b"recorded")
    assert all("secret-t0ken" not in r.getMessage() for r in lines)


# -- request targets and framing (nothing malformed reaches the backend) -------------------------


async def raw_exchange(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(request)
        received = b""
        with trio.fail_after(10):
            while not _complete(received):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
    return received


def _complete(response: bytes) -> bool:
    if b"\r\n\r\n" not in response:
        return False
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET //evil.example/x HTTP/1.1",
        b"GET http://evil.example:1/abs HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
    ],
)
async def test_targets_that_are_not_paths_are_refused(
    rproxy: str, recorder: Recorder, request_line: bytes
) -> None:
    host = rproxy.removeprefix("http://").encode()
    response = await raw_exchange(rproxy, request_line + b"\r\nHost: " + host + b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"request target must be a path" in response
    assert recorder.seen == []


async def test_content_length_with_transfer_encoding_is_refused(
    rproxy: str, recorder: Recorder
) -> None:
    host = rproxy.removeprefix("http://").encode()
    request = (
        b"POST /api/contents HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    response = await raw_exchange(rproxy, request)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"both Content-Length and Transfer-Encoding" in response
    assert recorder.seen == []


# -- WebSockets: plain relays and the tunnel's endpoints -----------------------------------------


@pytest.fixture
async def wproxy(fake_backend: FakeBackend, door: str) -> AsyncIterator[str]:
    config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(COLAB,))
    async with running_proxy(config, door) as url:
        yield url


async def test_relay_from_an_allowed_origin_does_not_pass_the_origin_on(wproxy: str) -> None:
    async with connect(wproxy, "/headers-ws", headers=[("Origin", COLAB)]) as ws:
        seen = dict(json.loads(await ws.get_message()))
    assert "Origin" not in seen
    assert seen["Host"] == wproxy.removeprefix("http://")


async def test_relay_from_the_same_origin_passes_it_on(wproxy: str) -> None:
    async with connect(wproxy, "/headers-ws", headers=[("Origin", wproxy)]) as ws:
        seen = dict(json.loads(await ws.get_message()))
    assert seen["Origin"] == wproxy


@pytest.mark.parametrize(
    "path",
    ["/headers-ws", "/api/kernels/x/channels", "/http_over_websocket/proxied_ws/headers-ws"],
)
async def test_relay_from_a_refused_origin_is_refused(
    wproxy: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="trio_httpws.access")
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with connect(wproxy, path, headers=[("Origin", EVIL)]):
            pass  # pragma: no cover - the handshake fails
    assert info.value.status_code == 403
    [line] = await access_lines(caplog, 1)
    assert line.fields["status"] == 403  # type: ignore[attr-defined]
    assert line.fields["origin"] == "refused"  # type: ignore[attr-defined]


async def test_relay_target_must_be_a_path(wproxy: str) -> None:
    async with connect(wproxy, "/http_over_websocket/proxied_ws//evil.example/x") as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 4400
    assert "must be a path" in (info.value.reason.reason or "")
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with connect(wproxy, "//evil.example/x"):
            pass  # pragma: no cover - the handshake fails
    assert rejected.value.status_code == 400


async def test_access_line_for_a_relay(
    wproxy: str, caplog: pytest.LogCaptureFixture, door: str
) -> None:
    caplog.set_level("INFO", logger="trio_httpws.access")
    async with connect(
        wproxy, "/plain-echo-ws?token=secret-t0ken", headers=[("Origin", COLAB)]
    ) as ws:
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
    [line] = await access_lines(caplog, 1)
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["kind"], fields["path"], fields["status"], fields["origin"]) == (
        "ws",
        "/plain-echo-ws",
        101,
        "allowed",
    )
    assert fields["bytes"] == len("hello")
    # hypercorn does not tell the app the client's close code: its close reads as a drop.
    assert fields["outcome"] == ("client_close" if door == "trio" else "client_left")
    assert "secret-t0ken" not in line.getMessage()


# -- the whole flow against a real Jupyter Server 2 started with no CORS flags -------------------


@pytest.fixture
async def jproxy(jupyter: Jupyter, door: str) -> AsyncIterator[str]:
    async with running_proxy(trio_httpws.Config(backend=jupyter.url), door) as url:
        yield url


async def test_colab_direct_flow_and_old_tunnel_on_one_port(jproxy: str, jupyter: Jupyter) -> None:
    token = f"token={jupyter.token}"
    origin = [("Origin", COLAB)]

    async def call(method: str, path: str, body: bytes | None = None) -> HttpResponse:
        sep = "&" if "?" in path else "?"
        headers = [*origin, ("Content-Type", "application/json")] if body else origin
        response = await http_request(
            jproxy, method, f"{path}{sep}{token}", headers=headers, body=body
        )
        assert_cors(response)
        return response

    # Colab's first calls: the preflight, then a route only its own runtime has (a readable 404).
    pre = await http_request(
        jproxy,
        "OPTIONS",
        f"/api/colab/build-info?{token}",
        headers=preflight_headers(COLAB, "GET", private_network="true"),
    )
    assert pre.status == 204
    assert pre.all("access-control-allow-private-network") == ["true"]
    assert (await call("GET", "/api/colab/build-info")).status == 404
    specs = await call("GET", "/api/kernelspecs")
    assert specs.status == 200
    assert "python3" in json.loads(specs.body)["kernelspecs"]

    created = await call(
        "POST",
        "/api/sessions",
        json.dumps(
            {"path": "direct.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}}
        ).encode(),
    )
    assert created.status == 201, created.body
    session = json.loads(created.body)
    channels = f"/api/kernels/{session['kernel']['id']}/channels?session_id={uuid.uuid4().hex}"
    async with connect(jproxy, f"{channels}&{token}", headers=origin) as kernel:
        assert await run_cell(kernel, "print(6*7)") == "42\n"

    put = await call(
        "PUT",
        "/api/contents/direct.txt",
        json.dumps({"type": "file", "format": "text", "content": "hi"}).encode(),
    )
    assert put.status in (200, 201), put.body

    # The old tunnel on the same port, at the same time.
    auth = f"jupyter_http_over_ws_auth_url={jproxy}/?{token}".replace("&", "%26")
    async with connect(jproxy, f"/http_over_websocket?{auth}", headers=origin) as ws:
        listed = await fetch(ws, "1", "GET", "/api/sessions")
        assert listed.status == 200
        assert session["id"] in {s["id"] for s in json.loads(listed.body)}

    assert (await call("DELETE", f"/api/sessions/{session['id']}")).status == 204
    assert (await call("DELETE", "/api/contents/direct.txt")).status == 204


async def test_login_cookies_work_from_an_allowed_origin(jproxy: str, jupyter: Jupyter) -> None:
    """Jupyter judges the Referer of cookie-authenticated GETs: the proxy's answer covers it."""
    login = await http_request(jproxy, "GET", f"/?token={jupyter.token}")
    cookies = "; ".join(v.split(";", 1)[0] for v in login.all("set-cookie"))
    assert cookies
    response = await http_request(
        jproxy,
        "GET",
        "/api/kernelspecs",
        headers=[("Origin", COLAB), ("Referer", COLAB + "/"), ("Cookie", cookies)],
    )
    assert response.status == 200, response.body
    assert_cors(response)


async def test_refused_origin_cannot_write_with_the_token(jproxy: str, jupyter: Jupyter) -> None:
    body = json.dumps({"type": "file", "format": "text", "content": "pwned"}).encode()
    response = await http_request(
        jproxy,
        "PUT",
        f"/api/contents/pwned.txt?token={jupyter.token}",
        headers=[("Origin", EVIL), ("Content-Type", "text/plain")],
        body=body,
    )
    assert response.status == 403
    check = await http_request(jproxy, "GET", f"/api/contents/pwned.txt?token={jupyter.token}")
    assert check.status == 404


# -- hypercorn's keep-alive limit -----------------------------------------------------------------


async def test_a_request_past_keep_alive_limit_is_a_quiet_close(
    rproxy: str, recorder: Recorder, caplog: pytest.LogCaptureFixture, door: str
) -> None:
    """hypercorn answers its 1000th request with Connection: close; one more is no traceback.

    The proxy's own door has no such limit: the 1000th request is answered like the first, and
    the two pipelined behind it too.
    """
    host, port = rproxy.removeprefix("http://").split(":")
    request = f"GET /x HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        conn = h11.Connection(h11.CLIENT)
        closing = False
        with trio.fail_after(60):
            for i in range(1000):
                data = conn.send(h11.Request(method="GET", target="/x", headers=[("Host", host)]))
                data += conn.send(h11.EndOfMessage())
                # Pipelined behind the last ones: requests hypercorn reads while it closes.
                await stream.send_all(data + (request * 2 if i == 999 else b""))
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        closing = (b"connection", b"close") in list(event.headers)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                if closing:
                    break
                conn.start_next_cycle()
            if door == "trio":
                # The two raw requests pipelined behind the 1000th: two whole answers.
                rest = conn.trailing_data[0]
                while rest.count(b"recorded") < 2:
                    chunk = await stream.receive_some(65536)
                    assert chunk, rest
                    rest += chunk
                assert rest.count(b"HTTP/1.1 200 ") == 2
            else:
                while await stream.receive_some(65536):
                    pass
    assert closing is (door == "hypercorn")
    assert len(recorder.seen) == (1002 if door == "trio" else len(recorder.seen))
    assert len(recorder.seen) >= 1000
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_a_send_to_a_closing_connection_is_a_quiet_end(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """What hypercorn's trio worker raises when it closes the connection under our final send.

    hypercorn shuts the socket down from its reading task (a request pipelined past its
    keep-alive limit) while the app task writes: the write raises BusyResourceError. The race is
    too narrow to hit on purpose over a socket, so the ASGI send raises it here.
    """
    app = trio_httpws.create_app(trio_httpws.Config(backend=recorder.url))
    scope = asgi_http_scope("GET", "/x")
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            raise trio.BusyResourceError("another task is using this stream for send")
        sent.append(message)

    caplog.set_level("INFO", logger="trio_httpws.access")
    with trio.fail_after(10):
        await app(scope, receive, send)
    await app.proxy.aclose()
    # The recorder's body has a Content-Length: its one body event is the final one, which raised.
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    [line] = await access_lines(caplog, 1)
    assert line.fields["status"] == 200  # type: ignore[attr-defined]


async def test_handler_applies_the_same_policy(fake_backend: FakeBackend) -> None:
    """``handler()`` under the program's own ``serve_websocket``: the same WebSocket door."""
    config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(COLAB,))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            trio_websocket.serve_websocket, trio_httpws.handler(config), "127.0.0.1", 0, None
        )
        url = f"http://127.0.0.1:{server.port}"
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with connect(url, "/headers-ws", headers=[("Origin", EVIL)]):
                pass  # pragma: no cover - refused
        assert info.value.status_code == 403
        async with connect(url, "/headers-ws", headers=[("Origin", COLAB)]) as ws:
            seen = dict(json.loads(await ws.get_message()))
        assert "Origin" not in seen
        nursery.cancel_scope.cancel()


# -- a dual-stack listener -----------------------------------------------------------------------


async def test_dual_stack_listener_checks_the_host_of_ipv4_loopback_clients(
    recorder: Recorder, door: str
) -> None:
    """On ``::`` an IPv4 client arrives as ``::ffff:127.0.0.1``: loopback, so Host is checked."""
    config = trio_httpws.Config(backend=recorder.url)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(trio_httpws.serve, config, "::", 0, server=door))
        base = f"http://127.0.0.1:{port}"
        evil = await raw_exchange(base, b"GET /x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        local = await raw_exchange(
            base, f"GET /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        nursery.cancel_scope.cancel()
    assert evil.startswith(b"HTTP/1.1 403 ")
    assert b"Host not allowed" in evil
    assert local.startswith(b"HTTP/1.1 200 ")
    assert [seen.target for seen in recorder.seen] == ["/x"]
