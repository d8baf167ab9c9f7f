"""Graceful shutdown: cancelling serve() lets in-flight work finish, then closes with 1001."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio_websocket

import trio_httpws

from .conftest import connect, read_frame, request_json, wait_until
from .fake_backend import FakeBackend


async def test_cancelling_serve_finishes_requests_then_closes_with_1001(
    fake_backend: FakeBackend,
) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, shutdown_timeout=5)
    async with trio.open_nursery() as outer:
        server = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[int]) -> None:
            with server:
                await trio_httpws.serve(config, task_status=task_status)

        port = await outer.start(run_server)
        base = f"http://127.0.0.1:{port}"
        async with (
            connect(base) as ws,
            connect(base, "/http_over_websocket/proxied_ws/plain-echo-ws") as relay,
        ):
            await relay.send_message("before")
            assert await relay.get_message() == "before"
            await ws.send_message(request_json("inflight", "GET", "/slow?delay=0.5&tag=sd1"))
            await wait_until(lambda: fake_backend.slow_active("sd1") == 1)
            server.cancel()
            with trio.fail_after(5):
                frame = await read_frame(ws)
                # The in-flight request finished within the grace period...
                assert (frame["message_id"], frame["status"], frame["done"]) == (
                    "inflight",
                    200,
                    True,
                )
                # ...then the socket was closed as "going away".
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason is not None
                assert info.value.reason.code == 1001
                with pytest.raises(trio_websocket.ConnectionClosed) as relay_info:
                    await relay.get_message()
                assert relay_info.value.reason is not None
                assert relay_info.value.reason.code == 1001
    # And the listener is gone.
    with pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream("127.0.0.1", port)


async def drain(ws: trio_websocket.WebSocketConnection) -> None:
    while True:
        await ws.get_message()


async def test_shutdown_deadline_cancels_stuck_requests(fake_backend: FakeBackend) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, shutdown_timeout=0.3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(trio_httpws.serve, config))
        async with connect(f"http://127.0.0.1:{port}") as ws:
            await ws.send_message(request_json("stuck", "GET", "/slow?delay=30&tag=sd2"))
            await wait_until(lambda: fake_backend.slow_active("sd2") == 1)
            nursery.cancel_scope.cancel()
            # A 30 s request does not hold the shutdown past its 0.3 s grace period.
            with pytest.raises(trio_websocket.ConnectionClosed) as info, trio.fail_after(5):
                await drain(ws)
            assert info.value.reason is not None
            assert info.value.reason.code == 1001
        # The stuck backend request was cancelled, its connection closed.
        await wait_until(lambda: fake_backend.slow_active("sd2") == 0, within=2)
