"""A hung test fails alone.

pytest-timeout (pyproject.toml) stops a hung test, but its exception arrives from a signal in
the middle of trio's run loop, which leaves trio unusable for every later test. So each trio
test also gets a watchdog that fails it through trio (cancelling it cleanly) a little before:
pytest-timeout, set to kill the process, is only the backstop for a loop that is blocked.
tests/conftest.py wraps every trio test with it at collection.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio


def timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout"))


def with_watchdog(test: Callable[..., Awaitable[None]], limit: float) -> Callable[..., Any]:
    """``test``, failed with TimeoutError (its tasks cancelled) after ``limit`` real seconds."""

    @functools.wraps(test)
    async def watched(*args: Any, **kwargs: Any) -> None:
        finished = threading.Event()

        async def watchdog() -> None:
            # Real seconds, in a thread: a test on trio's autojump clock skips virtual time.
            if not await trio.to_thread.run_sync(finished.wait, limit, abandon_on_cancel=True):
                raise TimeoutError(f"test still running after {limit:g} s: cancelled")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            try:
                await test(*args, **kwargs)
            finally:
                finished.set()

    return watched
