"""Nothing leaks: when a client leaves (tunnel, relay, reverse HTTP), every task, socket and fd
it caused is gone, on each door."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import h11
import pytest
import trio
import trio.testing
import wsproto.events as wse
from hypercorn.trio import serve as hypercorn_serve

import trio_httpws
from trio_httpws._asgi import TrioHttpWsApp
from trio_httpws._door import serve_door
from trio_httpws._outcome import Outcome
from trio_httpws._proxy import Proxy
from trio_httpws._serve import hypercorn_config
from trio_httpws._stats import OUTCOMES, WsKind

from ..support._http import http
from ..support.fake_backend import FakeBackend
from ..support.proxies import access_lines, running_handler_proxy, wait_until
from ..support.raw_backend import NeverAnswers, raw_backend
from ..support.ws import connect, fetch, port_of, raw_websocket, request_json


def count_tasks() -> int:
    """Every task of this trio run, found by walking the task tree from the root."""
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Served:
    """A proxy on a door, after one finished request, and what it held then."""

    base: str
    proxy: Proxy
    tasks_idle: int
    fds_idle: int

    async def back_to_idle(self) -> None:
        await wait_until(
            lambda: count_tasks() <= self.tasks_idle and count_fds() <= self.fds_idle, within=2
        )


@asynccontextmanager
async def on_door(proxy: Proxy, door: str) -> AsyncIterator[str]:
    """``proxy`` served on ``door`` on 127.0.0.1; yields its base URL once the door is idle."""
    config = proxy.config
    async with trio.open_nursery() as nursery:
        if door == "hypercorn":
            binds = await nursery.start(
                hypercorn_serve, TrioHttpWsApp(config, proxy), hypercorn_config(config)
            )
            base = binds[0]
        else:
            base = f"http://127.0.0.1:{await nursery.start(serve_door, proxy, '127.0.0.1', 0)}"
        # hypercorn reports its port before starting its accept tasks: let them start.
        await trio.testing.wait_all_tasks_blocked()
        yield base
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def served(fake_backend: FakeBackend, door: str) -> AsyncIterator[Served]:
    """The proxy on ``door``, with the ``Proxy`` object in hand to look into its pool."""
    proxy = Proxy(trio_httpws.Config(backend=fake_backend.url))
    async with on_door(proxy, door) as base:
        tasks_idle = count_tasks()
        # Warm up: one finished request leaves one idle keep-alive connection in the pool.
        async with connect(base) as ws:
            assert (await fetch(ws, "warm", "GET", "/api/sessions")).status == 200
        await wait_until(lambda: count_tasks() <= tasks_idle)
        assert proxy.pool.idle_count == 1
        yield Served(base, proxy, tasks_idle, count_fds())
    await proxy.aclose()


async def test_client_leaving_mid_request_leaves_no_task_socket_or_fd(
    fake_backend: FakeBackend,
    door: str,
) -> None:
    tag = "leak-" + os.urandom(4).hex()
    async with served(fake_backend, door) as s:
        async with connect(s.base) as ws:
            for i in range(5):
                await ws.send_message(request_json(i, "GET", f"/slow?delay=30&tag={tag}"))
            await wait_until(lambda: fake_backend.slow_active(tag) == 5)
            assert count_tasks() > s.tasks_idle
            assert count_fds() > s.fds_idle

        # Within a second the backend sees every request's connection closed...
        await wait_until(lambda: fake_backend.slow_active(tag) == 0, within=1)
        # ...and every task, socket and file descriptor the socket caused is gone.
        await s.back_to_idle()
        # The five cancelled requests' connections (the warm one reused, four new) were
        # discarded, not pooled.
        assert s.proxy.pool.opened == 5
        assert s.proxy.pool.idle_count == 0


@pytest.mark.parametrize("how", ["closes", "drops"])
@pytest.mark.parametrize(
    "path",
    ["/http_over_websocket/proxied_ws/counted-echo-ws", "/counted-echo-ws"],
    ids=["proxied_ws", "plain"],
)
async def test_relay_client_leaving_leaves_no_task_socket_or_fd(
    fake_backend: FakeBackend, door: str, path: str, how: str
) -> None:
    async with served(fake_backend, door) as s:
        async with raw_websocket(s.base) as raw:
            assert await raw.handshake(f"127.0.0.1:{port_of(s.base)}", path) == 101
            await raw.send(wse.TextMessage("ping"))
            event = await raw.next_event()
            assert isinstance(event, wse.TextMessage)
            assert event.data == "ping"
            assert fake_backend.websockets_open == 1
            assert count_tasks() > s.tasks_idle
            assert count_fds() > s.fds_idle
            if how == "closes":
                await raw.send(wse.CloseConnection(code=1000))
                event = await raw.next_event()
                assert isinstance(event, wse.CloseConnection)
                assert event.code == 1000
            # "drops": the TCP connection just goes, without a closing handshake.
        # The backend's WebSocket is closed too, and nothing of the relay is left.
        await wait_until(lambda: fake_backend.websockets_open == 0, within=2)
        await s.back_to_idle()
        # A relay has a connection of its own, never the pool's.
        assert s.proxy.pool.idle_count == 1


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/http_over_websocket/proxied_ws/api/kernels/k/channels", WsKind.PROXIED_WS),
        ("/api/kernels/k/channels", WsKind.RELAY),
    ],
    ids=["proxied_ws", "plain"],
)
async def test_a_client_that_leaves_before_the_backend_answers_the_upgrade_frees_both(
    door: str, path: str, kind: WsKind, caplog: pytest.LogCaptureFixture
) -> None:
    # Plain on the own door is the splice; everything else is a frame relay (_relay).
    caplog.set_level(logging.INFO, logger="trio_httpws")
    backend = NeverAnswers()
    async with raw_backend(backend) as url:
        proxy = Proxy(trio_httpws.Config(backend=url, read_timeout=300))
        async with on_door(proxy, door) as base:
            tasks_idle, fds_idle = count_tasks(), count_fds()
            async with raw_websocket(base) as raw:
                await raw.send(wse.Request(host=f"127.0.0.1:{port_of(base)}", target=path))
                with trio.fail_after(10):
                    await backend.asked.wait()
                assert count_tasks() > tasks_idle
            # The client is gone: the backend sees its connection closed (well before the
            # 300 s read_timeout), and nothing of the relay is left.
            with trio.fail_after(10):
                await backend.hung_up.wait()
            await wait_until(
                lambda: count_tasks() <= tasks_idle and count_fds() <= fds_idle, within=10
            )
            (line,) = await access_lines(caplog, 1)
        await proxy.aclose()
    assert backend.after_head == b""  # nothing went on past the upgrade head
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["kind"], fields["path"]) == ("ws", path)
    assert (fields["status"], fields["outcome"]) == (499, "client_left")
    assert fields["bytes"] == 0
    assert proxy.stats.ws_open[kind] == 0
    ended = proxy.stats.ws_ended[kind]
    assert ended[OUTCOMES.index(Outcome.CLIENT_LEFT)] == sum(ended) == 1


@pytest.mark.parametrize(
    "path",
    ["/http_over_websocket/proxied_ws/api/kernels/k/channels", "/api/kernels/k/channels"],
    ids=["proxied_ws", "plain"],
)
async def test_under_handler_a_client_that_leaves_before_the_backend_answers_frees_both(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_httpws")
    backend = NeverAnswers()
    async with (
        raw_backend(backend) as url,
        running_handler_proxy(trio_httpws.Config(backend=url, read_timeout=300)) as base,
    ):
        async with raw_websocket(base) as raw:
            await raw.send(wse.Request(host=f"127.0.0.1:{port_of(base)}", target=path))
            with trio.fail_after(10):
                await backend.asked.wait()
        with trio.fail_after(10):
            await backend.hung_up.wait()
        (line,) = await access_lines(caplog, 1)
    assert backend.after_head == b""
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["status"], fields["outcome"]) == (499, "client_left")


async def test_reverse_http_leaves_no_task_socket_or_fd(
    fake_backend: FakeBackend, door: str
) -> None:
    async with served(fake_backend, door) as s:
        # A finished request reuses the pooled connection and gives it back.
        assert (await http(s.base, "GET", "/api/sessions"))[::2] == (200, b"ok")
        await s.back_to_idle()
        assert (s.proxy.pool.opened, s.proxy.pool.idle_count) == (1, 1)

        # A client leaving mid-download: the rest is not read, the connection not pooled.
        async with open_get(s.base, "/bytes?n=200000000&chunk=65536") as (stream, conn):
            received = 0
            while received < 1_000_000:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Data):
                    received += len(event.data)
            assert count_tasks() > s.tasks_idle
        await s.back_to_idle()
        assert (s.proxy.pool.opened, s.proxy.pool.idle_count) == (1, 0)


async def test_reverse_http_client_leaving_before_the_response_cancels_it(
    fake_backend: FakeBackend,
    door: str,
) -> None:
    tag = "leak-" + os.urandom(4).hex()
    async with served(fake_backend, door) as s:
        async with open_get(s.base, f"/slow?delay=30&tag={tag}"):
            await wait_until(lambda: fake_backend.slow_active(tag) == 1)
            assert count_tasks() > s.tasks_idle
        # Within a second the backend sees the request's connection closed...
        await wait_until(lambda: fake_backend.slow_active(tag) == 0, within=1)
        # ...and nothing is left: its connection (the pooled one) was discarded, not pooled.
        await s.back_to_idle()
        assert (s.proxy.pool.opened, s.proxy.pool.idle_count) == (1, 0)


@asynccontextmanager
async def open_get(
    base: str, target: str
) -> AsyncIterator[tuple[trio.SocketStream, h11.Connection]]:
    """A GET sent on a connection of its own, which the client closes when the block ends."""
    async with await trio.open_tcp_stream("127.0.0.1", port_of(base)) as stream:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET", target=target, headers=[("Host", f"127.0.0.1:{port_of(base)}")]
        )
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        yield stream, conn
