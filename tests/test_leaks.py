"""Nothing leaks: when a client leaves mid-request, every task, socket and fd it caused is gone."""

from __future__ import annotations

import os

import trio
import trio.testing
from hypercorn.trio import serve as hypercorn_serve

import trio_httpws
from trio_httpws._asgi import TrioHttpWsApp
from trio_httpws._proxy import Proxy
from trio_httpws._serve import hypercorn_config

from .conftest import connect, fetch, request_json, wait_until
from .fake_backend import FakeBackend


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


async def test_client_leaving_mid_request_leaves_no_task_socket_or_fd(
    fake_backend: FakeBackend,
) -> None:
    config = trio_httpws.Config(backend=fake_backend.url)
    proxy = Proxy(config)
    tag = "leak-" + os.urandom(4).hex()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            hypercorn_serve, TrioHttpWsApp(config, proxy), hypercorn_config(config)
        )
        base = binds[0]
        # hypercorn reports its port before starting its accept tasks: let them start.
        await trio.testing.wait_all_tasks_blocked()
        tasks_idle = count_tasks()
        # Warm up: one finished request leaves one idle keep-alive connection in the pool.
        async with connect(base) as ws:
            assert (await fetch(ws, "warm", "GET", "/api/sessions")).status == 200
        await wait_until(lambda: count_tasks() <= tasks_idle)
        fds_idle = count_fds()
        assert proxy.pool.idle_count == 1

        async with connect(base) as ws:
            for i in range(5):
                await ws.send_message(request_json(i, "GET", f"/slow?delay=30&tag={tag}"))
            await wait_until(lambda: fake_backend.slow_active(tag) == 5)
            assert count_tasks() > tasks_idle
            assert count_fds() > fds_idle

        # Within a second the backend sees every request's connection closed...
        await wait_until(lambda: fake_backend.slow_active(tag) == 0, within=1)
        # ...and every task, socket and file descriptor the socket caused is gone.
        await wait_until(lambda: count_tasks() <= tasks_idle and count_fds() <= fds_idle, within=2)
        # The five cancelled requests' connections (the warm one reused, four new) were
        # discarded, not pooled.
        assert proxy.pool.opened == 5
        assert proxy.pool.idle_count == 0
        nursery.cancel_scope.cancel()
    await proxy.aclose()
