"""The benchmark's backend endpoints, as a Notebook 6 server extension.

The benchmark starts the Notebook 6 server (Python 3.11 venv) with this module on PYTHONPATH and
``--NotebookApp.nbserver_extensions={'jupyter_http_over_ws': True, 'bench_ext': True}``. Every
endpoint authenticates like Jupyter's REST API (token or login cookie; XSRF for cookie POSTs),
so each target pays the same auth cost it pays for ``/api/...``:

- ``GET  /bench/bytes?n=N``  streams N bytes (Content-Length set) in 64 KiB writes, flushing
  after each, so the server never holds more than one block for a slow reader;
- ``POST /bench/echo``       answers with the request body;
- ``POST /bench/sink``       answers with the length of the request body;
- ``WS   /bench/ws-echo``    echoes every message, text as text and binary as binary, reading
  the next message only once the echo was written (backpressure both ways);
- ``WS   /bench/ws-flood``   on a message ``N``, sends N bytes as 64 KiB text messages, each once
  the one before is in the kernel's socket buffer (a reader that stops reading stops it), as
  a kernel busy printing does.
"""

from __future__ import annotations

from typing import Any

from notebook.base.handlers import APIHandler, IPythonHandler  # type: ignore[import-not-found]
from notebook.utils import url_path_join  # type: ignore[import-not-found]
from tornado import web, websocket

BLOCK_SIZE = 64 * 1024
_BLOCK = bytes(range(256)) * (BLOCK_SIZE // 256)
_TEXT_BLOCK = "".join(chr(32 + i % 95) for i in range(BLOCK_SIZE))


def pattern_byte(offset: int) -> int:
    """The byte at ``offset`` of every /bench/bytes body (the driver checks samples of it)."""
    return offset % 256


class BytesHandler(APIHandler):  # type: ignore[misc]
    @web.authenticated  # type: ignore[misc]
    async def get(self) -> None:
        total = int(self.get_argument("n"))
        if total < 0:
            raise web.HTTPError(400, "n must be >= 0")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(total))
        left = total
        while left > 0:
            block = _BLOCK if left >= BLOCK_SIZE else _BLOCK[:left]
            self.write(block)
            left -= len(block)
            # Waits until the block is in the kernel's socket buffer: a reader that stops
            # reading stops this loop, so the backend itself never buffers a whole body.
            await self.flush()


class EchoHandler(APIHandler):  # type: ignore[misc]
    @web.authenticated  # type: ignore[misc]
    def post(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.write(self.request.body)


class SinkHandler(APIHandler):  # type: ignore[misc]
    @web.authenticated  # type: ignore[misc]
    def post(self) -> None:
        self.write(str(len(self.request.body)))


class WsEchoHandler(websocket.WebSocketHandler, IPythonHandler):  # type: ignore[misc]
    def check_origin(self, origin: str) -> bool:
        # NotebookApp.allow_origin decides, as for the kernel channels.
        return bool(IPythonHandler.check_origin(self, origin))

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.get_current_user() is None:
            raise web.HTTPError(403)
        await super().get(*args, **kwargs)

    async def on_message(self, message: str | bytes) -> None:
        await self.write_message(message, binary=isinstance(message, bytes))


class WsFloodHandler(WsEchoHandler):
    async def on_message(self, message: str | bytes) -> None:
        left = int(message)
        try:
            while left > 0:
                block = _TEXT_BLOCK if left >= BLOCK_SIZE else _TEXT_BLOCK[:left]
                # The future resolves once the frame is written out: backpressure.
                await self.write_message(block)
                left -= len(block)
        except websocket.WebSocketClosedError:
            pass  # the reader went away mid-flood


def load_jupyter_server_extension(nb_app: Any) -> None:
    web_app = nb_app.web_app
    base = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "/bench/bytes"), BytesHandler),
            (url_path_join(base, "/bench/echo"), EchoHandler),
            (url_path_join(base, "/bench/sink"), SinkHandler),
            (url_path_join(base, "/bench/ws-echo"), WsEchoHandler),
            (url_path_join(base, "/bench/ws-flood"), WsFloodHandler),
        ],
    )
    nb_app.log.info(
        "bench_ext: /bench/bytes, /bench/echo, /bench/sink, /bench/ws-echo, /bench/ws-flood"
    )
