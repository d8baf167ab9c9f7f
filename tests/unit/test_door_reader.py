"""The own door's reader: the connection's task reads for itself, a helper task watches the
client only while a request has been at the backend for ``WATCH_AFTER``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import trio
import trio.testing

from trio_httpws._door import WATCH_AFTER, _Reader

HEAD = b"GET /next HTTP/1.1\r\nHost: example\r\n\r\n"


@asynccontextmanager
async def reading(limit: int = 65536) -> AsyncIterator[tuple[trio.abc.SendStream, _Reader]]:
    """A reader on one end of an in-memory connection, its helper running; the other end."""
    client, server = trio.testing.memory_stream_pair()
    reader = _Reader(server, h11.Connection(h11.SERVER), limit)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.run)
        yield client, reader
        await reader.stop()


async def test_a_read_ahead_the_end_of_an_exchange_could_not_take_back_is_what_more_gives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The helper's read was already answered when the exchange ended (disarm): those bytes are
    the next head, and the connection's task must not wait for more the client never sends."""
    async with reading() as (client, reader):
        with trio.CancelScope() as exchange:
            reader.arm(exchange)
            await trio.sleep(2 * WATCH_AFTER)
            await trio.testing.wait_all_tasks_blocked()  # the helper waits on the client
            await client.send_all(HEAD)  # wakes the helper's read; nothing else runs yet
            reader.disarm()
            with trio.fail_after(10):
                assert await reader.more() == len(HEAD)
        assert not exchange.cancelled_caught
        assert reader._h11.next_event() == h11.Request(
            method="GET", target="/next", headers=[("Host", "example")]
        )


async def test_a_quick_exchange_leaves_the_client_to_the_connections_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with reading() as (client, reader):
        with trio.CancelScope() as exchange:
            reader.arm(exchange)
            await trio.sleep(WATCH_AFTER / 2)
            await client.send_all(HEAD)
            await trio.testing.wait_all_tasks_blocked()
            reader.disarm()
        assert reader._h11.trailing_data == (b"", False)  # the helper read nothing
        assert await reader.more() == len(HEAD)


async def test_a_client_that_leaves_a_slow_exchange_cancels_it_and_ends_the_helper() -> None:
    async with reading() as (client, reader):
        with trio.CancelScope() as exchange:
            reader.arm(exchange)
            await client.aclose()
            with trio.fail_after(5):
                await trio.sleep_forever()  # cancelled by the helper once it watches
        assert exchange.cancelled_caught
        assert reader.closed
        # Still armed: the helper has nothing left to read and must not spin meanwhile.
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        assert await reader.more() == 0
        reader.disarm()


async def test_the_helper_reads_ahead_no_more_than_the_head_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with reading(limit=100) as (client, reader):
        with trio.CancelScope() as exchange:
            reader.arm(exchange)
            await trio.sleep(2 * WATCH_AFTER)
            await client.send_all(b"x" * 1000)
            await trio.testing.wait_all_tasks_blocked()
            assert len(reader._h11.trailing_data[0]) == 101
            reader.disarm()
        assert not exchange.cancelled_caught
