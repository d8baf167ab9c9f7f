"""What a server in front of the proxy must give: head limits, deadlines, keep-alive, upgrades.

Each test runs on both doors where both give the same guarantee; where they differ by design,
each door's documented result is asserted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial

import h11
import pytest
import trio
import trio_websocket

import trio_httpws
from trio_httpws._door import Door, open_listener

from ..support._http import http_request
from ..support.fake_backend import FakeBackend
from ..support.proxies import running_proxy, wait_until
from ..support.ws import connect

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@asynccontextmanager
async def raw_connection(base: str) -> AsyncIterator[trio.SocketStream]:
    host, port = base.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        yield stream


async def read_until_closed(stream: trio.abc.ReceiveStream, within: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    with trio.fail_after(within):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset is a close too
                return received
            if not chunk:
                return received
            received += chunk


def responses(data: bytes, *, head: bool = False) -> list[h11.Response]:
    """The whole responses in ``data`` (to requests without bodies; ``head``: to HEAD)."""
    conn = h11.Connection(h11.CLIENT)
    found: list[h11.Response] = []
    conn.receive_data(data)
    method = "HEAD" if head else "GET"
    while True:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        response = None
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                found.append(response)
                break
            elif event is h11.NEED_DATA:
                return found
        if conn.our_state is h11.MUST_CLOSE:
            return found
        conn.start_next_cycle()


async def read_answer(stream: trio.abc.ReceiveStream) -> bytes:
    """One answer with a Content-Length, read whole (the connection may stay open)."""
    data = b""
    with trio.fail_after(10):
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if len(body) >= (lengths or [0])[0]:
                    return data
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk


def backend_config(fake_backend: FakeBackend, **changes: object) -> trio_httpws.Config:
    return trio_httpws.Config(backend=fake_backend.url).replace(**changes)


# -- request heads --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [70_000, 200_000])
async def test_a_head_jupyter_accepts_is_served_and_a_longer_one_is_refused(
    fake_backend: FakeBackend, door: str, size: int
) -> None:
    """Heads up to ``max_head_size`` pass (tornado's 64 KiB); the proxy's own door answers a
    longer one 431. hypercorn (h11) counts only what it holds while the head is incomplete, so
    a head a little over the limit may pass in one read (the backend then refuses it: 502); a
    head of several reads is refused, with a 400."""
    async with running_proxy(backend_config(fake_backend), door) as url:
        ok = await http_request(url, "GET", "/api/sessions", headers=[("X-Big", "a" * 40_000)])
        assert ok.status == 200
        host = url.removeprefix("http://")
        head = f"GET /api/sessions HTTP/1.1\r\nHost: {host}\r\nX-Big: {'a' * size}\r\n\r\n"
        async with raw_connection(url) as stream:
            await stream.send_all(head.encode())
            answer = await read_answer(stream)
    status = answer.split(b" ", 2)[1]
    if door == "trio":
        assert status == b"431"
    else:
        assert status == (b"502" if size == 70_000 else b"431")


async def test_a_head_that_never_ends_is_dropped_after_the_head_deadline(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy's own door: a slow-loris head has ``head_timeout`` from its first byte, and
    trickling bytes do not extend it. Its access line says why it ended (408, as nginx logs
    a client header timeout)."""
    caplog.set_level(logging.INFO, logger="trio_httpws.access")
    config = backend_config(fake_backend, head_timeout=0.5, keep_alive_timeout=30)
    async with running_proxy(config, "trio") as url, raw_connection(url) as stream:
        started = trio.current_time()
        await stream.send_all(b"GET /api/sessions HTTP/1.1\r\n")
        with trio.fail_after(10):
            while True:
                try:
                    await stream.send_all(b"X-A: b\r\n")
                except trio.BrokenResourceError:
                    break
                await trio.sleep(0.1)
                if trio.current_time() - started > 5:
                    pytest.fail("the connection was not closed")
                # A closed connection shows as EOF before a write fails.
                with trio.move_on_after(0):
                    if await stream.receive_some(1) == b"":
                        break
    assert trio.current_time() - started < 5
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_httpws.access"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("http - - 408 0 bytes ")
    assert lines[0].endswith(" outcome=head_timeout")


async def test_an_idle_keep_alive_connection_is_closed(
    fake_backend: FakeBackend, door: str
) -> None:
    config = backend_config(fake_backend, keep_alive_timeout=0.5)
    async with running_proxy(config, door) as url, raw_connection(url) as stream:
        host = url.removeprefix("http://")
        await stream.send_all(f"GET /api/sessions HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = await read_until_closed(stream, within=10)
    [response] = responses(data)
    assert response.status_code == 200


async def test_http_1_0_and_connection_close_clients(fake_backend: FakeBackend, door: str) -> None:
    async with running_proxy(backend_config(fake_backend), door) as url:
        host = url.removeprefix("http://")
        for request in (
            f"GET /api/sessions HTTP/1.0\r\nHost: {host}\r\n\r\n".encode(),
            f"GET /api/sessions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
        ):
            async with raw_connection(url) as stream:
                await stream.send_all(request)
                data = await read_until_closed(stream)
            assert data.split(b" ", 2)[1] == b"200"
            assert data.endswith(b"ok")


async def test_head_answers_have_no_body_and_the_connection_goes_on(
    fake_backend: FakeBackend, door: str
) -> None:
    async with running_proxy(backend_config(fake_backend), door) as url:
        host = url.removeprefix("http://")
        async with raw_connection(url) as stream:
            request = f"HEAD /api/largeresponse HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            await stream.send_all(
                request * 2 + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            )
            data = await read_until_closed(stream)
    answers = responses(data, head=True)
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert all(dict(r.headers)[b"content-length"] == b"100000" for r in answers)


async def test_pipelined_requests_are_answered_in_order(
    fake_backend: FakeBackend, door: str
) -> None:
    async with running_proxy(backend_config(fake_backend), door) as url:
        host = url.removeprefix("http://")
        async with raw_connection(url) as stream:
            requests = b"".join(
                f"GET /headers?n={i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for i in range(5)
            )
            await stream.send_all(
                requests
                + f"GET /api/sessions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            data = await read_until_closed(stream)
    uris = [
        json.loads(part.split(b"\r\n\r\n", 1)[1].rsplit(b"}", 1)[0] + b"}")["uri"]
        for part in data.split(b"HTTP/1.1 200")[1:6]
    ]
    assert uris == [f"/headers?n={i}" for i in range(5)]


async def test_expect_100_continue_is_answered_when_the_body_is_wanted(
    fake_backend: FakeBackend, door: str
) -> None:
    async with running_proxy(backend_config(fake_backend), door) as url:
        host = url.removeprefix("http://")
        async with raw_connection(url) as stream:
            await stream.send_all(
                f"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n"
                "Expect: 100-continue\r\nConnection: close\r\n\r\n".encode()
            )
            with trio.fail_after(10):
                interim = await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"hello")
            data = await read_until_closed(stream)
    assert data.split(b" ", 2)[1] == b"200"
    assert data.endswith(b"hello")


# -- WebSocket upgrades the door refuses itself ----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        pytest.param(f"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}", 426, id="version-8"),
        pytest.param("Sec-WebSocket-Version: 13", 400, id="no-key"),
        pytest.param(
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=", 400, id="short-key"
        ),
    ],
)
async def test_an_invalid_websocket_upgrade_never_reaches_the_backend(
    fake_backend: FakeBackend, door: str, extra: str, status: int
) -> None:
    before = fake_backend.app.settings["websockets_open"]
    async with running_proxy(backend_config(fake_backend), door) as url:
        host = url.removeprefix("http://")
        async with raw_connection(url) as stream:
            await stream.send_all(
                f"GET /plain-echo-ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\n{extra}\r\n\r\n".encode()
            )
            data = await read_answer(stream)
    if door == "hypercorn":
        # hypercorn answers a bad version or a missing key with a 400 of its own; it does not
        # check the key's length, and its relay upgrades to the backend with a key of its own.
        status = 101 if "c2hvcnQ" in extra else 400
        if status == 101:
            assert data.startswith(b"HTTP/1.1 101 ")
            return
    assert data.split(b" ", 2)[1] == str(status).encode()
    if status == 426:
        assert b"\r\nsec-websocket-version: 13\r\n" in data.lower()
    assert fake_backend.app.settings["websockets_open"] == before


