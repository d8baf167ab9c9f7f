"""The hot path's socket stream: trio's stream contract, less a scheduler pass per call."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from trio_httpws._fastsocket import YIELD_EVERY, FastSocketStream


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        left = socket.create_connection(listener.getsockname())
        right, _ = listener.accept()
    return left, right


def _fast_pair(yield_every: int = YIELD_EVERY) -> tuple[FastSocketStream, FastSocketStream]:
    left, right = _tcp_pair()
    return (
        FastSocketStream(left, yield_every=yield_every),
        FastSocketStream(right, yield_every=yield_every),
    )


async def _fill(stream: FastSocketStream) -> None:
    """Send until the kernel's buffers are full (the sender blocks)."""

    async def sender() -> None:
        while True:
            await stream.send_all(b"x" * 10000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def test_with_a_pass_per_call_it_keeps_trios_whole_stream_contract() -> None:
    """trio's own conformance checks (checkpoints, EOF, closing, conflicts, clogging), run with
    a yield on every call: everything but the skipped passes is trio's SocketStream's."""

    async def pair() -> tuple[FastSocketStream, FastSocketStream]:
        return _fast_pair(yield_every=1)

    async def clogged() -> tuple[FastSocketStream, FastSocketStream]:
        left, right = await pair()
        await _fill(left)
        await _fill(right)
        return left, right

    await trio.testing.check_half_closeable_stream(pair, clogged)


@asynccontextmanager
async def _other_task_turns() -> AsyncIterator[Callable[[], int]]:
    """How many turns another task, always ready to run, has had so far."""
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await trio.lowlevel.checkpoint()
        yield lambda: turns
        nursery.cancel_scope.cancel()


async def test_calls_served_at_once_do_not_yield_until_a_run_of_them_is_long() -> None:
    left, right = _fast_pair()
    async with left, right:
        async with trio.open_nursery() as nursery:
            # A first receive that has to wait: the run of calls served at once starts after it.
            nursery.start_soon(right.receive_some, 1)
            await trio.testing.wait_all_tasks_blocked()
            await left.send_all(b"a" * 100)
        async with _other_task_turns() as turns:
            before = turns()
            for _ in range(YIELD_EVERY - 1):
                assert await right.receive_some(10) == b"a" * 10
            assert turns() == before  # nobody else ran: no call yielded


async def test_a_call_that_must_wait_is_a_full_checkpoint() -> None:
    left, right = _fast_pair()
    async with left, right:
        with trio.testing.assert_checkpoints():
            with trio.move_on_after(0.01):
                await right.receive_some(10)


async def test_a_cancelled_scope_stops_a_call_the_kernel_could_serve_and_loses_nothing() -> None:
    left, right = _fast_pair()
    async with left, right:
        await left.send_all(b"kept")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await right.receive_some(10)
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await right.send_all(b"never")
        assert scope.cancelled_caught
        assert await right.receive_some(10) == b"kept"
        with trio.move_on_after(0.05):
            assert await left.receive_some(10) != b"never"


async def test_a_flood_of_calls_served_at_once_leaves_other_tasks_their_turn() -> None:
    left, right = _fast_pair()
    async with left, right, _other_task_turns() as turns:
        before = turns()
        calls = 40 * YIELD_EVERY
        for _ in range(calls):
            await left.send_all(b"x")  # the kernel takes each at once: a 1-byte write
        # About one turn per YIELD_EVERY calls: trio's scheduler shuffles the tasks that are
        # ready, so a turn more or less either way.
        assert calls // YIELD_EVERY - 1 <= turns() - before <= calls // YIELD_EVERY + 2


async def test_taking_over_a_trio_stream_keeps_its_connection() -> None:
    left, right = _tcp_pair()
    trio_stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
    fast = FastSocketStream.taking_over(trio_stream)
    async with fast, FastSocketStream(right) as peer:
        assert trio_stream.socket.fileno() == -1  # the old one is no longer the owner
        await fast.send_all(b"ping")
        assert await peer.receive_some(10) == b"ping"
        assert fast.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_a_peer_that_resets_gives_broken_resource_error() -> None:
    left, right = _tcp_pair()
    # SO_LINGER 0: close sends a reset, as a client that crashed.
    right.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    right.close()
    async with FastSocketStream(left) as stream:
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some(10)


async def test_taking_over_a_connected_stream_after_trio_waited_on_it() -> None:
    """The pool's path: trio.open_tcp_stream waited on the socket (connect) before the takeover;
    the fd's old registration with trio's I/O manager must not get in the way."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        trio_stream = await trio.open_tcp_stream("127.0.0.1", port)
        fast = FastSocketStream.taking_over(trio_stream)
        await trio_stream.aclose()  # the old object no longer owns the socket: a no-op
        async with fast:
            for size in (1, 100_000):
                await fast.send_all(b"e" * size)
                got = b""
                while len(got) < size:
                    got += await fast.receive_some()
                assert got == b"e" * size
        nursery.cancel_scope.cancel()


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some():
            await stream.send_all(data)
