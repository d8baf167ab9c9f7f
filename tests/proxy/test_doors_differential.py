"""Hostile raw requests sent to both doors: the same status class, and the backend sees the same.

Where the doors differ by design (docs/front-door.md), the difference is named below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

import trio_httpws

from ..support.proxies import DOORS, running_proxy
from ..support.recorder import Recorder, running_recorder

HOST = b"Host: 127.0.0.1:{port}\r\n"

#: name -> the raw request (``{port}`` is the proxy's).
HOSTILE: dict[str, bytes] = {
    "authority-form target": b"GET //evil.example/x HTTP/1.1\r\n" + HOST + b"\r\n",
    "absolute-form target": b"GET http://evil.example/x HTTP/1.1\r\n" + HOST + b"\r\n",
    "asterisk target": b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n",
    "content-length and chunked": b"POST /x HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "two content-lengths": b"POST /x HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "negative content-length": b"POST /x HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
    "bad chunk size": b"POST /x HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "space before colon": b"GET /x HTTP/1.1\r\n" + HOST + b"X-A : b\r\n\r\n",
    "header without colon": b"GET /x HTTP/1.1\r\n" + HOST + b"NoColon\r\n\r\n",
    "control character in value": b"GET /x HTTP/1.1\r\n" + HOST + b"X-A: a\x01b\r\n\r\n",
    "no host": b"GET /x HTTP/1.1\r\n\r\n",
    "two hosts": b"GET /x HTTP/1.1\r\n" + HOST + HOST + b"\r\n",
    "foreign host": b"GET /x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "refused origin": b"POST /x HTTP/1.1\r\n"
    + HOST
    + b"Origin: https://evil.example\r\nContent-Length: 2\r\n\r\nhi",
    "http/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "unknown transfer-encoding": b"POST /x HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: gzip\r\n\r\nhello",
    "websocket upgrade without key": b"GET /ws HTTP/1.1\r\n"
    + HOST
    + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "proxy-style connect": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
}


#: Where the doors answer differently by design: name -> (hypercorn's, the door's).
BY_DESIGN: dict[str, tuple[tuple[str, list[str]], tuple[str, list[str]]]] = {
    # hypercorn speaks HTTP/2 with prior knowledge; the door answers HTTP/1.1's 400.
    "http/2 preface": (("closed", []), ("4xx", [])),
}


#: What both doors pass on to the backend, which then judges it itself: h11 accepts a control
#: character inside a header value, and neither door reads header values it does not use.
PASSED_ON = {"control character in value"}


async def exchange(port: int, request: bytes) -> bytes:
    """What the proxy answers: one whole answer, or all until it closes (2 s at most)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request.replace(b"{port}", str(port).encode()))
        received = b""
        with trio.move_on_after(2):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                received += chunk
                if _whole(received):
                    break
    return received


def _whole(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:] if sep else ():
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def status_class(answer: bytes) -> str:
    """``4xx`` / ``2xx`` / ..., or ``closed`` when the proxy closed without an answer."""
    if not answer.startswith(b"HTTP/1."):
        return "closed"
    return answer.split(b" ", 2)[1][:1].decode() + "xx"


@pytest.fixture
async def both_doors() -> AsyncIterator[dict[str, tuple[int, Recorder]]]:
    """Each door in front of a recorder of its own."""
    ports: dict[str, tuple[int, Recorder]] = {}
    async with running_recorder() as first, running_recorder() as second:
        recorders = dict(zip(DOORS, (first, second), strict=True))
        config = {door: trio_httpws.Config(backend=rec.url) for door, rec in recorders.items()}
        async with (
            running_proxy(config["hypercorn"], "hypercorn") as hyper,
            running_proxy(config["trio"], "trio") as own,
        ):
            for door, url in (("hypercorn", hyper), ("trio", own)):
                ports[door] = (int(url.rsplit(":", 1)[1]), recorders[door])
            yield ports


async def test_both_doors_refuse_alike_and_pass_the_backend_nothing_more(
    both_doors: dict[str, tuple[int, Recorder]],
) -> None:
    results: dict[str, dict[str, tuple[str, list[str]]]] = {door: {} for door in DOORS}
    for name, request in HOSTILE.items():
        for door, (port, recorder) in both_doors.items():
            recorder.seen.clear()
            answer = await exchange(port, request)
            seen = [f"{s.method} {s.target}" for s in recorder.seen]
            results[door][name] = (status_class(answer), seen)
    differ = {
        name: (results["hypercorn"][name], results["trio"][name])
        for name in HOSTILE
        if results["hypercorn"][name] != results["trio"][name]
    }
    assert differ == BY_DESIGN
    # Nothing else reached the backend, through either door.
    for door in DOORS:
        reached = {name for name, (_, seen) in results[door].items() if seen}
        assert reached == PASSED_ON, door
