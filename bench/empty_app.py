"""An ASGI app that does nothing: what hypercorn's trio worker costs by itself.

The benchmark serves it with the same ``python -m hypercorn --worker-class trio`` command line
as trio_httpws (``bench_procs.start_proxy``), on a port of its own, with no backend behind it:

- every HTTP request, whatever its path, gets 200 and a body as large as the Notebook backend's
  ``GET /api/status`` answer, with as many headers (hypercorn adds ``date`` and ``server``
  itself, as tornado does), so the bytes on the wire match what the client gets from direct;
- every WebSocket is accepted and each message echoed as it came (text as text, bytes as
  bytes), as the backend's ``/bench/ws-echo`` does;
- but a WebSocket to ``/http_over_websocket`` (the tunnel; its query, with the auth URL and
  min_version, is ignored: there is no backend to log in to) answers each request message with
  the one frame trio_httpws sends for ``GET /api/status``: its ``message_id``, status 200, the
  headers (in the protocol's Header-Case, ``Server`` and ``Date`` included, as the backend's
  own reach a tunnel client), the body base64-encoded and ``done: true``.

A proxy in series under hypercorn pays at least this per request or message plus the
backend's own cost, so this bounds what any app served this way can reach.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The length of the backend's /api/status body (122 bytes with Notebook 6.5: connections,
#: kernels, last_activity, started), as JSON like it.
STATUS_BODY = (
    b'{"connections": 0, "kernels": 0, "last_activity": "2026-01-01T00:00:00.000000Z", '
    b'"started": "2026-01-01T00:00:00.000000Z"}'
)
#: tornado's headers on that answer, but for server and date, which hypercorn adds.
HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
    (
        b"content-security-policy",
        b"frame-ancestors 'self'; report-uri /api/security/csp-report; default-src 'none'",
    ),
    (b"access-control-allow-origin", b"*"),
    (b"etag", b'"55b5b64415ab855760bec98858e954ff19f7d920"'),
    (b"content-length", str(len(STATUS_BODY)).encode()),
]

TUNNEL_PATH = "/http_over_websocket"
#: A tunnel frame after its message_id, which is all that changes from one request to the next
#: (built once: the empty app does no work of its own per request).
TUNNEL_FRAME_REST = json.dumps(
    {
        "status": 200,
        "statusText": "OK",
        "headers": {
            "-".join(word.capitalize() for word in name.decode().split("-")): value.decode()
            for name, value in [
                (b"server", b"TornadoServer/6.4.2"),
                (b"date", b"Thu, 01 Jan 2026 00:00:00 GMT"),
                *HEADERS,
            ]
        },
        "data": base64.b64encode(STATUS_BODY).decode("ascii"),
        "done": True,
    }
)[1:]


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await _http(receive, send)
    elif scope["type"] == "websocket" and scope["path"] == TUNNEL_PATH:
        await _websocket(receive, send, _tunnel_answer)
    elif scope["type"] == "websocket":
        await _websocket(receive, send, _echo)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def _http(receive: Receive, send: Send) -> None:
    # The request body is read to its end first, as a proxy would before answering.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": STATUS_BODY})


async def _websocket(receive: Receive, send: Send, answer: Callable[[Message], Message]) -> None:
    """Accept, then send ``answer(message)`` for every message received, until disconnected."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            await send(answer(message))
        elif kind == "websocket.disconnect":
            return


def _echo(message: Message) -> Message:
    # ASGI sets one of the two; the other is absent or None.
    if message.get("text") is not None:
        return {"type": "websocket.send", "text": message["text"]}
    return {"type": "websocket.send", "bytes": message.get("bytes") or b""}


def _tunnel_answer(message: Message) -> Message:
    # Parsed as a proxy must, to find the message_id (echoed with its JSON type).
    request = json.loads(message.get("text") or message.get("bytes") or b"")
    frame = '{"message_id":' + json.dumps(request["message_id"]) + "," + TUNNEL_FRAME_REST
    return {"type": "websocket.send", "text": frame}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