async def test_an_h2c_upgrade_offer_is_not_passed_on(fake_backend: FakeBackend) -> None:
    """The proxy's own door answers an h2c offer over HTTP/1.1 and passes no part of it on.

    (hypercorn takes the offer itself and answers 101 with HTTP/2: nothing reaches the backend
    either way, which ``test_an_invalid_websocket_upgrade_never_reaches_the_backend`` covers.)
    """
    async with running_proxy(backend_config(fake_backend), "trio") as url:
        host = url.removeprefix("http://")
        async with raw_connection(url) as stream:
            await stream.send_all(
                f"GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings, "
                "close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n".encode()
            )
            data = await read_until_closed(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    seen = {name.lower() for name, _ in json.loads(body)["headers"]}
    assert "upgrade" not in seen
    assert "http2-settings" not in seen


async def test_an_hour_silent_relayed_websocket_stays_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The head and keep-alive deadlines end at the 101: a kernel socket may idle for hours.

    The backend is an echo in this trio run: on the mock clock, every party must be.
    """

    async def echo(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                await ws.send_message(await ws.get_message())

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, echo, "127.0.0.1", 0, ssl_context=None)
        )
        config = trio_httpws.Config(
            backend=f"http://127.0.0.1:{server.port}", head_timeout=1, keep_alive_timeout=1
        )
        async with running_proxy(config, "trio") as url, connect(url, "/kernel") as ws:
            await trio.sleep(3600)
            await ws.send_message("still here")
            assert await ws.get_message() == "still here"
        nursery.cancel_scope.cancel()


# -- the listener ---------------------------------------------------------------------------------


def _listen_overflows() -> int:
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table["ListenOverflows"])
    raise AssertionError("no TcpExt in /proc/net/netstat")


async def test_a_burst_of_connects_overflows_no_listen_queue(
    fake_backend: FakeBackend, door: str
) -> None:
    async with running_proxy(backend_config(fake_backend), door) as url:
        host, port = url.removeprefix("http://").split(":")
        before = _listen_overflows()
        sockets = []
        try:
            for _ in range(1000):
                sock = socket.socket()
                sock.setblocking(False)
                with suppress(BlockingIOError):
                    sock.connect((host, int(port)))
                sockets.append(sock)
            await trio.sleep(1)
            after = _listen_overflows()
        finally:
            for sock in sockets:
                sock.close()
        response = await http_request(url, "GET", "/api/sessions")
    assert response.status == 200
    assert after == before


async def test_out_of_descriptors_pauses_accepting_and_says_so_once(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """EMFILE from accept: one warning, accept pauses, and it serves again once it can."""
    listener = open_listener("127.0.0.1", 0, 10)
    port = listener.socket.getsockname()[1]
    failures = [OSError(errno.EMFILE, "Too many open files")] * 5

    class Exhausted:
        """The listener, failing as a process out of descriptors does, a few times."""

        async def accept(self) -> trio.SocketStream:
            if failures:
                await trio.lowlevel.checkpoint()
                raise failures.pop()
            return await listener.accept()

    proxy = trio_httpws.Proxy(backend_config(fake_backend))
    caplog.set_level(logging.WARNING, logger="trio_httpws")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Door(proxy).accept_loop, Exhausted(), nursery)
        response = await http_request(f"http://127.0.0.1:{port}", "GET", "/api/sessions")
        nursery.cancel_scope.cancel()
    await listener.aclose()
    await proxy.aclose()
    assert response.status == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "trio_httpws"]
    assert messages == [
        "cannot accept connections: EMFILE; retrying every 0.1s",
        "accepting connections again",
    ]


async def test_a_pipelining_client_is_not_read_past_one_head_while_its_request_runs(
    fake_backend: FakeBackend,
) -> None:
    """While a request is at the backend the door reads ahead at most ``max_head_size``: a
    client pipelining without end is held back by TCP, not buffered by the proxy."""
    async with running_proxy(backend_config(fake_backend), "trio") as url:
        host = url.removeprefix("http://")
        request = f"GET /api/sessions HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        flood = request * (64 * 1024 * 1024 // len(request))
        async with raw_connection(url) as stream:
            await stream.send_all(
                f"GET /slow?delay=2&tag=flood HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            )
            await wait_until(lambda: fake_backend.slow_active("flood") == 1)
            with trio.move_on_after(1) as held:
                await stream.send_all(flood)
    assert held.cancelled_caught  # 64 MB did not fit into what the proxy and the kernel hold


async def test_a_malformed_head_is_logged_without_what_it_carried(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """h11 quotes the line it refuses; the log line must not, a cookie or token may be in it."""
    secret = "s3cr3t-t0ken-value"
    caplog.set_level(logging.DEBUG)
    async with running_proxy(backend_config(fake_backend), "trio") as url:
        host = url.removeprefix("http://")
        async with raw_connection(url) as stream:
            await stream.send_all(
                f"GET /x HTTP/1.1\r\nHost: {host}\r\nAuthorization token {secret}\r\n\r\n".encode()
            )
            answer = await read_until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert any(
        "refused a request head: illegal header line" in r.getMessage() for r in caplog.records
    )
    assert all(secret not in r.getMessage() for r in caplog.records)
