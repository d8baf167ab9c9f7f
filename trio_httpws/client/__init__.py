"""A trio client for the HTTP-over-WebSocket protocol (``jupyter_http_over_ws`` 0.0.8).

It speaks to trio_httpws and to the original extension alike::

    async with open_client("http://127.0.0.1:8888", auth_url=url_with_token) as client:
        async with await client.request("GET", "/api/sessions") as resp:
            print(resp.status, resp.headers["Content-Type"])
            sessions = json.loads(await resp.read())

        async with open_proxied_websocket(
            "http://127.0.0.1:8888", f"/api/kernels/{kernel_id}/channels", auth_url=url_with_token
        ) as ws:
            result = await run_code(ws, "print(6*7)")  # result.stdout == "42\n"

For Colab's current, direct flow it also sends plain HTTP requests with chosen headers
(:func:`http_request`) and opens WebSockets straight to the runtime (:func:`open_websocket`).

Rooms: ``_mux`` (the multiplexed :class:`Client` and its streamed responses), ``_ws`` (opening
WebSockets: diagnose, proxied, direct), ``_http`` (plain requests over the package's h11 stack),
``_kernel`` (code on a kernel's channels) and ``_errors``. ``trio-httpws doctor`` is built on this
public API, beside it (:mod:`trio_httpws.doctor`).

Many requests may be in flight on one socket at once; the server's frames are demultiplexed by
``message_id``. One reader task receives every frame of the socket and hands each to its
response through a bounded memory channel of ``buffer_frames`` frames (one frame carries at most
64 KiB of body, so the default of 16 holds about 1 MiB per response).

Head-of-line blocking, and what we chose
----------------------------------------
A WebSocket is one ordered stream and the protocol has no per-request flow control, so a frame of
a response that nobody reads can only be held, dropped, or buffered without bound: the reader
cannot get past it to the frames of other responses behind it. We hold it. While one response's
buffer is full the reader waits, which stops reading from the socket and pushes back through TCP
to the server (and from there, with trio_httpws, to the backend): the body is never lost and
memory stays bounded, but every other response on the socket waits too (the server multiplexes
all of them into that same stream, so it would stall on them anyway). A consumer that reads
steadily, however slowly, only slows the socket down. A consumer that stops reading altogether
must not stall the socket forever, so after ``stall_timeout`` seconds without progress (default
10; ``None`` waits forever) the reader gives that response up: its body iterator yields what was
buffered and then raises :exc:`ResponseStalled`, the request is cancelled on the server and the
other responses move on. Closing a response (``aclose()``, leaving ``async with``, or cancelling
the task that reads it) releases its frames at once. To read several large bodies at the same
time, read them from concurrent tasks.

Cancellation
------------
Cancelling the task that awaits :meth:`Client.request` or iterates a body, or closing the response
before its end, sends ``{"message_id": X, "cancel": true}`` (a trio_httpws extension: the original
answers it with a 400 error frame, which we ignore) and drops every later frame of that request.
A request cancelled before its message left the client is never sent at all.

Errors
------
Errors the proxy makes itself (bad request, backend unreachable, ...) arrive as a single final
frame with a status and no headers: :meth:`Client.request` returns them as a :class:`Response`
whose ``is_proxy_error`` is true and whose body is empty. A frame with a status after the first
frame means the body was cut short (trio_httpws: the backend died mid-body; the original: an
exception while proxying): the body iterator raises :exc:`BodyTruncated`.

The original extension refuses a bad ``min_version`` with close code 400, which is not a valid
WebSocket close code: wsproto (under trio-websocket) rejects that close frame and reports code 1002
with its own reason, so the server's text is lost. We report such a close, on a socket that
received nothing, as :exc:`ConnectionRefused` with ``code`` 1002 and ``status`` None; trio_httpws
closes with 4400 and its reason, which arrive intact (``status`` 400).

Both servers refuse a ``min_version`` by accepting the WebSocket and closing it at once, and
nothing but a message can tell the client when that close is due, so :func:`open_client` returns
normally and the refusal is raised by the first :meth:`Client.request` (``Client.closed`` turns
true as soon as the close arrives). We do not probe with a WebSocket ping: a trio-websocket server
that receives a ping after sending its close frame crashes trying to answer it. A refused handshake
(an ``Origin`` the server does not allow: HTTP 403) raises from :func:`open_client` itself.
"""

from __future__ import annotations

from .._protocol import PROTOCOL_VERSION
from ._errors import (
    BodyTruncated,
    ClientConnectionError,
    ClientError,
    ConnectionLost,
    ConnectionRefused,
    ProtocolError,
    ResponseStalled,
)
from ._http import PlainResponse, http_request
from ._kernel import CodeResult, KernelSocket, execute_request, run_code
from ._mux import Client, Response, open_client
from ._ws import diagnose, open_proxied_websocket, open_websocket

__all__ = [
    "PROTOCOL_VERSION",
    "BodyTruncated",
    "Client",
    "ClientConnectionError",
    "ClientError",
    "CodeResult",
    "ConnectionLost",
    "ConnectionRefused",
    "KernelSocket",
    "PlainResponse",
    "ProtocolError",
    "Response",
    "ResponseStalled",
    "diagnose",
    "execute_request",
    "http_request",
    "open_client",
    "open_proxied_websocket",
    "open_websocket",
    "run_code",
]
