"""A proxy on 127.0.0.1 for a test: on each door, or as the trio-websocket handler; and waiting
for what it does."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket

import trio_httpws

#: The servers a proxy runs under in the tests: every I/O test runs on each (the ``door`` fixture).
DOORS = ("hypercorn", "trio")


#: The Server header each door writes on every answer (in place of the backend's).
SERVER_NAMES = {"hypercorn": "hypercorn-h11", "trio": "trio-httpws"}


@asynccontextmanager
async def running_proxy(
    config: trio_httpws.Config, door: str = "hypercorn", **kwargs: Any
) -> AsyncIterator[str]:
    """Serve ``config`` on 127.0.0.1 with ``door``; yields ``http://127.0.0.1:PORT``."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(trio_httpws.serve, config, "127.0.0.1", 0, server=door, **kwargs)
        )
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_handler_proxy(config: trio_httpws.Config) -> AsyncIterator[str]:
    """The WebSocket endpoints only: ``trio_httpws.handler`` on a trio-websocket server."""
    proxy = trio_httpws.Proxy(config)
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    trio_httpws.handler(config, proxy=proxy),
                    "127.0.0.1",
                    0,
                    ssl_context=None,
                )
            )
            yield f"http://127.0.0.1:{server.port}"
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await proxy.aclose()


ALLOWED_ORIGIN = "http://www.examplewhitelistedorigin.com"


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` (state owned by another thread, e.g. the fake backend) until true."""
    with trio.fail_after(within):
        while True:
            if predicate():
                return
            await trio.sleep(0.005)


async def access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    """The access lines, once ``count`` are there: the server logs after the client has its answer."""
    with trio.fail_after(15):
        while True:
            lines = [r for r in caplog.records if r.name == "trio_httpws.access"]
            if len(lines) >= count:
                return lines
            await trio.sleep(0.01)
