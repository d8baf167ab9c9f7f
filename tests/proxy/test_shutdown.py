"""Graceful shutdown: cancelling serve() lets in-flight work finish, then closes with 1001.

Also with a real kernel running a cell, its output flowing through both kinds of relay.
"""

from __future__ import annotations

import json
import urllib.request
from functools import partial
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
import trio_websocket

import trio_httpws
from trio_httpws.client import execute_request

from ..support.fake_backend import FakeBackend
from ..support.jupyter import Jupyter
from ..support.proxies import wait_until
from ..support.ws import connect, fetch, read_frame, request_json

COLAB = "https://colab.research.google.com"


async def test_cancelling_serve_finishes_requests_then_closes_with_1001(
    fake_backend: FakeBackend, door: str
) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, shutdown_timeout=5)
    async with trio.open_nursery() as outer:
        server = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[int]) -> None:
            with server:
                await trio_httpws.serve(config, server=door, task_status=task_status)

        port = await outer.start(run_server)
        base = f"http://127.0.0.1:{port}"
        async with (
            connect(base) as ws,
            connect(base, "/http_over_websocket/proxied_ws/plain-echo-ws") as relay,
            connect(base, "/plain-echo-ws") as plain,
            await trio.open_tcp_stream("127.0.0.1", port) as idle,
            await trio.open_tcp_stream("127.0.0.1", port) as busy,
        ):
            await relay.send_message("before")
            assert await relay.get_message() == "before"
            await plain.send_message("before")
            assert await plain.get_message() == "before"
            # A keep-alive connection idle after one answer, and a plain request in flight.
            host = f"Host: 127.0.0.1:{port}\r\n"
            await idle.send_all(f"GET /api/sessions HTTP/1.1\r\n{host}\r\n".encode())
            first = b""
            while not first.endswith(b"ok"):
                first += await idle.receive_some(65536)
            await busy.send_all(f"GET /slow?delay=0.5&tag=sd2 HTTP/1.1\r\n{host}\r\n".encode())
            await ws.send_message(request_json("inflight", "GET", "/slow?delay=0.5&tag=sd1"))
            await wait_until(lambda: fake_backend.slow_active("sd1") == 1)
            await wait_until(lambda: fake_backend.slow_active("sd2") == 1)
            server.cancel()
            with trio.fail_after(5):
                # The idle connection is closed at once (hypercorn too), the busy one answered.
                assert await idle.receive_some(65536) == b""
                answer = b""
                while not answer.endswith(b"slow"):
                    chunk = await busy.receive_some(65536)
                    assert chunk, answer
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200 ")
                if door == "trio":
                    assert b"\r\nconnection: close\r\n" in answer.lower()
                with pytest.raises(trio_websocket.ConnectionClosed) as plain_info:
                    await plain.get_message()
                assert plain_info.value.reason is not None
                assert plain_info.value.reason.code == 1001
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


async def test_shutdown_deadline_cancels_stuck_requests(
    fake_backend: FakeBackend, door: str
) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, shutdown_timeout=0.3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(trio_httpws.serve, config, server=door))
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


# -- with a real kernel running a cell ---------------------------------------------------------


def jupyter_api(jupyter: Jupyter, method: str, path: str, body: Any = None) -> Any:
    """One Jupyter REST call with the token, straight to Jupyter (blocking: run in a thread)."""
    request = urllib.request.Request(
        f"{jupyter.url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {jupyter.token}"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


async def output_of(ws: trio_websocket.WebSocketConnection, msg_id: str) -> str:
    """The first stdout text the cell ``msg_id`` printed, as seen on this socket."""
    while True:
        message = json.loads(await ws.get_message())
        if (
            message.get("parent_header", {}).get("msg_id") == msg_id
            and message["msg_type"] == "stream"
        ):
            text: str = message["content"]["text"]
            return text


async def close_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    """Read (and drop) messages until the server closes the socket; its close code."""
    with pytest.raises(trio_websocket.ConnectionClosed) as info:
        await drain(ws)
    return info.value.reason.code if info.value.reason is not None else None


LONG_CELL = (
    "import time\nfor i in range(1200):\n    print('tick', i, flush=True)\n    time.sleep(0.05)"
)


async def test_shutdown_with_a_kernel_running_a_cell(jupyter: Jupyter, door: str) -> None:
    config = trio_httpws.Config(backend=jupyter.url, shutdown_timeout=1)
    kernel = await trio.to_thread.run_sync(jupyter_api, jupyter, "POST", "/api/kernels", {})
    channels = f"/api/kernels/{kernel['id']}/channels"
    try:
        async with trio.open_nursery() as outer:
            server = trio.CancelScope()

            async def run_server(task_status: trio.TaskStatus[int]) -> None:
                with server:
                    await trio_httpws.serve(config, server=door, task_status=task_status)

            port = await outer.start(run_server)
            base = f"http://127.0.0.1:{port}"
            auth = urlencode({"jupyter_http_over_ws_auth_url": f"{base}/?token={jupyter.token}"})
            colab = [("Origin", COLAB)]
            async with (
                connect(base, f"/http_over_websocket?{auth}", headers=colab) as tunnel,
                connect(base, f"/http_over_websocket/proxied_ws{channels}?{auth}") as proxied,
                connect(base, f"{channels}?token={jupyter.token}") as plain,
            ):
                # A cell printing for a minute: both relays carry its output.
                msg_id, message = execute_request(LONG_CELL)
                await proxied.send_message(message)
                with trio.fail_after(60):
                    assert (await output_of(proxied, msg_id)).startswith("tick")
                    assert (await output_of(plain, msg_id)).startswith("tick")
                response = await fetch(tunnel, "k", "GET", f"/api/kernels/{kernel['id']}")
                assert json.loads(response.body)["execution_state"] == "busy"

                server.cancel()
                # Busy relays do not hold the shutdown: every socket closes as "going away"
                # after the 1 s grace, while the cell still runs.
                with trio.fail_after(10):
                    for ws in (tunnel, proxied, plain):
                        assert await close_code(ws) == 1001
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", port)
        # The proxy stopping is not Jupyter stopping: the kernel lives on, still running it.
        model = await trio.to_thread.run_sync(
            jupyter_api, jupyter, "GET", f"/api/kernels/{kernel['id']}"
        )
        assert model["execution_state"] == "busy"
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(
                jupyter_api, jupyter, "DELETE", f"/api/kernels/{kernel['id']}"
            )
