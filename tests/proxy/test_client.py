"""trio_httpws.client against a scripted fake protocol server on 127.0.0.1 (no proxy, no backend).

Each test scripts the server side itself: the fake accepts the WebSocket and hands the test a
:class:`Peer` to read the client's messages and send whatever frames the test wants, so frame
interleaving, truncation and refusals are exact.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
import trio.testing
import trio_websocket

from trio_httpws.client import (
    BodyTruncated,
    Client,
    ClientConnectionError,
    ConnectionLost,
    ConnectionRefused,
    ProtocolError,
    Response,
    ResponseStalled,
    diagnose,
    open_client,
    open_proxied_websocket,
    run_code,
)

TIMEOUT = 15


class Peer:
    """The server end of one accepted client socket."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, path: str) -> None:
        self.ws = ws
        #: The request target of the upgrade, query included.
        self.path = path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    async def recv(self) -> dict[str, Any]:
        message = await self.ws.get_message()
        assert isinstance(message, str)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    async def send(self, **frame: Any) -> None:
        await self.ws.send_message(json.dumps(frame))

    async def respond(
        self,
        message_id: str,
        *chunks: bytes,
        status: int = 200,
        status_text: str = "OK",
        headers: dict[str, str] | None = None,
    ) -> None:
        """A complete response in the original's shape: one frame per chunk, the last done."""
        pieces = list(chunks) or [b""]
        for i, chunk in enumerate(pieces):
            frame: dict[str, Any] = {"message_id": message_id, "done": i == len(pieces) - 1}
            if i == 0:
                frame.update(
                    status=status,
                    statusText=status_text,
                    headers=headers if headers is not None else {"Content-Type": "text/plain"},
                )
            if chunk:
                frame["data"] = base64.b64encode(chunk).decode()
            await self.send(**frame)


Behavior = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def fake_server(behavior: Behavior, *, reject: int | None = None) -> AsyncIterator[str]:
    """Serve ``behavior`` on 127.0.0.1; yields the base URL ``http://127.0.0.1:PORT``."""
    failures: list[BaseException] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        if reject is not None:
            await request.reject(reject, body=b"origin not allowed")
            return
        ws = await request.accept()
        try:
            await behavior(Peer(ws, request.path))
        except trio_websocket.ConnectionClosed:
            pass  # the client went away: the test decides whether that was expected
        except Exception as exc:  # surface assertion errors of the server script
            failures.append(exc)
            raise

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
        )
        yield f"http://127.0.0.1:{server.port}"
        nursery.cancel_scope.cancel()
    assert not failures, failures


def data_of(body: bytes) -> str:
    return base64.b64encode(body).decode()


# ---------------------------------------------------------------------------------------------
# Requests and responses
# ---------------------------------------------------------------------------------------------


async def test_request_message_and_simple_response() -> None:
    seen: list[dict[str, Any]] = []

    async def behavior(peer: Peer) -> None:
        for _ in range(3):
            msg = await peer.recv()
            seen.append(msg)
            await peer.respond(
                msg["message_id"], b'{"ok": true}', status=201, status_text="Created"
            )
        await peer.ws.get_message()  # until the client closes

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            async with await client.request("post", "/api/sessions?x=1", body="{}") as resp:
                assert (resp.status, resp.status_text) == (201, "Created")
                assert resp.headers == {"Content-Type": "text/plain"}
                assert resp.ok
                assert not resp.is_proxy_error
                assert await resp.read() == b'{"ok": true}'
            async with await client.request("PUT", "/bin", body=b"\x00\xff") as resp:
                assert await resp.read() == b'{"ok": true}'
            async with await client.request("GET", "/h", headers={"X-Test": "1"}, body=b"") as resp:
                assert resp.status == 201
            assert client.in_flight == 0

    first, second, third = seen
    assert first["method"] == "post"
    assert first["path"] == "/api/sessions?x=1"
    assert first["body"] == "{}"
    assert "body_base64" not in first
    assert base64.b64decode(second["body_base64"]) == b"\x00\xff"
    assert "body" not in second
    assert third["headers"] == {"X-Test": "1"}
    assert third["body"] == ""
    ids = [m["message_id"] for m in seen]
    assert all(isinstance(i, str) for i in ids)
    assert len(set(ids)) == 3


