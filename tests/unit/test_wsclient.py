"""The relay's WebSocket client to the backend (``_backend_ws``).

Socket-free against a wsproto server on a memory stream, for what a real Jupyter does not do on
demand (pings mid-message, a frame after the 101 in the same read, invalid UTF-8, a close that
is never answered). Through a door and a real socket: tests/proxy/test_wsclient.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
import wsproto
import wsproto.events as wse
from wsproto.frame_protocol import FrameProtocol

from trio_httpws._backend_ws import (
    BackendClosed,
    BackendWebSocket,
    HandshakeFailed,
    HandshakeRejected,
)
from trio_httpws._relay import CLOSE_TIMEOUT, RelayResult, _pump_both

from ..support.fake_socket import FakeSocket

MiB = 1024 * 1024


class Peer:
    """The backend's end: a wsproto server that records what it received."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        #: (data, frame_finished, message_finished) of every message event received.
        self.received: list[tuple[str | bytes, bool, bool]] = []
        self.closes: list[wse.CloseConnection] = []
        self.pongs: list[bytes] = []

    async def send(self, event: wse.Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def accept(self, extra: bytes = b"") -> None:
        """Answer the upgrade (and send ``extra`` bytes in the same write)."""
        while True:
            for event in self.ws.events():
                if isinstance(event, wse.Request):
                    await self.stream.send_all(self.ws.send(wse.AcceptConnection()) + extra)
                    return
            self.ws.receive_data(await self.stream.receive_some(65536))

    async def read_until(self, done: Callable[[], bool]) -> None:
        while not done():
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, wse.Message):
                    self.received.append((event.data, event.frame_finished, event.message_finished))
                elif isinstance(event, wse.CloseConnection):
                    self.closes.append(event)
                elif isinstance(event, wse.Pong):
                    self.pongs.append(bytes(event.payload))


@asynccontextmanager
async def pair(
    max_message_size: int = 64 * MiB,
) -> AsyncIterator[tuple[BackendWebSocket, Peer]]:
    ours, theirs = trio.testing.memory_stream_pair()
    client = BackendWebSocket(ours, max_message_size=max_message_size)
    peer = Peer(theirs)
    yield client, peer
    await client.aclose()


async def handshake(client: BackendWebSocket, peer: Peer, extra: bytes = b"") -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.accept, extra)
        await client.handshake("backend.test", "/ws", [], [])


def server_frames(*events: wse.Event) -> bytes:
    """Frames as a server writes them (unmasked), for the bytes of a single write."""
    proto = FrameProtocol(client=False, extensions=[])
    out = b""
    for event in events:
        if isinstance(event, wse.TextMessage):
            out += proto.send_data(event.data, event.message_finished)
        elif isinstance(event, wse.Ping):
            out += proto.ping(event.payload)
    return out


async def test_parts_go_to_the_backend_as_fragments_of_one_message() -> None:
    async with pair() as (client, peer):
        await handshake(client, peer)
        await client.send("first ", finished=False)
        await client.send("second ", finished=False)
        await client.send("last")
        await peer.read_until(lambda: bool(peer.received) and peer.received[-1][2])
    frames = [(finished_frame, last) for _, finished_frame, last in peer.received]
    assert "".join(str(d) for d, _, _ in peer.received) == "first second last"
    # Three frames (each whole), only the last one ends the message.
    assert [f for f in frames if f[0]] == [(True, False), (True, False), (True, True)]


async def test_a_frame_in_the_same_read_as_the_101_is_not_held_back() -> None:
    async with pair() as (client, peer):
        await handshake(client, peer, extra=server_frames(wse.TextMessage(data="hello")))
        with trio.fail_after(1):  # nothing else will ever arrive: a held frame would hang
            assert await client.receive_message() == "hello"


async def test_a_ping_in_the_middle_of_a_message_is_answered_and_the_message_joined() -> None:
    async with pair() as (client, peer):
        await handshake(client, peer)
        await peer.stream.send_all(
            server_frames(
                wse.TextMessage(data="a" * 1000, message_finished=False),
                wse.Ping(payload=b"are you there"),
                wse.TextMessage(data="b" * 1000),
            )
        )
        assert await client.receive_message() == "a" * 1000 + "b" * 1000
        await peer.read_until(lambda: bool(peer.pongs))
    assert peer.pongs == [b"are you there"]


