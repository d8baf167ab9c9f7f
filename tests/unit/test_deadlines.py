"""Every wait on the backend has a deadline, and a socket's memory has a stated bound.

Socket-free where time matters (``autojump_clock``): the session and the relay run against the
``ClientSocket``/``PendingSocket`` seam and a backend pool whose opener hands out memory streams
to a scripted backend that stalls at the point under test. The bounds that need the fake backend
on a real socket are in tests/proxy/test_deadlines.py.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import pytest
import trio
import trio.testing
import wsproto
import wsproto.events as wse

import trio_httpws
from trio_httpws._backend import BackendPool
from trio_httpws._config import BackendURL
from trio_httpws._relay import CLOSE_TIMEOUT, relay
from trio_httpws._session import HttpOverWsSession
from trio_httpws._socket import Upgrade

from ..support.fake_backend import pattern
from ..support.fake_socket import UPGRADE, FakePending, FakeSocket
from ..support.ws import request_json

BACKEND = BackendURL("http", "backend.test", 80)
Server = Callable[[trio.abc.Stream], Awaitable[None]]
MiB = 1024 * 1024


def memory_pool(nursery: trio.Nursery, server: Server, **kwargs: Any) -> BackendPool:
    async def opener(backend: BackendURL) -> trio.abc.Stream:
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server, server_end)
        return client

    return BackendPool(BACKEND, opener=opener, **kwargs)


async def read_request(stream: trio.abc.Stream, conn: h11.Connection) -> h11.Request:
    request = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request


# -- the WebSocket relay -----------------------------------------------------------------------


async def test_relay_handshake_that_never_answers_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)  # the upgrade request, never answered
        await trio.sleep_forever()

    sock = FakeSocket()
    config = trio_httpws.Config(read_timeout=7)
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, silent)
        start = trio.current_time()
        await relay(
            FakePending(sock), UPGRADE, "/api/kernels/k/channels", config, pool, tunnelled=True
        )
        assert trio.current_time() - start == pytest.approx(7)
        assert sock.closed == (4504, "Gateway Timeout: backend handshake timed out")
        nursery.cancel_scope.cancel()


async def test_relay_close_that_is_never_answered_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The client leaves; the backend accepted the WebSocket but never answers our close."""
    backend_closed = trio.Event()

    async def accepts_then_ignores(stream: trio.abc.Stream) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        ws.receive_data(await stream.receive_some(65536))
        for event in ws.events():
            if isinstance(event, wse.Request):
                await stream.send_all(ws.send(wse.AcceptConnection()))
        try:
            while await stream.receive_some(65536):
                pass  # read (so our close frame is sent) but never answer it
        except trio.ClosedResourceError:
            pass
        backend_closed.set()

    sock = FakeSocket()
    sock.inbox.close()  # the client is gone at once
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, accepts_then_ignores)
        start = trio.current_time()
        await relay(FakePending(sock), UPGRADE, "/ws", trio_httpws.Config(), pool, tunnelled=True)
        assert trio.current_time() - start == pytest.approx(CLOSE_TIMEOUT)
        await backend_closed.wait()  # our end of the backend stream was closed, not leaked


# -- the session: auth URL and connection slots ------------------------------------------------


