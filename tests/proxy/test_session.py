"""Sessions on /http_over_websocket: concurrency, big and binary bodies, cancellation, faults."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.trio import serve as hypercorn_serve

import trio_httpws
from trio_httpws._asgi import TrioHttpWsApp
from trio_httpws._backend import BackendPool
from trio_httpws._config import BackendURL
from trio_httpws._door import serve_door
from trio_httpws._proxy import Proxy
from trio_httpws._serve import hypercorn_config
from trio_httpws._session import HttpOverWsSession
from trio_httpws._socket import Upgrade

from ..support._http import http
from ..support.fake_backend import FakeBackend, pattern
from ..support.fake_socket import FakeSocket
from ..support.proxies import access_lines, running_proxy, wait_until
from ..support.ws import connect, fetch, read_frame, read_response, request_json


def pattern_digest(n: int) -> str:
    return hashlib.sha256(pattern(n)).hexdigest()


@pytest.mark.timeout(300)
async def test_streamed_body_over_150_mb_arrives_whole(proxy: str) -> None:
    size = 160 * 1000 * 1000
    digest = hashlib.sha256()
    received = 0
    largest = 0
    frames = 0
    async with connect(proxy) as ws:
        await ws.send_message(request_json("big", "GET", f"/bytes?n={size}&chunk=1048576"))
        with trio.fail_after(240):
            while True:
                frame = await read_frame(ws)
                assert frame["message_id"] == "big"
                frames += 1
                if frames == 1:
                    assert frame["status"] == 200
                    assert frame["headers"]["Content-Type"] == "application/octet-stream"
                else:
                    assert "status" not in frame
                data = base64.b64decode(frame.get("data", ""))
                largest = max(largest, len(data))
                digest.update(data)
                received += len(data)
                if frame["done"]:
                    break
    assert received == size
    assert digest.hexdigest() == pattern_digest(size)
    assert largest <= 65536
    assert frames >= size // 65536


async def test_binary_post_body_is_byte_exact(proxy: str) -> None:
    body = bytes(range(256)) + os.urandom(300_000) + b"\xff\xfe\x00\x80"
    async with connect(proxy) as ws:
        response = await fetch(ws, 7, "POST", "/echo", body_base64=base64.b64encode(body).decode())
    assert response.status == 200
    assert response.headers["X-Body-Length"] == str(len(body))
    assert response.body == body
    # A numeric message_id comes back as a number.
    assert all(frame["message_id"] == 7 for frame in response.frames)


async def test_text_body_is_sent_as_utf8(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "u", "POST", "/echo", body="naïve ☃ 𝄞")
    assert response.body == "naïve ☃ 𝄞".encode()


async def test_many_in_flight_interleave_and_stay_tagged(proxy: str) -> None:
    async with connect(proxy) as ws:
        sizes = {f"r{i}": 50_000 * (i + 1) for i in range(12)}
        for mid, size in sizes.items():
            await ws.send_message(request_json(mid, "GET", f"/bytes?n={size}&chunk=16384"))
        bodies: dict[str, bytes] = dict.fromkeys(sizes, b"")
        done: set[str] = set()
        sequence = []
        with trio.fail_after(30):
            while len(done) < len(sizes):
                frame = await read_frame(ws)
                mid = frame["message_id"]
                assert mid not in done, "a frame after done"
                sequence.append(mid)
                bodies[mid] += base64.b64decode(frame.get("data", ""))
                if frame["done"]:
                    done.add(mid)
    for mid, size in sizes.items():
        assert bodies[mid] == pattern(size), mid
    # Frames of different requests really interleaved.
    switches = sum(1 for a, b in itertools.pairwise(sequence) if a != b)
    assert switches > len(sizes)


async def test_client_leaving_cancels_backend_requests(
    proxy: str, fake_backend: FakeBackend
) -> None:
    tag = "leave-" + os.urandom(4).hex()
    async with connect(proxy) as ws:
        for i in range(3):
            await ws.send_message(request_json(i, "GET", f"/slow?delay=30&tag={tag}"))
        await wait_until(lambda: fake_backend.slow_active(tag) == 3, within=5)
    # The socket is closed: within a second the backend sees every request's connection go.
    await wait_until(lambda: fake_backend.slow_active(tag) == 0, within=1)


async def test_a_request_the_client_left_is_logged_as_499(
    proxy: str, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """A request in flight when the client cancels it, or closes its socket, has no answer:
    its access line says 499 (nginx's code for a client that left), as the reverse path's."""
    caplog.set_level("INFO", logger="trio_httpws.access")
    tag = "left-" + os.urandom(4).hex()
    async with connect(proxy) as ws:
        await ws.send_message(request_json("cancelled", "GET", f"/slow?delay=30&tag={tag}"))
        await ws.send_message(request_json("left", "GET", f"/slow?delay=30&tag={tag}"))
        await wait_until(lambda: fake_backend.slow_active(tag) == 2, within=5)
        await ws.send_message(json.dumps({"message_id": "cancelled", "cancel": True}))
        assert (await read_frame(ws))["status"] == 499
    await wait_until(lambda: fake_backend.slow_active(tag) == 0, within=5)
    lines = await access_lines(caplog, 3)
    tunnel = {line.fields["message_id"]: line for line in lines if line.fields["kind"] == "tunnel"}  # type: ignore[attr-defined]
    assert tunnel["cancelled"].fields["status"] == 499  # type: ignore[attr-defined]
    assert tunnel["left"].fields["status"] == 499  # type: ignore[attr-defined]
    assert "None" not in tunnel["left"].getMessage()


async def test_client_cancels_one_request(proxy: str, fake_backend: FakeBackend) -> None:
    tag = "cancel-" + os.urandom(4).hex()
    async with connect(proxy) as ws:
        await ws.send_message(request_json("slow", "GET", f"/slow?delay=30&tag={tag}"))
        await ws.send_message(request_json("other", "GET", "/slow?delay=0.3"))
        await wait_until(lambda: fake_backend.slow_active(tag) == 1, within=5)
        await ws.send_message(json.dumps({"message_id": "slow", "cancel": True}))
        frames = {}
        with trio.fail_after(5):
            while len(frames) < 2:
                frame = await read_frame(ws)
                assert frame["done"]
                frames[frame["message_id"]] = frame
    assert frames["slow"]["status"] == 499
    assert frames["other"]["status"] == 200
    assert base64.b64decode(frames["other"]["data"]) == b"slow"
    await wait_until(lambda: fake_backend.slow_active(tag) == 0, within=1)


async def test_backend_down_gives_502_and_recovers(door: str) -> None:
    # A port nobody listens on: grab one and close it.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    config = trio_httpws.Config(backend=f"http://127.0.0.1:{port}")
    async with running_proxy(config, door) as url, connect(url) as ws:
        response = await fetch(ws, "down", "GET", "/api/sessions")
        assert response.status == 502
        assert f"127.0.0.1:{port}" in response.first["statusText"]
        assert response.frames[0]["done"] is True
        assert (await http(url, "GET", "/api/sessions"))[0] == 502
        # The backend comes up on that port: the same socket, and the reverse proxy, get its
        # answers (no failure was remembered).
        backend = await trio.to_thread.run_sync(lambda: FakeBackend(port=port))
        try:
            again = await fetch(ws, "up", "GET", "/api/sessions")
            assert (again.status, again.body) == (200, b"ok")
            assert (await http(url, "GET", "/api/sessions"))[::2] == (200, b"ok")
        finally:
            await trio.to_thread.run_sync(backend.close)


async def test_backend_dies_mid_body_ends_with_error_frame(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "die", "GET", "/die-mid-body")
        after = await fetch(ws, "after", "GET", "/api/sessions")
    first, last = response.frames[0], response.frames[-1]
    assert first["status"] == 200
    assert last["done"] is True
    assert last["status"] == 502
    assert "truncated" in last["statusText"]
    # Every byte that arrived before the backend died, and no more.
    assert len(response.body) == 300_000, len(response.body)
    assert (after.status, after.body) == (200, b"ok")


async def test_slow_request_does_not_delay_others(proxy: str) -> None:
    async with connect(proxy) as ws:
        await ws.send_message(request_json("slow", "GET", "/slow?delay=3"))
        with trio.fail_after(2):
            response = await fetch(ws, "fast", "GET", "/api/sessions")
        assert response.status == 200
        assert (await read_response(ws, "slow")).body == b"slow"


async def test_read_timeout_gives_502(fake_backend: FakeBackend, door: str) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, read_timeout=0.3)
    async with running_proxy(config, door) as url, connect(url) as ws:
        response = await fetch(ws, "t", "GET", "/slow?delay=2")
    assert response.status == 502
    assert "sent nothing for 0.3s" in response.first["statusText"]


@pytest.mark.parametrize("limit", [2])
async def test_requests_over_the_limit_wait_and_complete(
    fake_backend: FakeBackend, limit: int, door: str
) -> None:
    tag = "limit-" + os.urandom(4).hex()
    config = trio_httpws.Config(backend=fake_backend.url, max_in_flight=limit)
    peak = 0
    async with running_proxy(config, door) as url, connect(url) as ws:
        for i in range(6):
            await ws.send_message(request_json(i, "GET", f"/slow?delay=0.2&tag={tag}"))
        done = 0
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, fake_backend.slow_active(tag))
                    await trio.sleep(0.005)

            nursery.start_soon(watch)
            with trio.fail_after(10):
                while done < 6:
                    frame = await read_frame(ws)
                    assert frame["status"] == 200
                    done += frame["done"]
            nursery.cancel_scope.cancel()
    assert peak == limit


async def test_programming_error_costs_one_request_not_the_socket(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture, door: str
) -> None:
    """An unexpected exception inside a request: a 500 frame and a logged stack, nothing more."""
    config = trio_httpws.Config(backend=fake_backend.url)
    calls = 0

    async def flaky_opener(backend: BackendURL) -> trio.abc.Stream:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("expected programming error")
        return await trio.open_tcp_stream(backend.host, backend.port)

    proxy = Proxy(config, BackendPool(config.backend_url, opener=flaky_opener))
    async with trio.open_nursery() as nursery:
        if door == "hypercorn":
            app = TrioHttpWsApp(config, proxy)
            [url] = await nursery.start(hypercorn_serve, app, hypercorn_config(config))
        else:
            port = await nursery.start(serve_door, proxy, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{port}"
        async with connect(url) as ws:
            broken = await fetch(ws, "a", "GET", "/api/sessions")
            fine = await fetch(ws, "b", "GET", "/api/sessions")
        nursery.cancel_scope.cancel()
    assert broken.frames == [
        {
            "done": True,
            "status": 500,
            "statusText": "Uncaught server-side exception. Check logs for additional details.",
            "message_id": "a",
        }
    ]
    assert (fine.status, fine.body) == (200, b"ok")
    [record] = [r for r in caplog.records if "Uncaught error" in r.getMessage()]
    assert record.exc_info is not None
    assert "expected programming error" in str(record.exc_info[1])


class _GatedSocket(FakeSocket):
    """A client socket whose first send waits for ``gate``: a frame being written, held there."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.writing = trio.Event()

    async def send(self, message: str | bytes) -> None:
        if not self.writing.is_set():
            self.writing.set()
            await self.gate.wait()
        await super().send(message)


class _TwoPiecesThenSilencePool:
    """A backend that sends two body pieces and then nothing more."""

    @asynccontextmanager
    async def request(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        class Response:
            status, reason = 200, "OK"
            headers: list[tuple[bytes, bytes]] = []  # noqa: RUF012

            async def iter_pieces(self, limit: int) -> AsyncIterator[bytes]:
                yield b"first"
                yield b"second"
                await trio.sleep_forever()

        yield Response()


async def test_cancel_while_a_request_writes_its_own_frame_waits_for_the_frame() -> None:
    # With nothing queued, a request task writes its frame to the socket itself. A cancel that
    # lands meanwhile must not cut that write short (trio-websocket would leave half a frame on
    # the socket, breaking it for every other request): the frame goes out whole, then the 499.
    upgrade = Upgrade("ws", "/http_over_websocket", "", [(b"host", b"localhost")])
    sock = _GatedSocket()
    session = HttpOverWsSession(
        sock,  # type: ignore[arg-type]
        upgrade,
        trio_httpws.Config(),
        _TwoPiecesThenSilencePool(),  # type: ignore[arg-type]
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            sock.inbox.send_nowait(request_json("r", "GET", "/"))
            await sock.writing.wait()
            sock.inbox.send_nowait(json.dumps({"message_id": "r", "cancel": True}))
            await trio.testing.wait_all_tasks_blocked()
            sock.gate.set()
            await sock.wait_finals(1)
            sock.inbox.close()
    first, final = sock.sent
    assert (first["status"], first["done"]) == (200, False)
    assert base64.b64decode(first["data"]) == b"first"
    assert (final["status"], final["done"]) == (499, True)