async def test_connects_to_endpoint_with_query_and_headers() -> None:
    paths: list[str] = []

    async def handler_behavior(peer: Peer) -> None:
        paths.append(peer.path)
        await peer.ws.get_message()

    auth = "http://127.0.0.1:1/?token=a b&c=d"
    with trio.fail_after(TIMEOUT):
        async with (
            fake_server(handler_behavior) as url,
            open_client(url + "/base/", auth_url=auth, min_version="0.0.7") as client,
        ):
            assert client.url == url + "/base/"
    (path,) = paths
    parts = urlsplit(path)
    assert parts.path == "/base/http_over_websocket"
    assert parse_qs(parts.query) == {
        "min_version": ["0.0.7"],
        "jupyter_http_over_ws_auth_url": [auth],
    }


async def test_origin_and_extra_headers_reach_the_upgrade_request() -> None:
    got: list[list[tuple[bytes, bytes]]] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        got.append(list(request.headers))
        ws = await request.accept()
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
            )
            async with open_client(
                f"ws://127.0.0.1:{server.port}",
                origin="https://colab.research.google.com",
                extra_headers={"Cookie": "a=b", "Origin": "https://overridden.example"},
            ):
                pass
            nursery.cancel_scope.cancel()
    headers = {name.lower(): value for name, value in got[0]}
    assert headers[b"origin"] == b"https://colab.research.google.com"
    assert headers[b"cookie"] == b"a=b"


async def test_interleaved_frames_are_demultiplexed() -> None:
    async def behavior(peer: Peer) -> None:
        a = (await peer.recv())["message_id"]
        b = (await peer.recv())["message_id"]
        head = {"status": 200, "statusText": "OK", "done": False}
        # b's first frame before a's, and their bodies interleaved frame by frame.
        await peer.send(message_id=b, headers={"X": "b"}, data=data_of(b"b1"), **head)
        await peer.send(message_id=a, headers={"X": "a"}, data=data_of(b"a1"), **head)
        await peer.send(message_id=b, data=data_of(b"b2"), done=False)
        await peer.send(message_id=a, data=data_of(b"a2"), done=False)
        await peer.send(message_id=a, data=data_of(b"a3"), done=True)
        await peer.send(message_id=b, data=data_of(b"b3"), done=True)
        await peer.ws.get_message()

    results: dict[str, tuple[dict[str, str], list[bytes]]] = {}

    async def fetch(client: Client, name: str) -> None:
        async with await client.request("GET", "/" + name) as resp:
            results[name] = (resp.headers, [chunk async for chunk in resp.body()])

    with trio.fail_after(TIMEOUT):
        async with (
            fake_server(behavior) as url,
            open_client(url) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(fetch, client, "a")
            # The server reads a before b: send b only once a went out.
            await _wait_until(lambda: client.in_flight == 1)
            nursery.start_soon(fetch, client, "b")
    assert results == {
        "a": ({"X": "a"}, [b"a1", b"a2", b"a3"]),
        "b": ({"X": "b"}, [b"b1", b"b2", b"b3"]),
    }


async def _collect(resp: Response, into: list[bytes]) -> None:
    async for chunk in resp.body():
        into.append(chunk)


async def _wait_until(predicate: Callable[[], bool]) -> None:
    # Yields to the scheduler until another task made predicate true (tasks in this process,
    # no wall-clock sleeping).
    while not predicate():
        await trio.testing.wait_all_tasks_blocked()


async def test_streamed_body_in_many_frames() -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(20)]

    async def behavior(peer: Peer) -> None:
        msg = await peer.recv()
        await peer.respond(msg["message_id"], *chunks)
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url, buffer_frames=2) as client:
            resp = await client.request("GET", "/big")
            received = [chunk async for chunk in resp.body()]
            # A second iteration continues at the end: nothing more.
            assert [chunk async for chunk in resp.body()] == []
            assert await resp.read() == b""
    assert received == chunks


async def test_first_frame_without_data_and_empty_final_frame() -> None:
    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.send(message_id=mid, status=204, statusText="No Content", headers={}, done=True)
        mid = (await peer.recv())["message_id"]
        await peer.send(message_id=mid, status=200, statusText="OK", headers={}, done=False)
        await peer.send(message_id=mid, data=data_of(b"x"), done=False)
        await peer.send(message_id=mid, done=True)
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            resp = await client.request("DELETE", "/a")
            assert resp.status == 204
            assert not resp.is_proxy_error  # a backend response: it has headers
            assert await resp.read() == b""
            resp = await client.request("GET", "/b")
            assert [c async for c in resp.body()] == [b"x"]


