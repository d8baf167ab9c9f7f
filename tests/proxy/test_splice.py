"""The byte relay for plain WebSockets (``_splice``), behind the stand-in door of
``tests/support/_splice_server.py``: real sockets on 127.0.0.1 in front of the tornado fake backend and of
small scripted backends; memory streams and ``autojump_clock`` where time is the point."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events as wse
import wsproto.frame_protocol as fp

from trio_httpws._backend import BackendPool
from trio_httpws._config import BackendURL, Config
from trio_httpws._outcome import Outcome
from trio_httpws._splice import SpliceResult

from ..support._splice_server import splice_connection, splice_server
from ..support.fake_backend import FakeBackend
from ..support.raw_backend import Handler, Seen, raw_backend, read_all, read_head

KEY = base64.b64encode(os.urandom(16))
ACCEPT = base64.b64encode(hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


# -- raw wire helpers -------------------------------------------------------------------------


def upgrade_head(path: str = "/ws", *extra: str, key: bytes = KEY) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: proxy.test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def switching(accept: bytes = ACCEPT, *extra: str) -> bytes:
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept.decode()}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(payload: bytes, *, masked: bool, opcode: fp.Opcode = fp.Opcode.BINARY) -> bytes:
    """One whole frame, masked as a client's is."""
    protocol = fp.FrameProtocol(client=masked, extensions=[])
    return bytes(protocol._serialize_frame(opcode, payload))


def close(code: int, reason: str, *, masked: bool) -> bytes:
    return bytes(fp.FrameProtocol(client=masked, extensions=[]).close(code, reason))


def frames_in(data: bytes, *, from_client: bool) -> list[tuple[fp.Opcode, object]]:
    protocol = fp.FrameProtocol(client=not from_client, extensions=[])
    protocol.receive_bytes(data)
    return [(f.opcode, f.payload) for f in protocol.received_frames()]


async def read_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = bytes(await stream.receive_some(size - len(data)))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def answering(seen: Seen, answer: bytes) -> Handler:
    """A backend that answers the upgrade with ``answer`` and records all it gets until EOF."""

    async def handle(stream: trio.abc.Stream) -> None:
        head, rest = await read_head(stream)
        if answer:
            await stream.send_all(answer)
            rest += await read_all(stream)
        seen.data = head + rest  # no answer: hangs up at once
        seen.eof.set()

    return handle


# -- through the tornado fake backend ---------------------------------------------------------


async def test_echo_is_byte_exact_and_a_client_close_ends_it(fake_backend: FakeBackend) -> None:
    big = os.urandom(3 * 1024 * 1024 + 7)
    async with splice_server(fake_backend.url) as server:
        async with trio_websocket.open_websocket_url(
            server.ws_url + "/plain-echo-ws", max_message_size=2**26
        ) as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(big)
            assert await ws.get_message() == big
        result = await server.result()
    assert result.status == 101
    assert result.outcome is Outcome.CLIENT_CLOSE
    assert len(big) < result.bytes_to_backend < len(big) + 100
    assert len(big) < result.bytes_to_client < len(big) + 100
    assert result.payload_to_client == len("hello") + len(big)


async def test_backend_close_reaches_the_client(fake_backend: FakeBackend) -> None:
    async with splice_server(fake_backend.url) as server:
        async with trio_websocket.open_websocket_url(
            server.ws_url + "/close-on-first-message-ws"
        ) as ws:
            await ws.send_message("close, please")
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 4321
        assert closed.value.reason.reason == "closing as asked"
        result = await server.result()
    assert result.outcome is Outcome.BACKEND_CLOSE


async def test_subprotocol_is_negotiated_end_to_end(fake_backend: FakeBackend) -> None:
    async with (
        splice_server(fake_backend.url) as server,
        trio_websocket.open_websocket_url(
            server.ws_url + "/subprotocol-ws", subprotocols=["v0", "v1.test"]
        ) as ws,
    ):
        assert ws.subprotocol == "v1.test"
        assert await ws.get_message() == "subprotocol=v1.test"


async def test_both_legs_get_keepalive(fake_backend: FakeBackend) -> None:
    opened: list[trio.SocketStream] = []

    async def opener(backend: BackendURL) -> trio.abc.Stream:
        stream = await trio.open_tcp_stream(backend.host, backend.port)
        opened.append(stream)
        return stream

    config = Config(backend=fake_backend.url)
    pool = BackendPool(config.backend_url, opener=opener)
    async with (
        splice_server(fake_backend.url, pool=pool) as server,
        trio_websocket.open_websocket_url(server.ws_url + "/plain-echo-ws") as ws,
    ):
        await ws.send_message("x")
        await ws.get_message()
        (client,) = server.client_streams
        (backend,) = opened
        for stream in (client, backend):
            assert isinstance(stream, trio.SocketStream)
            assert stream.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)