async def test_auth_url_fetch_as_a_whole_has_a_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A backend trickling the auth page a byte every few seconds never trips read_timeout."""

    async def trickle(stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        await read_request(stream, conn)
        headers = [("Content-Length", "100000")]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
        try:
            while True:
                await trio.sleep(5)
                await stream.send_all(conn.send(h11.Data(data=b"x")) or b"")
        except trio.BrokenResourceError:
            return  # the proxy gave up and closed

    upgrade = Upgrade(
        "ws",
        "/http_over_websocket",
        "jupyter_http_over_ws_auth_url=http%3A%2F%2Flocalhost%2Fauth",
        [(b"host", b"localhost")],
    )
    sock = FakeSocket()
    config = trio_httpws.Config(read_timeout=10, auth_timeout=30)
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, trickle)
        nursery.start_soon(HttpOverWsSession(sock, upgrade, config, pool).run)
        start = trio.current_time()
        await sock.inbox.send(request_json("a", "GET", "/api"))
        await sock.got_frame.wait()
        assert trio.current_time() - start == pytest.approx(30)
        assert sock.sent == [
            {
                "done": True,
                "status": 500,
                "statusText": "Uncaught server-side exception. Check logs for additional details.",
                "message_id": "a",
            }
        ]
        nursery.cancel_scope.cancel()


async def test_no_free_connection_slot_is_a_503(autojump_clock: trio.testing.MockClock) -> None:
    async def never_answers(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await trio.sleep_forever()

    sock = FakeSocket()
    config = trio_httpws.Config(max_connections=1, pool_timeout=20)
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, never_answers, max_connections=1, pool_timeout=20)
        nursery.start_soon(HttpOverWsSession(sock, UPGRADE, config, pool).run)
        await sock.inbox.send(request_json("holds-the-slot", "GET", "/slow"))
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await sock.inbox.send(request_json("waits", "GET", "/api"))
        await sock.got_frame.wait()
        assert trio.current_time() - start == pytest.approx(20)
        [frame] = sock.sent
        assert (frame["message_id"], frame["status"]) == ("waits", 503)
        assert frame["statusText"].startswith("Service Unavailable: all 1 connections")
        nursery.cancel_scope.cancel()


# -- memory bounds -----------------------------------------------------------------------------


async def test_request_bytes_a_socket_holds_stay_within_max_pending_bytes() -> None:
    """Many large uploads to a backend that has not answered yet: the socket stops being read
    once its held bodies reach the budget, and every request completes when the backend does."""
    release = trio.Event()
    budget = 3 * MiB

    async def echo_when_released(stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            await release.wait()
            answer = [
                h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))]),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ]
            await stream.send_all(b"".join(conn.send(e) or b"" for e in answer))
            conn.start_next_cycle()

    sock = FakeSocket()
    # Parsed on the event loop, so wait_all_tasks_blocked sees the reader's real state.
    config = trio_httpws.Config(max_pending_bytes=budget, thread_parse_threshold=64 * MiB)
    bodies = {f"up{i}": pattern(MiB + i) for i in range(20)}
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, echo_when_released)
        session = HttpOverWsSession(sock, UPGRADE, config, pool)
        nursery.start_soon(session.run)
        for mid, body in bodies.items():
            await sock.inbox.send(
                request_json(mid, "POST", "/echo", body_base64=base64.b64encode(body).decode())
            )
        await trio.testing.wait_all_tasks_blocked()
        # Backpressure, not an error: the reader stopped with messages still unread.
        assert session.pending_request_bytes <= budget
        # Two bodies of ~1 MiB fit in 3 MiB; the reader holds the third until one finishes.
        assert session.pending_request_bytes == 2 * MiB + 1
        assert sock.inbox.statistics().current_buffer_used == 17
        assert sock.sent == []
        release.set()
        with trio.fail_after(10):
            await sock.wait_finals(20)
        await trio.testing.wait_all_tasks_blocked()  # the last task's cleanup runs after its frame
        assert session.peak_pending_request_bytes <= budget
        assert session.pending_request_bytes == 0
        for mid, body in bodies.items():
            frames = [f for f in sock.sent if f["message_id"] == mid]
            assert frames[0]["status"] == 200
            assert b"".join(base64.b64decode(f.get("data", "")) for f in frames) == body
        nursery.cancel_scope.cancel()


# -- settings ----------------------------------------------------------------------------------


# Each is read from its TRIO_HTTPWS_* variable and flag: tests/e2e/test_cli.py (SAMPLES).


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_pending_bytes", 0, "max_pending_bytes must be at least 1"),
        ("write_timeout", 0, "write_timeout must be positive"),
        ("pool_timeout", -1, "pool_timeout must be positive"),
        ("auth_timeout", float("nan"), "auth_timeout must be positive"),
        ("thread_parse_threshold", -1, "thread_parse_threshold must be 0 or more"),
    ],
)
def test_deadline_and_bound_settings_are_validated(field: str, value: float, message: str) -> None:
    with pytest.raises(trio_httpws.ConfigError, match=message):
        trio_httpws.Config(**{field: value})  # type: ignore[arg-type]