async def test_proxy_error_frame_is_a_response_with_empty_body() -> None:
    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.send(done=True, status=502, statusText="Bad Gateway: refused", message_id=mid)
        mid = (await peer.recv())["message_id"]
        await peer.respond(mid, b"nope", status=404, status_text="Not Found")
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            resp = await client.request("GET", "/api/x")
            assert resp.is_proxy_error
            assert (resp.status, resp.status_text) == (502, "Bad Gateway: refused")
            assert resp.headers == {}
            assert await resp.read() == b""
            assert client.in_flight == 0
            resp = await client.request("GET", "/api/missing")
            assert not resp.is_proxy_error
            assert resp.status == 404
            assert await resp.read() == b"nope"


async def test_error_after_data_raises_body_truncated() -> None:
    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.send(
            message_id=mid,
            status=200,
            statusText="OK",
            headers={},
            data=data_of(b"one"),
            done=False,
        )
        await peer.send(message_id=mid, data=data_of(b"two"), done=False)
        await peer.send(done=True, status=502, statusText="Bad Gateway: reset", message_id=mid)
        # Whatever else comes for that id is ignored.
        await peer.send(message_id=mid, data=data_of(b"late"), done=True)
        mid = (await peer.recv())["message_id"]
        await peer.respond(mid, b"fine")
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            resp = await client.request("GET", "/file")
            got: list[bytes] = []
            with pytest.raises(BodyTruncated) as info:
                await _collect(resp, got)
            assert got == [b"one", b"two"]
            assert (info.value.status, info.value.status_text) == (502, "Bad Gateway: reset")
            assert client.in_flight == 0
            resp = await client.request("GET", "/other")
            assert await resp.read() == b"fine"


async def test_truncated_body_via_read() -> None:
    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.send(message_id=mid, status=200, statusText="OK", headers={}, done=False)
        await peer.send(done=True, status=500, statusText="Uncaught", message_id=mid)
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            resp = await client.request("GET", "/file")
            with pytest.raises(BodyTruncated, match="500 Uncaught"):
                await resp.read()


async def test_malformed_first_frame_is_a_protocol_error() -> None:
    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.ws.send_message("not json")  # ignored
        await peer.ws.send_message("[" * 100_000)  # ignored: too deep for json (RecursionError)
        await peer.ws.send_message(b"binary")  # ignored
        await peer.send(done=True, status=400, statusText="JSON input is required.")  # no id
        await peer.send(message_id="not-ours", data=data_of(b"?"), done=True)  # unknown id
        # No status; the headers hold a cookie the error must not repeat.
        await peer.send(
            message_id=mid, headers={"Set-Cookie": "s=secret"}, data=data_of(b"x"), done=True
        )
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            with pytest.raises(ProtocolError, match="no status") as info:
                await client.request("GET", "/")
            assert "secret" not in str(info.value)
            assert "'headers'" in str(info.value)  # the frame's keys say what it held
            assert client.in_flight == 0


# ---------------------------------------------------------------------------------------------
# Cancellation
# ---------------------------------------------------------------------------------------------


async def test_cancelling_body_iteration_sends_cancel_and_drops_frames() -> None:
    cancels: list[dict[str, Any]] = []

    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.send(
            message_id=mid, status=200, statusText="OK", headers={}, data=data_of(b"1"), done=False
        )
        cancel = await peer.recv()
        cancels.append(cancel)
        # What the original answers to a cancel, then late frames: all must be ignored.
        await peer.send(done=True, status=400, statusText="Invalid request.", message_id=mid)
        await peer.send(message_id=mid, data=data_of(b"2"), done=True)
        mid2 = (await peer.recv())["message_id"]
        await peer.respond(mid2, b"second")
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            resp = await client.request("GET", "/slow")
            with trio.CancelScope() as scope:
                async for chunk in resp.body():
                    assert chunk == b"1"
                    scope.cancel()
            assert scope.cancelled_caught
            assert client.in_flight == 0
            resp2 = await client.request("GET", "/next")
            assert await resp2.read() == b"second"
    assert cancels == [{"message_id": resp.message_id, "cancel": True}]


