"""A socket's memory has a stated bound, and one huge message does not stall the others: the
session against the tornado fake backend on a real socket, and once through hypercorn.

The deadlines themselves, where time matters, are in tests/unit/test_deadlines.py.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import trio

import trio_httpws
from trio_httpws import _session
from trio_httpws._backend import BackendPool
from trio_httpws._parts import MessageAssembler
from trio_httpws._session import HttpOverWsSession, response_buffer_bound

from ..support.fake_backend import FakeBackend, pattern
from ..support.fake_socket import UPGRADE, FakeSocket
from ..support.proxies import running_proxy
from ..support.ws import Response, connect, read_frame, request_json

MiB = 1024 * 1024


async def test_paused_reader_bounds_the_response_bytes_a_socket_holds(
    fake_backend: FakeBackend,
) -> None:
    """A client that stops reading while downloading 4 x 40 MB: the session holds no more than
    response_buffer_bound, and stops reading the backend (TCP pushes back)."""
    sock = FakeSocket(paused=True)
    config = trio_httpws.Config(backend=fake_backend.url, max_in_flight=4)
    pool = BackendPool(config.backend_url)
    session = HttpOverWsSession(sock, UPGRADE, config, pool)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        for i in range(4):
            await sock.inbox.send(request_json(f"d{i}", "GET", "/bytes?n=40000000"))
        # Wait until the session is full and has stayed so: nothing more comes in.
        with trio.fail_after(20):
            last = -1
            while session.buffered_response_bytes != last:
                last = session.buffered_response_bytes
                await trio.sleep(0.3)
        assert 0 < session.peak_buffered_response_bytes <= response_buffer_bound(4)
        nursery.cancel_scope.cancel()
    await pool.aclose()


# -- one huge message does not stall the others ------------------------------------------------


async def test_large_message_parsed_in_a_thread_is_byte_exact(fake_backend: FakeBackend) -> None:
    sock = FakeSocket()
    config = trio_httpws.Config(backend=fake_backend.url, thread_parse_threshold=1000)
    pool = BackendPool(config.backend_url)
    session = HttpOverWsSession(sock, UPGRADE, config, pool)
    body = pattern(3 * MiB + 5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await sock.inbox.send(
            request_json("big", "POST", "/echo", body_base64=base64.b64encode(body).decode())
        )
        await sock.inbox.send(request_json("small", "GET", "/api/sessions"))
        with trio.fail_after(20):
            await sock.wait_finals(2)
        nursery.cancel_scope.cancel()
    await pool.aclose()
    assert session.thread_parses == 1  # the big one only
    frames = [f for f in sock.sent if f["message_id"] == "big"]
    assert frames[0]["status"] == 200
    assert b"".join(base64.b64decode(f.get("data", "")) for f in frames) == body


async def test_large_message_through_hypercorn_comes_in_parts_and_is_byte_exact(
    fake_backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assemblers: list[MessageAssembler] = []

    class Recorded(MessageAssembler):
        def __init__(self) -> None:
            super().__init__()
            assemblers.append(self)

    monkeypatch.setattr(_session, "MessageAssembler", Recorded)
    body = pattern(5 * MiB + 1)
    config = trio_httpws.Config(backend=fake_backend.url)
    with trio.fail_after(30):
        async with running_proxy(config) as url, connect(url) as ws:
            big = request_json("big", "POST", "/echo", body_base64=base64.b64encode(body).decode())
            await ws.send_message(big)
            await ws.send_message(request_json("small", "GET", "/api/sessions"))
            frames: dict[str, list[dict[str, Any]]] = {"big": [], "small": []}
            while not all(f and f[-1]["done"] for f in frames.values()):
                frame = await read_frame(ws)
                frames[frame["message_id"]].append(frame)
    assert Response(frames["small"]).status == 200
    assert (Response(frames["big"]).status, Response(frames["big"]).body) == (200, body)
    assert len(assemblers) == 1
    assert not assemblers[0].fell_back