async def test_binary_messages_stay_bytes() -> None:
    async with pair() as (client, peer):
        await handshake(client, peer)
        await peer.send(wse.BytesMessage(data=b"\x00\x01"))
        got = await client.receive_message()
        assert got == b"\x00\x01"
        assert type(got) is bytes


async def test_the_backends_close_is_answered_and_reported() -> None:
    async with pair() as (client, peer):
        await handshake(client, peer)
        await peer.send(wse.CloseConnection(code=4001, reason="kernel gone"))
        with pytest.raises(BackendClosed) as info:
            await client.receive_message()
        assert (info.value.code, info.value.reason) == (4001, "kernel gone")
        await peer.read_until(lambda: bool(peer.closes))
        with pytest.raises(BackendClosed):
            await client.send("too late")
    assert peer.closes[0].code == 4001
    assert peer.ws.state is wsproto.connection.ConnectionState.CLOSED


async def test_the_end_of_the_stream_is_an_abnormal_closure() -> None:
    async with pair() as (client, peer):
        await handshake(client, peer)
        await peer.stream.aclose()
        with pytest.raises(BackendClosed) as info:
            await client.receive_message()
        assert (info.value.code, info.value.reason) == (1006, "backend connection lost")


async def closes_both_ways(client: BackendWebSocket, peer: Peer, code: int) -> None:
    """The next receive reports ``code``, and our close frame with ``code`` reached the peer."""
    with pytest.raises(BackendClosed) as info:
        await client.receive_message()
    assert info.value.code == code
    await peer.read_until(lambda: bool(peer.closes))
    assert peer.closes[0].code == code


async def test_invalid_utf8_from_the_backend_closes_with_1007() -> None:
    async with pair() as (client, peer):
        await handshake(client, peer)
        # A text frame (FIN, opcode 1) of 2 bytes that are not UTF-8, unmasked as a server sends.
        await peer.stream.send_all(b"\x81\x02\xff\xfe")
        await closes_both_ways(client, peer, 1007)


async def test_a_message_over_the_limit_is_closed_with_1009() -> None:
    async with pair(max_message_size=1000) as (client, peer):
        await handshake(client, peer)
        await peer.send(wse.TextMessage(data="x" * 600, message_finished=False))
        await peer.send(wse.TextMessage(data="x" * 600))
        await closes_both_ways(client, peer, 1009)


async def test_after_our_close_only_the_answer_is_awaited() -> None:
    async with pair() as (client, peer):
        await handshake(client, peer)
        await client.start_close(1001, "bye")
        await peer.read_until(lambda: bool(peer.closes))
        # The backend still had a message on its way before it answered the close.
        await peer.stream.send_all(server_frames(wse.TextMessage(data="late")))
        await peer.send(peer.closes[0].response())
        with pytest.raises(BackendClosed) as info:
            await client.receive_message()
        assert info.value.code == 1001
        await client.start_close()  # nothing left to close: no error, nothing sent


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n", HandshakeRejected),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n", HandshakeFailed),
        (b"\x00\x01 not HTTP\r\n\r\n", HandshakeFailed),
        (b"", HandshakeFailed),
    ],
)
async def test_a_failed_upgrade_says_why(answer: bytes, error: type[Exception]) -> None:
    async with pair() as (client, peer):

        async def answer_it() -> None:
            await peer.stream.receive_some(65536)
            if answer:
                await peer.stream.send_all(answer)
            else:
                await peer.stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_it)
            with pytest.raises(error) as info:
                await client.handshake("backend.test", "/ws", [], [])
    if isinstance(info.value, HandshakeRejected):
        assert info.value.status == 403