async def test_cancelling_request_before_first_frame_sends_cancel() -> None:
    received = trio.Event()
    messages: list[dict[str, Any]] = []

    async def behavior(peer: Peer) -> None:
        messages.append(await peer.recv())
        received.set()
        messages.append(await peer.recv())
        mid = (await peer.recv())["message_id"]
        await peer.respond(mid, b"ok")
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            async with trio.open_nursery() as nursery:

                async def waiter(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                    with trio.CancelScope() as scope:
                        task_status.started(scope)
                        await client.request("GET", "/never")
                        raise AssertionError("the request should have been cancelled")

                scope = await nursery.start(waiter)
                await received.wait()
                scope.cancel()
            assert client.in_flight == 0
            assert await (await client.request("GET", "/x")).read() == b"ok"
    request, cancel = messages
    assert request["path"] == "/never"
    assert cancel == {"message_id": request["message_id"], "cancel": True}


async def test_request_cancelled_before_sending_is_never_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages: list[dict[str, Any]] = []

    async def behavior(peer: Peer) -> None:
        while True:
            msg = await peer.recv()
            messages.append(msg)
            await peer.respond(msg["message_id"], b"ok")

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            # A slow network: the writer is stuck sending the first message until the gate opens.
            gate, sending = trio.Event(), trio.Event()
            send = client._ws.send_message

            async def slow_send(message: str | bytes) -> None:
                sending.set()
                await gate.wait()
                await send(message)

            monkeypatch.setattr(client._ws, "send_message", slow_send)
            async with trio.open_nursery() as nursery:
                first: list[bytes] = []

                async def fetch_first() -> None:
                    first.append(await (await client.request("GET", "/first")).read())

                nursery.start_soon(fetch_first)
                await sending.wait()
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await client.request("GET", "/withdrawn")
                assert client.in_flight == 1
                gate.set()
            assert first == [b"ok"]
            assert await (await client.request("GET", "/third")).read() == b"ok"
    # Neither the withdrawn request nor a cancel for it ever left the client.
    assert [m.get("path") for m in messages] == ["/first", "/third"]


async def test_closing_response_early_cancels_it() -> None:
    cancels: list[dict[str, Any]] = []
    cancelled = trio.Event()

    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.send(message_id=mid, status=200, statusText="OK", headers={}, done=False)
        cancels.append(await peer.recv())
        cancelled.set()
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            async with await client.request("GET", "/stream") as resp:
                pass
            assert client.in_flight == 0
            await cancelled.wait()
    assert cancels == [{"message_id": resp.message_id, "cancel": True}]


async def test_completed_response_close_sends_nothing() -> None:
    messages: list[dict[str, Any]] = []

    async def behavior(peer: Peer) -> None:
        while True:
            msg = await peer.recv()
            messages.append(msg)
            if "method" in msg:
                await peer.respond(msg["message_id"], b"x")

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            async with await client.request("GET", "/1") as resp:
                assert await resp.read() == b"x"
            async with await client.request("GET", "/2") as resp:
                pass  # complete in its only frame: nothing to cancel
            assert await (await client.request("GET", "/3")).read() == b"x"
    assert [m.get("path") for m in messages] == ["/1", "/2", "/3"]


# ---------------------------------------------------------------------------------------------
# Backpressure and head-of-line blocking
# ---------------------------------------------------------------------------------------------

BIG_FRAMES = 10


async def _big_then_small(
    peer: Peer, cancels: list[str] | None = None, cancelled: trio.Event | None = None
) -> None:
    """Answer /big with BIG_FRAMES frames, then every other request with one frame."""
    while True:
        msg = await peer.recv()
        if msg.get("cancel"):
            if cancels is not None:
                cancels.append(msg["message_id"])
            if cancelled is not None:
                cancelled.set()
            continue
        if msg["path"] == "/big":
            await peer.respond(msg["message_id"], *[b"%d" % i for i in range(BIG_FRAMES)])
        else:
            await peer.respond(msg["message_id"], b"small")


async def test_unread_response_is_given_up_after_stall_timeout() -> None:
    """Memory stays bounded and the socket moves on: the unread response gets ResponseStalled."""
    cancels: list[str] = []
    cancelled = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with (
            fake_server(partial(_big_then_small, cancels=cancels, cancelled=cancelled)) as url,
            open_client(url, buffer_frames=2, stall_timeout=0.2) as client,
        ):
            big = await client.request("GET", "/big")
            # /small's frame sits behind /big's on the socket; /big is not read.
            small = await client.request("GET", "/small")
            assert await small.read() == b"small"
            got: list[bytes] = []
            with pytest.raises(ResponseStalled):
                await _collect(big, got)
            # Only what fit: the first frame's data and buffer_frames more.
            assert got == [b"0", b"1", b"2"]
            await cancelled.wait()
    assert cancels == [big.message_id]


async def test_slow_reader_gets_everything_and_blocks_the_socket_meanwhile() -> None:
    """Without a stall timeout nothing is lost: the reader waits (head-of-line blocking)."""
    consumed: list[bytes] = []
    small_seen_after: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with (
            fake_server(_big_then_small) as url,
            open_client(url, buffer_frames=2, stall_timeout=None) as client,
        ):
            big = await client.request("GET", "/big")

            async def read_big_slowly() -> None:
                async for chunk in big.body():
                    consumed.append(chunk)
                    await trio.testing.wait_all_tasks_blocked()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_big_slowly)
                small = await client.request("GET", "/small")
                small_seen_after.append(len(consumed))
                assert await small.read() == b"small"
    assert consumed == [b"%d" % i for i in range(BIG_FRAMES)]
    # /small's first frame came after all of /big's frames, and only buffer_frames (+ the one
    # the reader holds) could be waiting unread: the rest had to be consumed first.
    assert small_seen_after[0] >= BIG_FRAMES - 2 - 1


