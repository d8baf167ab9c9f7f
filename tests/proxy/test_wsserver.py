"""``StreamPendingSocket``: the tunnel, ``/diagnose`` and the relays on a stream the door accepted.

Real sockets on 127.0.0.1: a stand-in door (``_door_stub``) reads each upgrade head with h11 and
hands it to the proxy (or to a test's own handler) through the wsproto adapter; the fake backend
or a test handler is behind it. The adapter owes what the hypercorn door gives: Close codes
1002/1007/1009 on bad input, large text messages in parts, compression only when asked.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events as wse
from wsproto.connection import ConnectionState
from wsproto.extensions import PerMessageDeflate

import trio_httpws
from trio_httpws._errors import ClientDisconnected
from trio_httpws._hypercorn_fix import PART_SIZE
from trio_httpws._socket import ClientSocket, PendingSocket, Upgrade
from trio_httpws._wsserver import StreamClientSocket

from ..support._door_stub import Handler, running_stub_door
from ..support._http import websocket_handshake
from ..support.fake_backend import FakeBackend
from ..support.proxies import ALLOWED_ORIGIN, wait_until
from ..support.ws import connect, fetch, read_frame, request_json

TIMEOUT = 10
MiB = 1024 * 1024
DIAGNOSE = "/http_over_websocket/diagnose"
CHROMIUM_OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
RSV1 = 0x40


@pytest.fixture
async def door(fake_backend: FakeBackend) -> AsyncIterator[str]:
    config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(ALLOWED_ORIGIN,))
    async with running_stub_door(config) as url:
        yield url


@asynccontextmanager
async def handler_door(handler: Handler, close_timeout: float = 5.0) -> AsyncIterator[str]:
    """The stand-in door with a test's own handler instead of the proxy."""
    async with running_stub_door(trio_httpws.Config(), handler, close_timeout=close_timeout) as url:
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def warned(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(r.levelno >= logging.WARNING and text in r.getMessage() for r in caplog.records)


def masked_frame(payload: bytes, *, opcode: int = 0x1, masked: bool = True) -> bytes:
    """One final frame carrying ``payload`` as it is (under 126 bytes)."""
    assert len(payload) < 126
    if not masked:
        return bytes([0x80 | opcode, len(payload)]) + payload
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


class RawClient:
    """A bare wsproto client: raw frames, any extension, and a count of the bytes it read."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.events: collections.deque[wse.Event] = collections.deque()
        self.wire_bytes_in = 0

    async def next_event(self) -> wse.Event:
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.wire_bytes_in += len(data)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    async def send(self, event: wse.Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def handshake(self, target: str, **request: Any) -> wse.Event:
        """AcceptConnection or RejectConnection."""
        await self.send(wse.Request(host="127.0.0.1", target=target, **request))
        event = await self.next_event()
        assert isinstance(event, (wse.AcceptConnection, wse.RejectConnection)), event
        return event

    async def message(self) -> str | bytes:
        """The next whole message (fails on any other event)."""
        parts: list[Any] = []
        while True:
            event = await self.next_event()
            assert isinstance(event, (wse.TextMessage, wse.BytesMessage)), event
            parts.append(event.data)
            if event.message_finished:
                if isinstance(parts[0], str):
                    return "".join(parts)
                return b"".join(parts)

    async def at_eof(self) -> bool:
        """True once the server ended the TCP connection (nothing more comes)."""
        try:
            return await self.stream.receive_some(65536) == b""
        except trio.BrokenResourceError:
            return True


@asynccontextmanager
async def raw_client(url: str) -> AsyncIterator[RawClient]:
    async with await trio.open_tcp_stream("127.0.0.1", port_of(url)) as stream:
        yield RawClient(stream)


async def assert_serves(url: str) -> None:
    """A new tunnel socket on ``url`` answers a request."""
    async with connect(url) as ws:
        response = await fetch(ws, "after", "GET", "/api/sessions")
        assert (response.status, response.body) == (200, b"ok")


# -- the tunnel and /diagnose --------------------------------------------------------------------


async def test_a_tunnelled_request_is_served(door: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(door) as ws:
            got = await fetch(ws, "1", "GET", "/api/sessions")
            echoed = await fetch(ws, 2, "POST", "/echo", body="naïve ☃")
    assert (got.status, got.body) == (200, b"ok")
    assert (echoed.status, echoed.body) == (200, "naïve ☃".encode())


async def test_diagnose_answers(door: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(door, DIAGNOSE, headers=[("Cookie", "_xsrf=x")]) as ws:
            await ws.send_message("hello")
            answer = await read_frame(ws)
            await ws.send_message(b"\x00")
            refused = await read_frame(ws)
    assert answer["message_id"] == "hello"
    assert answer["has_authentication_cookie"] is True
    assert (refused["status"], refused["done"]) == (400, True)


async def test_frames_sent_right_behind_the_upgrade_are_its_first_input(door: str) -> None:
    head = (
        f"GET {DIAGNOSE} HTTP/1.1\r\nHost: 127.0.0.1:{port_of(door)}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with trio.fail_after(TIMEOUT):
        async with raw_client(door) as raw:
            # One write: the door reads the head and the frames behind it together.
            await raw.stream.send_all(head + masked_frame(b"early") + masked_frame(b"later"))
            data = b""
            while b"\r\n\r\n" not in data:
                data += await raw.stream.receive_some(65536)
            status_line, _, rest = data.partition(b"\r\n")
            frames = rest.partition(b"\r\n\r\n")[2]
            while len(frames) < 4:
                frames += await raw.stream.receive_some(65536)
    assert status_line == b"HTTP/1.1 101 Switching Protocols"
    # A server frame: FIN + text, an unmasked 7-bit length, then the diagnose answer to "early".
    assert frames[0] == 0x81
    assert json.loads(frames[2 : 2 + frames[1]])["message_id"] == "early"


async def test_pings_are_answered(door: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(door) as raw:
            assert isinstance(await raw.handshake(DIAGNOSE), wse.AcceptConnection)
            await raw.send(wse.Ping(payload=b"are you there"))
            pong = await raw.next_event()
    assert pong == wse.Pong(payload=b"are you there")


async def test_a_subprotocol_is_negotiated(door: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(
            door, "/http_over_websocket/proxied_ws/subprotocol-ws", subprotocols=["v1.test", "x"]
        ) as ws:
            assert ws.subprotocol == "v1.test"
            assert await ws.get_message() == "subprotocol=v1.test"


async def test_a_subprotocol_the_client_did_not_offer_is_refused() -> None:
    errors: list[Exception] = []

    async def handler(pending: PendingSocket, upgrade: Upgrade) -> None:
        try:
            await pending.accept("never-offered")
        except ValueError as exc:
            errors.append(exc)
            await pending.reject(500, "no")

    with trio.fail_after(TIMEOUT):
        async with handler_door(handler) as url, raw_client(url) as raw:
            answer = await raw.handshake("/", subprotocols=["v1.test"])
    assert isinstance(answer, wse.RejectConnection)
    assert answer.status_code == 500
    assert "never-offered" in str(errors[0])


# -- compression -------------------------------------------------------------------------------


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
async def test_compression_is_negotiated_only_when_the_setting_asks(
    fake_backend: FakeBackend, on: bool
) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, ws_compression=on)
    with trio.fail_after(TIMEOUT):
        async with running_stub_door(config) as url:
            response, first = await websocket_handshake(url, DIAGNOSE, [CHROMIUM_OFFER], "hi")
            plain, plain_first = await websocket_handshake(url, DIAGNOSE, [], "hi")
    assert response.status == 101
    if on:
        assert response.all("sec-websocket-extensions") == [
            "permessage-deflate; client_max_window_bits=15"
        ]
        assert first is not None
        assert first & RSV1  # the answer frame is compressed
    else:
        assert response.all("sec-websocket-extensions") == []
        assert first == 0x81  # FIN, text, not compressed
    # A client that offers nothing gets nothing, whatever the setting.
    assert plain.all("sec-websocket-extensions") == []
    assert plain_first == 0x81


async def test_compressed_frames_round_trip(fake_backend: FakeBackend) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, ws_compression=True)
    body = b"all work and no play " * 50_000  # ~1 MB, squeezes to a few KB
    with trio.fail_after(TIMEOUT):
        async with running_stub_door(config) as url, raw_client(url) as raw:
            accepted = await raw.handshake("/http_over_websocket", extensions=[PerMessageDeflate()])
            assert isinstance(accepted, wse.AcceptConnection)
            sent_before = raw.wire_bytes_in
            request = request_json(
                "z", "POST", "/echo", body_base64=base64.b64encode(body).decode()
            )
            wire = raw.ws.send(wse.TextMessage(data=request))
            await raw.stream.send_all(wire)
            echoed = b""
            while True:
                message = await raw.message()
                assert isinstance(message, str)
                frame = json.loads(message)
                echoed += base64.b64decode(frame.get("data", ""))
                if frame["done"]:
                    break
    assert echoed == body  # decompressed on the way in, compressed on the way out
    assert len(wire) < len(request) // 20
    assert raw.wire_bytes_in - sent_before < len(body) // 20


# -- bad input: a Close frame with its code ------------------------------------------------------


async def close_after(url: str, frame: bytes) -> tuple[wse.CloseConnection, ConnectionState]:
    """Send ``frame`` on a new tunnel socket; how the server closed it. REMOTE_CLOSING says a
    Close frame came; CLOSED would be the bare end of the stream (1006 from wsproto)."""
    async with raw_client(url) as raw:
        assert isinstance(await raw.handshake("/http_over_websocket"), wse.AcceptConnection)
        await raw.stream.send_all(frame)
        event = await raw.next_event()
        assert isinstance(event, wse.CloseConnection), event
        return event, raw.ws.state


async def test_text_that_is_not_utf8_closes_1007(
    door: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(door) as bystander:
            event, state = await close_after(door, masked_frame(b'{"message_id": "\xff"}'))
            assert (await fetch(bystander, "b", "GET", "/api/sessions")).status == 200
        await assert_serves(door)
    assert (event.code, state) == (1007, ConnectionState.REMOTE_CLOSING)
    assert "can't decode byte 0xff" in (event.reason or "")
    assert warned(caplog, "closing a WebSocket with 1007")


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(masked_frame(b"{}", masked=False), id="unmasked"),
        pytest.param(masked_frame(b"x", opcode=0x3), id="reserved-opcode"),
    ],
)
async def test_a_protocol_error_closes_1002(
    door: str, caplog: pytest.LogCaptureFixture, frame: bytes
) -> None:
    with trio.fail_after(TIMEOUT):
        event, state = await close_after(door, frame)
        await assert_serves(door)
    assert (event.code, state) == (1002, ConnectionState.REMOTE_CLOSING)
    assert warned(caplog, "closing a WebSocket with 1002")


async def test_after_a_refused_frame_the_connection_ends(door: str) -> None:
    # The client answers our Close; the adapter cannot parse past the bad frame, so it drains
    # to the end of the stream: the client closing its side ends the connection promptly.
    with trio.fail_after(TIMEOUT):
        async with raw_client(door) as raw:
            assert isinstance(await raw.handshake("/http_over_websocket"), wse.AcceptConnection)
            await raw.stream.send_all(masked_frame(b"\xff"))
            event = await raw.next_event()
            assert isinstance(event, wse.CloseConnection)
            await raw.send(event.response())
            await raw.stream.send_eof()
            assert await raw.at_eof()


@pytest.mark.parametrize("limit", [64 * 1024, 3 * MiB], ids=["whole", "in-parts"])
async def test_a_message_over_the_limit_closes_1009_and_only_that_socket(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture, limit: int
) -> None:
    # 3 MiB: the session has taken parts of the message when the limit is crossed.
    config = trio_httpws.Config(backend=fake_backend.url, max_message_size=limit)
    body = base64.b64encode(b"x" * limit).decode()
    with trio.fail_after(TIMEOUT):
        async with running_stub_door(config) as url, connect(url) as bystander:
            async with connect(url) as ws:
                await ws.send_message(request_json("big", "POST", "/echo", body_base64=body))
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            assert (await fetch(bystander, "b", "GET", "/api/sessions")).status == 200
            await assert_serves(url)
    assert info.value.reason is not None
    assert info.value.reason.code == 1009
    assert warned(caplog, f"closing a WebSocket with 1009: a message over {limit} characters")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- messages in parts ---------------------------------------------------------------------------


class Recorder:
    """A handler that accepts (asking for parts or not) and records what ``receive_part`` gives;
    it answers "got it" after each whole message."""

    def __init__(self, parts: bool) -> None:
        self.parts = parts
        self.received: list[tuple[str | bytes, bool]] = []
        self.ended: ClientDisconnected | None = None

    async def __call__(self, pending: PendingSocket, upgrade: Upgrade) -> None:
        sock = await pending.accept(message_parts=self.parts)
        try:
            while True:
                part, more = await sock.receive_part()
                self.received.append((part, more))
                if not more:
                    await sock.send("got it")
        except ClientDisconnected as exc:
            self.ended = exc


async def test_a_large_text_message_comes_in_parts_when_asked() -> None:
    recorder = Recorder(parts=True)
    large = "".join(chr(0x41 + i % 26) for i in range(100)) * 35_000 + "\u00e9"  # 3.5 MB
    with trio.fail_after(30):
        async with handler_door(recorder) as url, connect(url, "/") as ws:
            for message in ("small", large, b"\x01" * (3 * PART_SIZE)):
                await ws.send_message(message)
                assert await ws.get_message() == "got it"
    small, *parts, binary = recorder.received
    assert small == ("small", False)
    assert len(parts) >= 3
    assert [more for _, more in parts] == [True] * (len(parts) - 1) + [False]
    assert all(len(p) >= PART_SIZE for p, _ in parts[:-1])
    assert "".join(p for p, _ in parts) == large  # type: ignore[misc]
    assert binary == (b"\x01" * (3 * PART_SIZE), False)  # never a binary message in parts


async def test_without_parts_large_messages_come_whole() -> None:
    recorder = Recorder(parts=False)
    large = "x" * (3 * PART_SIZE)
    with trio.fail_after(30):
        async with handler_door(recorder) as url, connect(url, "/") as ws:
            await ws.send_message(large)
            assert await ws.get_message() == "got it"
    assert recorder.received == [(large, False)]


@pytest.mark.timeout(300)
async def test_a_40_mib_tunnelled_upload_arrives_byte_exact_in_parts(
    fake_backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = 0
    original = StreamClientSocket.receive_part

    async def counting(self: StreamClientSocket) -> tuple[str | bytes, bool]:
        nonlocal parts
        part, more = await original(self)
        parts += more
        return part, more

    monkeypatch.setattr(StreamClientSocket, "receive_part", counting)
    body = hashlib.shake_256(b"upload").digest(40 * MiB)
    config = trio_httpws.Config(backend=fake_backend.url)
    with trio.fail_after(240):
        async with running_stub_door(config) as url, connect(url) as ws:
            response = await fetch(
                ws, "up", "POST", "/echo", body_base64=base64.b64encode(body).decode()
            )
    assert response.status == 200
    assert response.headers["X-Body-Length"] == str(len(body))
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(body).digest()
    assert parts >= 40  # ~55 MB of JSON reached the session ~1 MiB at a time


# -- answering, closing, finishing --------------------------------------------------------------


async def test_reject_answers_with_the_http_status(door: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(door) as raw:
            answer = await raw.handshake(
                "/http_over_websocket", extra_headers=[(b"origin", b"http://evil.example")]
            )
            body = b""
            while True:
                event = await raw.next_event()
                assert isinstance(event, wse.RejectData)
                body += event.data
                if event.body_finished:
                    break
            assert await raw.at_eof()  # Connection: close, and it is closed
    assert isinstance(answer, wse.RejectConnection)
    assert answer.status_code == 403
    headers = dict(answer.headers)
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert body == b"Origin not allowed"


async def test_finish_closes_a_socket_the_handler_left_open_with_1000() -> None:
    async def handler(pending: PendingSocket, upgrade: Upgrade) -> None:
        sock = await pending.accept()
        await sock.send("bye")

    with trio.fail_after(TIMEOUT):
        async with handler_door(handler) as url:
            async with connect(url, "/") as ws:
                assert await ws.get_message() == "bye"
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            async with raw_client(url) as raw:
                assert isinstance(await raw.handshake("/"), wse.AcceptConnection)
                assert await raw.message() == "bye"
                close = await raw.next_event()
                assert isinstance(close, wse.CloseConnection)
                await raw.send(close.response())
                # Our Close answered: the door ends the connection, no waiting.
                assert await raw.at_eof()
    assert info.value.reason is not None
    assert info.value.reason.code == 1000


async def test_finish_gives_up_on_a_client_that_never_answers() -> None:
    async def handler(pending: PendingSocket, upgrade: Upgrade) -> None:
        await pending.accept()

    with trio.fail_after(TIMEOUT):
        async with handler_door(handler, close_timeout=0.5) as url, raw_client(url) as raw:
            assert isinstance(await raw.handshake("/"), wse.AcceptConnection)
            assert isinstance(await raw.next_event(), wse.CloseConnection)
            assert await raw.at_eof()  # never answered: the close timeout ended it


async def test_the_clients_close_is_answered_and_reported() -> None:
    ended: list[ClientDisconnected] = []
    sent_after: list[ClientDisconnected] = []

    async def handler(pending: PendingSocket, upgrade: Upgrade) -> None:
        sock = await pending.accept()
        try:
            await sock.receive()
        except ClientDisconnected as exc:
            ended.append(exc)
        try:
            await sock.send("too late")
        except ClientDisconnected as exc:
            sent_after.append(exc)
        await sock.close()  # nothing: already closed

    with trio.fail_after(TIMEOUT):
        async with handler_door(handler) as url, raw_client(url) as raw:
            assert isinstance(await raw.handshake("/"), wse.AcceptConnection)
            await raw.send(wse.CloseConnection(code=4001, reason="bye"))
            answer = await raw.next_event()
            assert await raw.at_eof()
    assert answer == wse.CloseConnection(code=4001, reason="bye")
    assert raw.ws.state is ConnectionState.CLOSED
    assert [(e.code, e.reason) for e in ended] == [(4001, "bye")]
    assert len(sent_after) == 1


async def test_the_end_of_the_stream_is_a_disconnect_without_code() -> None:
    ended: list[ClientDisconnected] = []
    done = trio.Event()

    async def handler(pending: PendingSocket, upgrade: Upgrade) -> None:
        sock = await pending.accept()
        try:
            await sock.receive()
        except ClientDisconnected as exc:
            ended.append(exc)
        done.set()

    with trio.fail_after(TIMEOUT):
        async with handler_door(handler) as url:
            async with raw_client(url) as raw:
                assert isinstance(await raw.handshake("/"), wse.AcceptConnection)
            await done.wait()
    assert [e.code for e in ended] == [None]


async def test_our_close_waits_for_the_clients_answer() -> None:
    events: list[str] = []

    async def handler(pending: PendingSocket, upgrade: Upgrade) -> None:
        sock = await pending.accept()
        await sock.close(4002, "enough")
        try:
            while True:  # messages the client sent before it saw our Close are dropped
                events.append(repr(await sock.receive()))
        except ClientDisconnected as exc:
            events.append(f"answered {exc.code}")

    with trio.fail_after(TIMEOUT):
        async with handler_door(handler) as url, raw_client(url) as raw:
            assert isinstance(await raw.handshake("/"), wse.AcceptConnection)
            # Raw: our Close may already sit in the client's wsproto, which would refuse it.
            await raw.stream.send_all(masked_frame(b"crossing"))
            close = await raw.next_event()
            assert close == wse.CloseConnection(code=4002, reason="enough")
            await raw.send(close.response())
            assert await raw.at_eof()
    assert events == ["answered 4002"]


async def test_many_senders_never_interleave_frames() -> None:
    async def handler(pending: PendingSocket, upgrade: Upgrade) -> None:
        sock = await pending.accept()

        async def sender(i: int) -> None:
            for _ in range(5):
                await sock.send(chr(0x41 + i) * 300_000)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(sender, i)
        await sock.send("end")

    counts: collections.Counter[str] = collections.Counter()
    with trio.fail_after(30):
        async with handler_door(handler) as url, connect(url, "/") as ws:
            await trio.sleep(0.2)  # a slow reader: the senders wait on a full socket
            while (message := await ws.get_message()) != "end":
                assert isinstance(message, str)
                assert len(message) == 300_000
                assert set(message) == {message[0]}
                counts[message[0]] += 1
    assert counts == {chr(0x41 + i): 5 for i in range(20)}


# -- cancellation --------------------------------------------------------------------------------


def count_tasks() -> int:
    """Every task of this trio run."""
    count, pending = 0, [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is not None:
            count += 1
            for nursery in task.child_nurseries:
                pending.extend(nursery.child_tasks)
    return count


async def test_a_send_cut_short_leaves_the_socket_unusable_and_no_task() -> None:
    seen: list[str] = []
    sock_of: list[ClientSocket] = []
    finished = trio.Event()

    async def handler(pending: PendingSocket, upgrade: Upgrade) -> None:
        sock = await pending.accept()
        sock_of.append(sock)
        with trio.move_on_after(0.3):
            while True:  # the client never reads: this send blocks mid-frame and is cut
                await sock.send("x" * 4 * MiB)
        try:
            await sock.send("after")
        except ClientDisconnected as exc:
            seen.append(exc.reason)
        await sock.close()  # nothing to send on: returns at once
        finished.set()

    with trio.fail_after(TIMEOUT):
        # A close timeout the test would notice: finish() must not wait on a broken socket.
        async with handler_door(handler, close_timeout=1000) as url:
            before = count_tasks()
            async with raw_client(url) as raw:
                assert isinstance(await raw.handshake("/"), wse.AcceptConnection)
                await finished.wait()
                # The door closed the connection: reading drains what was sent, then the end.
                while True:
                    data = await raw.stream.receive_some(MiB)
                    if not data:
                        break
            await trio.testing.wait_all_tasks_blocked()
            assert count_tasks() == before
    assert seen == ["a frame was cut short"]


async def test_a_door_cancelled_mid_session_leaves_no_task(fake_backend: FakeBackend) -> None:
    config = trio_httpws.Config(backend=fake_backend.url)
    tag = "door-cancelled"
    with trio.fail_after(TIMEOUT):
        before = count_tasks()
        async with running_stub_door(config) as url:
            raw = RawClient(await trio.open_tcp_stream("127.0.0.1", port_of(url)))
            assert isinstance(await raw.handshake("/http_over_websocket"), wse.AcceptConnection)
            request = request_json("slow", "GET", f"/slow?delay=30&tag={tag}")
            await raw.send(wse.TextMessage(data=request))
            await wait_until(lambda: fake_backend.slow_active(tag) == 1)
        # Leaving the block cancelled the door with the session and its request in flight:
        # every task it ran has ended, and the client's connection with them.
        assert count_tasks() == before
        async with raw.stream:
            assert await raw.at_eof()
        await wait_until(lambda: fake_backend.slow_active(tag) == 0)