# -- the handshake: what the backend gets, and answers that are not a valid 101 ---------------


@pytest.mark.parametrize("compression", [False, True])
async def test_upgrade_goes_on_with_the_clients_key(compression: bool) -> None:
    seen = Seen()
    async with (
        raw_backend(answering(seen, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")) as url,
        splice_server(url, config=Config(backend=url, ws_compression=compression)) as server,
    ):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(
            upgrade_head(
                "/api/kernels/k/channels?session_id=s",
                "Sec-WebSocket-Protocol: v1, v2",
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                "X-Custom: kept",
                "Keep-Alive: timeout=5",
            )
        )
        await read_all(stream)
        await stream.aclose()
        with trio.fail_after(5):
            await seen.eof.wait()
    head = seen.data
    assert head.startswith(b"GET /api/kernels/k/channels?session_id=s HTTP/1.1\r\n")
    assert header(head, "Sec-WebSocket-Key") == KEY.decode()
    assert header(head, "Sec-WebSocket-Version") == "13"
    assert header(head, "Sec-WebSocket-Protocol") == "v1, v2"
    assert header(head, "Host") == "proxy.test"
    assert header(head, "X-Custom") == "kept"
    assert header(head, "Keep-Alive") is None
    assert header(head, "Connection") == "Upgrade"
    assert header(head, "Upgrade") == "websocket"
    extensions = header(head, "Sec-WebSocket-Extensions")
    assert extensions == ("permessage-deflate; client_max_window_bits" if compression else None)


async def test_refused_upgrade_answers_its_status_and_nothing_pipelined_reaches_the_backend() -> (
    None
):
    seen = Seen()
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden"
    async with raw_backend(answering(seen, refusal)) as url, splice_server(url) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        pipelined = b"GET /second HTTP/1.1\r\nHost: proxy.test\r\n\r\n"
        await stream.send_all(upgrade_head() + pipelined)
        answer = await read_all(stream)  # the proxy closes after its answer
        await stream.aclose()
        result = await server.result()
        with trio.fail_after(5):
            await seen.eof.wait()  # the backend connection was closed, not kept
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(head) == 403
    assert header(head, "Connection") == "close"
    assert body == b"backend refused: HTTP 403"
    # One head, ours, and not a byte more.
    assert seen.data.startswith(b"GET /ws HTTP/1.1\r\n")
    assert seen.data.index(b"\r\n\r\n") == len(seen.data) - 4
    assert result == SpliceResult(403, Outcome.BACKEND_REFUSED)


async def test_a_client_that_leaves_before_the_backend_answers_frees_both_at_once() -> None:
    seen = Seen()

    async def slow_to_answer(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        # It would answer within read_timeout (300 s): only the client's leaving ends it.
        await read_all(stream)
        seen.eof.set()

    async with raw_backend(slow_to_answer) as url, splice_server(url) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(upgrade_head())
        await stream.aclose()
        with trio.fail_after(10):
            await seen.eof.wait()
            result = await server.result()
    assert result == SpliceResult(499, Outcome.CLIENT_LEFT)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(switching(base64.b64encode(b"x" * 20)), id="wrong-accept"),
        pytest.param(switching(ACCEPT, "Sec-WebSocket-Protocol: v9"), id="protocol-not-offered"),
        pytest.param(
            switching(ACCEPT, "Sec-WebSocket-Extensions: permessage-deflate"),
            id="extension-not-offered",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n",
            id="not-websocket",
        ),
        pytest.param(b"HTTP/1.1 banana\r\n\r\n", id="not-http"),
        pytest.param(b"", id="hangs-up"),
    ],
)
async def test_invalid_101_is_a_502_and_no_client_byte_reaches_the_backend(answer: bytes) -> None:
    seen = Seen()
    early = frame(b"sent before the 101", masked=True)
    async with raw_backend(answering(seen, answer)) as url, splice_server(url) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        # Offered: v1 and no extension (compression is off, so the client's offer stays here).
        await stream.send_all(
            upgrade_head(
                "/ws", "Sec-WebSocket-Protocol: v1", "Sec-WebSocket-Extensions: permessage-deflate"
            )
            + early
        )
        got = await read_all(stream)
        await stream.aclose()
        result = await server.result()
        with trio.fail_after(5):
            await seen.eof.wait()
    head, _, body = got.partition(b"\r\n\r\n")
    assert status_of(head) == 502
    assert header(head, "Connection") == "close"
    assert body == b"Bad Gateway: backend handshake failed"
    assert early not in seen.data
    assert seen.data.endswith(b"\r\n\r\n")
    assert result == SpliceResult(502, Outcome.BACKEND_ERROR)


async def test_unreachable_backend_is_a_502() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        async with splice_server(url) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(upgrade_head())
            head, body = (await read_all(stream)).split(b"\r\n\r\n", 1)
            result = await server.result()
    assert status_of(head) == 502
    assert header(head, "Connection") == "close"
    assert body == b"Bad Gateway: backend unreachable"
    assert result == SpliceResult(502, Outcome.BACKEND_ERROR)


# -- after the 101 ----------------------------------------------------------------------------


async def test_bytes_read_past_either_head_go_across_first() -> None:
    """The backend's first frame shares a packet with its 101, the client's with its upgrade."""
    from_client = frame(b"first from the client", masked=True)
    from_backend = frame(b"first from the backend", masked=False)
    got_client_frame = trio.Event()
    received = b""

    async def backend(stream: trio.abc.Stream) -> None:
        nonlocal received
        _head, rest = await read_head(stream)
        await stream.send_all(switching() + from_backend)
        received = rest + await read_exactly(stream, len(from_client) - len(rest))
        got_client_frame.set()
        await read_all(stream)

    async with raw_backend(backend) as url, splice_server(url) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(upgrade_head() + from_client)
        head, rest = await read_head(stream)
        assert status_of(head) == 101
        assert header(head, "Sec-WebSocket-Accept") == ACCEPT.decode()
        assert header(head, "Upgrade") == "websocket"
        assert rest + await read_exactly(stream, len(from_backend) - len(rest)) == from_backend
        with trio.fail_after(5):
            await got_client_frame.wait()
        assert received == from_client
        await stream.aclose()
        result = await server.result()
    assert result.status == 101
    assert result.outcome is Outcome.CLIENT_LEFT
    assert result.bytes_to_client == len(from_backend)
    assert result.bytes_to_backend == len(from_client)


async def test_backend_eof_is_passed_on_and_the_other_way_still_flows() -> None:
    late = frame(b"after the backend's EOF", masked=True)
    got_late = trio.Event()

    async def backend(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        await stream.send_all(switching() + frame(b"bye", masked=False))
        assert isinstance(stream, trio.SocketStream)
        await stream.send_eof()  # half-closed: still reading
        assert await read_exactly(stream, len(late)) == late
        got_late.set()
        await read_all(stream)

    async with raw_backend(backend) as url, splice_server(url) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(upgrade_head())
        _head, rest = await read_head(stream)
        assert rest + await read_all(stream) == frame(b"bye", masked=False)  # then EOF
        await stream.send_all(late)
        with trio.fail_after(5):
            await got_late.wait()
        await stream.aclose()
        result = await server.result()
    assert result.outcome is Outcome.BACKEND_LOST


async def test_client_eof_is_passed_on_and_the_other_way_still_flows() -> None:
    seen_eof = trio.Event()
    answer = frame(b"still talking", masked=False)

    async def backend(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        await stream.send_all(switching())
        await read_all(stream)
        seen_eof.set()
        await stream.send_all(answer)

    async with raw_backend(backend) as url, splice_server(url) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(upgrade_head())
        _head, rest = await read_head(stream)
        await stream.send_eof()
        with trio.fail_after(5):
            await seen_eof.wait()
        assert rest + await read_exactly(stream, len(answer) - len(rest)) == answer
        result = await server.result()
        await stream.aclose()
    assert result.outcome is Outcome.CLIENT_LEFT


class WholeStream(trio.abc.Stream):
    """A stream that cannot half-close, as TLS cannot."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_eof_towards_a_stream_that_cannot_half_close_closes_it() -> None:
    seen = Seen()

    async def opener(backend: BackendURL) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(accepting(seen, read_away), theirs)
        return WholeStream(ours)

    client, door = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        pool = BackendPool(BACKEND, opener=opener)
        await client.send_all(upgrade_head())
        await client.send_eof()
        with trio.fail_after(5):
            result = await splice_connection(door, pool, Config(), trio.Event())
            await seen.eof.wait()  # the backend's stream was closed: its EOF
    assert result == SpliceResult(101, Outcome.CLIENT_LEFT)


# -- shutdown ---------------------------------------------------------------------------------


@dataclass
class WsBackend:
    """A wsproto backend that accepts, echoes messages (unless told not to), answers a Close,
    and records events."""

    echo: bool = True
    events: list[wse.Event] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, stream: trio.abc.Stream) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        try:
            while True:
                data = bytes(await stream.receive_some(65536))
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, wse.Request):
                        await stream.send_all(ws.send(wse.AcceptConnection()))
                        continue
                    self.events.append(event)
                    if isinstance(event, wse.Message) and self.echo:
                        await stream.send_all(ws.send(event))
                    elif isinstance(event, wse.CloseConnection):
                        if ws.state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                            await stream.send_all(ws.send(event.response()))
                        return
                if not data:
                    return
        finally:
            self.closed.set()


async def test_shutdown_sends_1001_both_ways() -> None:
    backend = WsBackend()
    async with raw_backend(backend) as url, splice_server(url) as server:
        async with trio_websocket.open_websocket_url(server.ws_url + "/ws") as ws:
            await ws.send_message("before")
            assert await ws.get_message() == "before"
            server.shutdown.set()
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1001
            assert closed.value.reason.reason == "server shutting down"
        result = await server.result()
        with trio.fail_after(5):
            await backend.closed.wait()
    assert result.outcome is Outcome.SHUTDOWN
    close_event = backend.events[-1]
    assert isinstance(close_event, wse.CloseConnection)
    assert (close_event.code, close_event.reason) == (1001, "proxy shutting down")


async def test_shutdown_waits_for_the_end_of_the_frame_in_progress() -> None:
    backend = WsBackend(echo=False)
    whole = frame(b"x" * 1000, masked=True)
    after = frame(b"never forwarded", masked=True)
    async with raw_backend(backend) as url, splice_server(url) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(upgrade_head() + whole[:500])
        _head, rest = await read_head(stream)
        await trio.testing.wait_all_tasks_blocked()  # the first half is on its way
        server.shutdown.set()
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(whole[500:] + after)
        got = rest + await read_all(stream)
        result = await server.result()
        with trio.fail_after(5):
            await backend.closed.wait()
    assert frames_in(got, from_client=False) == [(fp.Opcode.CLOSE, (1001, "server shutting down"))]
    messages = [e for e in backend.events if isinstance(e, wse.Message)]
    assert b"".join(bytes(m.data) for m in messages) == b"x" * 1000  # whole, in parts
    assert messages[-1].message_finished
    close_event = backend.events[-1]
    assert isinstance(close_event, wse.CloseConnection)
    assert close_event.code == 1001
    assert result.outcome is Outcome.SHUTDOWN


# -- time: memory streams and the autojump clock ----------------------------------------------


BACKEND = BackendURL("http", "backend.test", 80)


def memory_pool(nursery: trio.Nursery, server: Handler) -> BackendPool:
    async def opener(backend: BackendURL) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(server, theirs)
        return ours

    return BackendPool(BACKEND, opener=opener)


async def test_a_backend_that_never_answers_is_a_504(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        await trio.sleep_forever()

    config = Config(read_timeout=7)
    client, door = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, silent)
        await client.send_all(upgrade_head())
        start = trio.current_time()
        result = await splice_connection(door, pool, config, trio.Event())
        assert trio.current_time() - start == pytest.approx(7)
        nursery.cancel_scope.cancel()
    head, _body = bytes(await client.receive_some(65536)).split(b"\r\n\r\n")
    assert status_of(head) == 504
    assert header(head, "Connection") == "close"
    assert result == SpliceResult(504, Outcome.BACKEND_ERROR)


async def read_away(stream: trio.abc.Stream) -> None:
    await read_all(stream)


def accepting(seen: Seen, after: Callable[[trio.abc.Stream], Awaitable[None]]) -> Handler:
    async def handle(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        await stream.send_all(switching())
        try:
            await after(stream)
        finally:
            seen.eof.set()

    return handle


async def test_an_hour_silent_socket_stays_open(autojump_clock: trio.testing.MockClock) -> None:
    message = frame(b"an hour later", masked=True)
    got: list[bytes] = []

    async def then_reads(stream: trio.abc.Stream) -> None:
        got.append(await read_exactly(stream, len(message)))
        await read_all(stream)

    seen = Seen()
    client, door = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, accepting(seen, then_reads))
        nursery.start_soon(partial(splice_connection, door, pool, Config(), trio.Event()))
        await client.send_all(upgrade_head())
        await read_head(client)
        await trio.sleep(3600)
        await client.send_all(message)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [message]
        nursery.cancel_scope.cancel()


async def test_an_unanswered_close_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """The client closes; the backend reads it but never answers nor hangs up."""
    seen = Seen()
    client, door = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, accepting(seen, read_away))
        await client.send_all(upgrade_head() + close(1000, "done", masked=True))
        start = trio.current_time()
        result = await splice_connection(door, pool, Config(), trio.Event(), close_timeout=3)
        assert trio.current_time() - start == pytest.approx(3)
        await seen.eof.wait()  # our end of the backend stream was closed
        nursery.cancel_scope.cancel()
    assert result is not None
    assert result.outcome is Outcome.CLIENT_CLOSE


async def test_both_closes_end_the_splice_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """Neither side hangs up after the closing handshake: the splice ends without a wait."""
    seen = Seen()
    client_close = close(1000, "done", masked=True)

    async def answers_close(stream: trio.abc.Stream) -> None:
        await read_exactly(stream, len(client_close))
        await stream.send_all(close(1000, "done", masked=False))
        await read_all(stream)

    client, door = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, accepting(seen, answers_close))
        await client.send_all(upgrade_head() + client_close)
        start = trio.current_time()
        result = await splice_connection(door, pool, Config(), trio.Event(), close_timeout=3)
        assert trio.current_time() == start
        await seen.eof.wait()
    assert result is not None
    assert result.outcome is Outcome.CLIENT_CLOSE


async def test_shutdown_with_sides_that_never_answer_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen = Seen()
    backend_got: list[bytes] = []

    async def reads(stream: trio.abc.Stream) -> None:
        backend_got.append(await read_all(stream))

    shutdown = trio.Event()
    client, door = trio.testing.memory_stream_pair()
    results: list[SpliceResult | None] = []

    async def serve() -> None:
        results.append(await splice_connection(door, pool, Config(), shutdown, close_timeout=4))
        await door.aclose()  # as the door does

    async with trio.open_nursery() as nursery:
        pool = memory_pool(nursery, accepting(seen, reads))
        nursery.start_soon(serve)
        await client.send_all(upgrade_head())
        _head, rest = await read_head(client)
        await trio.sleep(10)
        start = trio.current_time()
        shutdown.set()
        got = rest + await read_all(client)  # the proxy's Close, then nothing: closed
        assert trio.current_time() - start == pytest.approx(4)
        await seen.eof.wait()
    assert frames_in(got, from_client=False) == [(fp.Opcode.CLOSE, (1001, "server shutting down"))]
    assert frames_in(backend_got[0], from_client=True) == [
        (fp.Opcode.CLOSE, (1001, "proxy shutting down"))
    ]
    # Our own Close frames are wire bytes too.
    assert results == [SpliceResult(101, Outcome.SHUTDOWN, len(got), len(backend_got[0]))]


async def test_cancelled_splice_closes_the_backend_stream() -> None:
    seen = Seen()
    async with raw_backend(answering(seen, switching())) as url:
        async with splice_server(url) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(upgrade_head())
            await read_head(stream)
            await trio.testing.wait_all_tasks_blocked()
        # The server (and the splice in it) was cancelled: the backend sees its end.
        with trio.fail_after(5):
            await seen.eof.wait()
        await stream.aclose()


# -- an idle socket ---------------------------------------------------------------------------


def held_buffers(task: trio.lowlevel.Task) -> list[int]:
    """Sizes of the byte buffers the task's coroutine frames hold in their locals."""
    sizes = []
    coro: object = task.coro
    while coro is not None:
        frame_ = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame_ is not None:
            for value in frame_.f_locals.values():
                if isinstance(value, (bytes, bytearray, memoryview)):
                    sizes.append(len(value))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return sizes


async def test_an_idle_splice_is_two_tasks_holding_no_buffer(fake_backend: FakeBackend) -> None:
    big = os.urandom(1024 * 1024)
    async with (
        splice_server(fake_backend.url) as server,
        trio_websocket.open_websocket_url(
            server.ws_url + "/plain-echo-ws", max_message_size=2**26
        ) as ws,
    ):
        await ws.send_message(big)
        assert await ws.get_message() == big
        await trio.testing.wait_all_tasks_blocked()
        pumps = [
            task
            for task in _all_tasks()
            if "_pump" in task.name and "_splice" in task.coro.cr_code.co_filename
        ]
        assert len(pumps) == 2
        for task in pumps:
            assert all(size < 1024 for size in held_buffers(task)), held_buffers(task)
        # The door's own task only waits: no nursery besides the pumps' one.
        (parent,) = {task.parent_nursery.parent_task for task in pumps}  # type: ignore[union-attr]
        assert all(size < 1024 for size in held_buffers(parent))


def _all_tasks() -> list[trio.lowlevel.Task]:
    found, pending = [], [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        found.append(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found