async def test_closing_unread_response_releases_the_socket() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            fake_server(_big_then_small) as url,
            open_client(url, buffer_frames=2, stall_timeout=None) as client,
        ):
            big = await client.request("GET", "/big")
            async with trio.open_nursery() as nursery:
                results: list[bytes] = []

                async def small() -> None:
                    results.append(await (await client.request("GET", "/small")).read())

                nursery.start_soon(small)
                # With no stall timeout /small could never arrive while /big holds the reader.
                await trio.testing.wait_all_tasks_blocked()
                assert results == []
                await big.aclose()
            assert results == [b"small"]
            with pytest.raises(StopAsyncIteration):
                await big.body().__anext__()


# ---------------------------------------------------------------------------------------------
# Refusals and closed sockets
# ---------------------------------------------------------------------------------------------


async def test_min_version_refusal_4400_surfaces_as_connection_refused() -> None:
    reason = "Requested version (0.0.9) > Current version (0.0.7). Please upgrade this package."

    async def behavior(peer: Peer) -> None:
        assert peer.query["min_version"] == ["0.0.9"]
        await peer.ws.aclose(4400, reason)

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url:
            with pytest.raises(ConnectionRefused) as info:
                async with open_client(url, min_version="0.0.9") as client:
                    await client.request("GET", "/")
    assert (info.value.code, info.value.status, info.value.reason) == (4400, 400, reason)
    assert "Please upgrade" in str(info.value)


async def test_original_close_code_400_surfaces_as_connection_refused() -> None:
    """The original closes with 400, which wsproto reports as 1002: still a refusal, promptly."""

    async def behavior(peer: Peer) -> None:
        await peer.ws.aclose(400, "Requested version (9.0) > Current version (0.0.7).")

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url:
            start = trio.current_time()
            with pytest.raises(ConnectionRefused) as info:
                async with open_client(url, min_version="9.0") as client:
                    await client.request("GET", "/")
            # We do not wait for the server to close TCP after a close frame we cannot answer.
            assert trio.current_time() - start < 2
    assert info.value.code == 1002
    assert info.value.status is None
    assert "9.0" in str(info.value)


async def test_handshake_rejection_is_connection_refused() -> None:
    async def behavior(peer: Peer) -> None:
        raise AssertionError("never accepted")

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior, reject=403) as url:
            with pytest.raises(ConnectionRefused) as info:
                async with open_client(url):
                    pass
    assert info.value.status == 403
    assert info.value.code is None
    assert info.value.reason == "origin not allowed"


async def test_unreachable_server_is_client_connection_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with trio.fail_after(TIMEOUT), pytest.raises(ClientConnectionError):
            async with open_client(f"http://127.0.0.1:{port}"):
                pass