async def test_a_send_cancelled_mid_frame_leaves_the_connection_unusable() -> None:
    """Half a frame may be on the wire: the next frame would be read as its rest."""
    ours, theirs = trio.testing.lockstep_stream_pair()  # a write waits for its reader
    client = BackendWebSocket(ours, max_message_size=64 * MiB)
    peer = Peer(theirs)
    await handshake(client, peer)
    with trio.move_on_after(0.1):
        await client.send("x" * 100_000)  # nobody reads: the write never completes
    with pytest.raises(BackendClosed):
        await client.send("next")
    await client.start_close()  # does not write onto the broken stream, does not raise
    await client.aclose()


# -- a close that races other frames -----------------------------------------------------------


async def test_the_last_message_before_the_backends_close_is_delivered() -> None:
    """Both in one read: wsproto is past the Close by the time the message is taken."""
    async with pair() as (client, peer):
        await handshake(client, peer)
        await peer.stream.send_all(
            server_frames(wse.TextMessage(data='["disconnect", 1]'))
            + peer.ws.send(wse.CloseConnection(code=1000, reason="bye"))
        )
        assert await client.receive_message() == '["disconnect", 1]'
        with pytest.raises(BackendClosed) as info:
            await client.receive_message()
        assert (info.value.code, info.value.reason) == (1000, "bye")


async def test_a_message_and_a_close_in_the_same_read_as_the_101_are_both_seen() -> None:
    async with pair() as (client, peer):
        close = FrameProtocol(client=False, extensions=[]).close(1001, "going")
        await handshake(client, peer, extra=server_frames(wse.TextMessage(data="hi")) + close)
        assert await client.receive_message() == "hi"
        with pytest.raises(BackendClosed) as info:
            await client.receive_message()
        assert info.value.code == 1001


async def test_closes_from_both_sides_at_once_raise_nothing_unexpected() -> None:
    """Our close waits behind a fragment being written while the backend's close arrives: the
    answer to the backend's close must not be sent after ours (wsproto would refuse it)."""
    ours, theirs = trio.testing.lockstep_stream_pair()
    client = BackendWebSocket(ours, max_message_size=64 * MiB)
    peer = Peer(theirs)
    await handshake(client, peer)
    outcome: dict[str, object] = {}

    async def reader() -> None:
        with pytest.raises(BackendClosed) as info:
            await client.receive_message()
        outcome["reader"] = info.value.code

    async def closer() -> None:
        await client.start_close(1000)  # documented never to raise
        outcome["closer"] = "sent"

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.send, "x" * 200_000, finished=False))
            await trio.testing.wait_all_tasks_blocked()  # the fragment holds the lock, unread
            nursery.start_soon(closer)
            await trio.testing.wait_all_tasks_blocked()
            # The backend's own close arrives (written beside the reads below) ...
            close = peer.ws.send(wse.CloseConnection(1001, "going"))
            nursery.start_soon(peer.stream.send_all, close)
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            # ... and the backend reads again, so the fragment and what follows get written.
            nursery.start_soon(peer.read_until, lambda: False)
            while len(outcome) < 2:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert outcome == {"reader": 1001, "closer": "sent"}
    # Both closes crossed: ours went out after the backend's arrived, and no answer followed it.
    assert [c.code for c in peer.closes] == [1000]
    await client.aclose()


async def test_a_shutdown_while_an_upload_is_stuck_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The backend stopped reading in the middle of a large message; the server shuts down:
    both closes wait behind that write, and the relay still ends within CLOSE_TIMEOUT."""
    async with trio.open_nursery() as nursery:
        ours, theirs = trio.testing.lockstep_stream_pair()
        client = BackendWebSocket(ours, max_message_size=64 * MiB)
        peer = Peer(theirs)
        await handshake(client, peer)  # after this the backend never reads again
        sock = FakeSocket()
        await sock.inbox.send("x" * 300_000)
        shutdown = trio.Event()
        started = trio.current_time()
        nursery.start_soon(_set_later, shutdown)
        await _pump_both(sock, client, shutdown, RelayResult())
        assert trio.current_time() - started == pytest.approx(0.1 + CLOSE_TIMEOUT)
        assert sock.closed == (1001, "server shutting down")
        await client.aclose()


async def _set_later(event: trio.Event) -> None:
    await trio.sleep(0.1)
    event.set()