async def test_connection_closed_mid_body_is_connection_lost() -> None:
    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.send(
            message_id=mid, status=200, statusText="OK", headers={}, data=data_of(b"a"), done=False
        )
        await peer.ws.aclose(1011, "server error")

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url, open_client(url) as client:
            resp = await client.request("GET", "/")
            with pytest.raises(ConnectionLost) as info:
                await resp.read()
            assert (info.value.code, info.value.reason) == (1011, "server error")
            assert client.closed
            with pytest.raises(ConnectionLost):
                await client.request("GET", "/again")


async def test_response_outliving_the_client_fails() -> None:
    async def behavior(peer: Peer) -> None:
        mid = (await peer.recv())["message_id"]
        await peer.send(message_id=mid, status=200, statusText="OK", headers={}, done=False)
        await peer.ws.get_message()

    resp: Response | None = None
    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url:
            async with open_client(url) as client:
                resp = await client.request("GET", "/")
            with pytest.raises(ConnectionLost, match="client is closed"):
                await resp.read()


async def test_exception_in_block_is_not_wrapped() -> None:
    async def behavior(peer: Peer) -> None:
        await peer.ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url:
            with pytest.raises(KeyError):
                async with open_client(url):
                    raise KeyError("mine")


# ---------------------------------------------------------------------------------------------
# diagnose and proxied WebSockets
# ---------------------------------------------------------------------------------------------


async def test_diagnose() -> None:
    paths: list[str] = []

    async def behavior(peer: Peer) -> None:
        paths.append(peer.path)
        message = await peer.ws.get_message()
        await peer.send(
            message_id=message,
            extension_version="0.0.7",
            has_authentication_cookie=False,
            is_outdated_extension=True,
        )

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url:
            answer = await diagnose(url, min_version="0.0.8")
            async with open_client(url, min_version="0.0.8") as client:
                answer2 = await client.diagnose()
    for got in (answer, answer2):
        assert got["extension_version"] == "0.0.7"
        assert got["is_outdated_extension"] is True
    assert [urlsplit(p).path for p in paths] == [
        "/http_over_websocket/diagnose",
        "/http_over_websocket",
        "/http_over_websocket/diagnose",
    ]
    assert parse_qs(urlsplit(paths[0]).query) == {"min_version": ["0.0.8"]}


async def test_diagnose_rejects_an_answer_to_another_message() -> None:
    async def behavior(peer: Peer) -> None:
        await peer.ws.get_message()
        await peer.send(message_id="something else", extension_version="0.0.7")

    with trio.fail_after(TIMEOUT):
        async with fake_server(behavior) as url:
            with pytest.raises(ProtocolError):
                await diagnose(url)


async def test_open_proxied_websocket() -> None:
    paths: list[str] = []

    async def behavior(peer: Peer) -> None:
        paths.append(peer.path)
        while True:
            message = await peer.ws.get_message()
            await peer.ws.send_message(message)

    auth = "http://127.0.0.1:1/?token=t"
    with trio.fail_after(TIMEOUT):
        async with (
            fake_server(behavior) as url,
            open_proxied_websocket(
                url, "/api/kernels/k1/channels?session_id=s1", auth_url=auth
            ) as ws,
        ):
            await ws.send_message("text")
            assert await ws.get_message() == "text"
            await ws.send_message(b"\x00bin")
            assert await ws.get_message() == b"\x00bin"
    parts = urlsplit(paths[0])
    assert parts.path == "/http_over_websocket/proxied_ws/api/kernels/k1/channels"
    assert parse_qs(parts.query) == {
        "session_id": ["s1"],
        "jupyter_http_over_ws_auth_url": [auth],
    }


# ---------------------------------------------------------------------------------------------
# run_code
# ---------------------------------------------------------------------------------------------


class ScriptedKernel:
    """A kernel's channels socket that answers our execute_request with ``script``: (msg_type,
    content) pairs, each sent as a reply to our msg_id unless it is raw text already."""

    def __init__(self, script: list[tuple[str, dict[str, Any]] | str | bytes]) -> None:
        self._script = script
        self._replies: list[str | bytes] = []
        self.sent: list[dict[str, Any]] = []

    async def send_message(self, message: str) -> None:
        request = json.loads(message)
        self.sent.append(request)
        parent = {"msg_id": request["header"]["msg_id"]}
        self._replies = [
            item
            if isinstance(item, (str, bytes))
            else json.dumps({"parent_header": parent, "msg_type": item[0], "content": item[1]})
            for item in self._script
        ]

    async def get_message(self) -> str | bytes:
        if not self._replies:
            await trio.sleep_forever()  # a kernel that has nothing more to say
        return self._replies.pop(0)


IDLE = ("status", {"execution_state": "idle"})


async def test_run_code_gathers_what_the_code_wrote() -> None:
    seen: list[tuple[str, str]] = []
    kernel = ScriptedKernel(
        [
            ("status", {"execution_state": "busy"}),
            ("stream", {"name": "stdout", "text": "4"}),
            ("stream", {"name": "stderr", "text": "warn\n"}),
            ("stream", {"name": "stdout", "text": "2\n"}),
            ("execute_result", {"data": {"text/plain": "7"}}),
            IDLE,
            ("execute_reply", {"status": "ok"}),
        ]
    )
    with trio.fail_after(TIMEOUT):
        result = await run_code(
            kernel, "print(42)", session="s1", on_output=lambda *out: seen.append(out)
        )
    assert (result.status, result.stdout, result.stderr, result.result) == (
        "ok",
        "42\n",
        "warn\n",
        "7",
    )
    assert result.ok
    assert seen == [("stdout", "4"), ("stderr", "warn\n"), ("stdout", "2\n")]
    assert kernel.sent[0]["content"]["code"] == "print(42)"
    assert kernel.sent[0]["header"]["session"] == "s1"


async def test_run_code_waits_for_both_the_reply_and_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # iopub's idle may come before the shell's reply: output in between still counts.
    kernel = ScriptedKernel(
        [
            IDLE,
            ("stream", {"name": "stdout", "text": "late\n"}),
            ("execute_reply", {"status": "ok"}),
        ]
    )
    with trio.fail_after(TIMEOUT):
        assert (await run_code(kernel, "x")).stdout == "late\n"
    # Without the idle it is not done: the wait is the caller's to bound.
    with trio.move_on_after(60) as scope:
        await run_code(ScriptedKernel([("execute_reply", {"status": "ok"})]), "x")
    assert scope.cancelled_caught


async def test_run_code_reports_the_error_without_colours() -> None:
    kernel = ScriptedKernel(
        [
            ("stream", {"name": "stdout", "text": "before\n"}),
            (
                "error",
                {
                    "ename": "ZeroDivisionError",
                    "evalue": "division by zero",
                    "traceback": [
                        "\x1b[0;31mTraceback\x1b[0m",
                        "ZeroDivisionError: division by zero",
                    ],
                },
            ),
            ("execute_reply", {"status": "error", "ename": "ZeroDivisionError"}),
            IDLE,
        ]
    )
    with trio.fail_after(TIMEOUT):
        result = await run_code(kernel, "1/0")
    assert not result.ok
    assert (result.status, result.stdout) == ("error", "before\n")
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.traceback == "Traceback\nZeroDivisionError: division by zero"


async def test_run_code_takes_the_error_from_the_reply_when_iopub_has_none() -> None:
    kernel = ScriptedKernel(
        [("execute_reply", {"status": "error", "ename": "KeyboardInterrupt", "evalue": ""}), IDLE]
    )
    with trio.fail_after(TIMEOUT):
        result = await run_code(kernel, "x")
    assert (result.ok, result.error, result.traceback) == (False, "KeyboardInterrupt: ", "")


async def test_run_code_skips_what_is_not_a_reply_to_it() -> None:
    other = json.dumps(
        {"parent_header": {"msg_id": "other"}, "msg_type": "stream",
         "content": {"name": "stdout", "text": "not ours\n"}}
    )  # fmt: skip
    kernel = ScriptedKernel(
        [
            b"\x00binary buffers",
            "[" * 100_000,  # too deep for json
            "not json",
            json.dumps({"parent_header": "not a dict"}),
            other,
            ("stream", {"name": "stdout", "text": "ours\n"}),
            ("execute_reply", {"status": "ok"}),
            IDLE,
        ]
    )
    with trio.fail_after(TIMEOUT):
        assert (await run_code(kernel, "x")).stdout == "ours\n"
