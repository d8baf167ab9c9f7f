"""A small tornado backend for edge cases a real Jupyter cannot produce on demand.

It runs in a thread with its own asyncio loop, so trio tests can talk to it over real sockets.
Handlers cover the scenarios of the original extension's own test suite (canned statuses,
streamed and large bodies, cookie-setting auth URL, echoing WebSockets) plus a few of ours
(byte sources of any size, header echo, a backend that dies mid-body, redirects of every
kind).
"""

from __future__ import annotations

import asyncio
import json
import queue
import ssl
import threading
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

XSRF_VALUE = "some-xsrf-token"
XSRF_ECHO_HEADER = "Propagated-Xsrf"


class SessionsHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = (*tornado.web.RequestHandler.SUPPORTED_METHODS, "CUSTOMMETHOD")

    def get(self) -> None:
        if self.get_argument("throw_500", None):
            self.set_status(500, "Server error")
            return
        self.write("ok")

    def custommethod(self) -> None:
        self.write("ok")

    def post(self) -> None:
        xsrf = self.get_query_argument("_xsrf", None)
        if xsrf:
            self.set_header(XSRF_ECHO_HEADER, xsrf)
        self.set_header("X-Query", self.request.query)
        self.write(self.request.body)


class AuthHandler(tornado.web.RequestHandler):
    """Sets three cookies; can fail, or redirect (same-origin or elsewhere)."""

    def get(self) -> None:
        self.application.settings["auth_hits"].append(self.request.uri)
        if self.get_argument("always_fail", None):
            self.set_status(500)
            return
        if self.get_argument("redirect_away", None):
            self.set_cookie("Before-Redirect", "yes")
            self.redirect("http://evil.example/steal")
            return
        if self.get_argument("redirect", None):
            self.set_cookie("Before-Redirect", "yes")
            self.redirect("/fake-auth?landed=1")
            return
        self.set_cookie("_xsrf", XSRF_VALUE)
        self.set_cookie("X-Test-Cookie", "1")
        self.set_cookie("X-Other-Test-Cookie", "2")
        self.write("authenticated")


class AuthHitsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"hits": self.application.settings["auth_hits"]})


class RequiresCookiesHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(
            f'X-Test-Cookie: "{self.get_cookie("X-Test-Cookie")}" '
            f'X-Other-Test-Cookie: "{self.get_cookie("X-Other-Test-Cookie")}"'
        )


class StreamedHandler(tornado.web.RequestHandler):
    """The original's FakeStreamedResponseHandler: two flushed writes, so two HTTP chunks."""

    async def get(self) -> None:
        self.write("first")
        await self.flush()
        self.write("last")
        await self.flush()


class LargeHandler(tornado.web.RequestHandler):
    """The original's LargeStreamedResponseHandler: one flushed write, so one 100 000-byte chunk."""

    async def get(self) -> None:
        self.write("a" * 100000)
        await self.flush()

    def head(self) -> None:
        self.set_header("Content-Length", "100000")


def pattern(n: int) -> bytes:
    """Deterministic bytes whose every 256-byte block differs, so reordering is detectable."""
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


class BytesHandler(tornado.web.RequestHandler):
    """GET /bytes?n=N[&chunk=C][&delay=S]: N pattern bytes in C-byte flushed writes."""

    async def get(self) -> None:
        n = int(self.get_argument("n"))
        chunk = int(self.get_argument("chunk", str(256 * 1024)))
        delay = float(self.get_argument("delay", "0"))
        self.set_header("Content-Type", "application/octet-stream")
        block = pattern(chunk + 256)
        sent = 0
        while sent < n:
            size = min(chunk, n - sent)
            offset = sent % 256
            self.write(block[offset : offset + size])
            await self.flush()
            sent += size
            if delay:
                await asyncio.sleep(delay)


class EchoHandler(tornado.web.RequestHandler):
    """POST/PUT /echo: the request body back, byte for byte, with what we learned of it."""

    def post(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Body-Length", str(len(self.request.body)))
        self.write(self.request.body)

    put = post


class HeadersHandler(tornado.web.RequestHandler):
    """Any method on /headers: the request line and headers it received, as JSON."""

    def _answer(self) -> None:
        self.write(
            {
                "method": self.request.method,
                "uri": self.request.uri,
                "headers": [[k, v] for k, v in self.request.headers.get_all()],
            }
        )

    get = post = _answer


class SlowHandler(tornado.web.RequestHandler):
    """GET /slow?delay=S[&tag=T]: answers after S seconds; tracks which tags are in progress."""

    async def get(self) -> None:
        self._tag = self.get_argument("tag", "")
        active: dict[str, int] = self.application.settings["slow_active"]
        active[self._tag] = active.get(self._tag, 0) + 1
        try:
            await asyncio.sleep(float(self.get_argument("delay", "5")))
            self.write("slow")
        finally:
            self._leave()

    def on_connection_close(self) -> None:
        # The proxy dropped the connection: the request is over for us too.
        self._leave()

    def _leave(self) -> None:
        if getattr(self, "_left", False) or not hasattr(self, "_tag"):
            return
        self._left = True
        self.application.settings["slow_active"][self._tag] -= 1


class RedirectHandler(tornado.web.RequestHandler):
    """Any method on /redirect?status=S[&to=LOCATION][&cookie=V]: a redirect with a small body.

    ``cookie`` sets ``hop=V``, so tests can check what becomes of a redirect's Set-Cookie.
    """

    SUPPORTED_METHODS = (*tornado.web.RequestHandler.SUPPORTED_METHODS, "CUSTOMMETHOD")

    def _answer(self) -> None:
        self.application.settings["redirect_hits"].append(self.request.method)
        self.set_status(int(self.get_query_argument("status", "302")))
        to = self.get_query_argument("to", None)
        if to is not None:
            self.set_header("Location", to)
        cookie = self.get_query_argument("cookie", None)
        if cookie is not None:
            self.set_cookie("hop", cookie)
        if self.request.method != "HEAD":
            self.write("redirecting")

    get = post = put = patch = delete = head = options = custommethod = _answer


class ChainHandler(tornado.web.RequestHandler):
    """GET /chain?n=N: N redirects (302, relative) before a 200; /chain?loop=1 never ends."""

    def get(self) -> None:
        n = int(self.get_query_argument("n", "1"))
        if self.get_query_argument("loop", None):
            self.redirect("/chain?loop=1")
        elif n > 0:
            self.redirect(f"chain?n={n - 1}")
        else:
            self.write("end of chain")


class LandingHandler(tornado.web.RequestHandler):
    """Any method on /landing: the method, URI and Cookie it got as headers, the body echoed."""

    SUPPORTED_METHODS = (*tornado.web.RequestHandler.SUPPORTED_METHODS, "CUSTOMMETHOD")

    def _answer(self) -> None:
        self.set_header("X-Method", self.request.method or "")
        self.set_header("X-Uri", self.request.uri or "")
        self.set_header("X-Cookie", self.request.headers.get("Cookie", ""))
        if self.request.method != "HEAD":
            self.write(self.request.body)

    get = post = put = patch = delete = head = options = custommethod = _answer


class DieMidBodyHandler(tornado.web.RequestHandler):
    """Promises 1 MB, sends 300 KB, then drops the connection."""

    async def get(self) -> None:
        self.set_header("Content-Length", str(1_000_000))
        self.write(b"x" * 300_000)
        await self.flush()
        await asyncio.sleep(0.05)
        assert self.request.connection is not None
        self.request.connection.stream.close()  # type: ignore[attr-defined]


class _AnyOriginWebSocket(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True


class EchoWebSocket(_AnyOriginWebSocket):
    def open(self, *args: Any, **kwargs: Any) -> None:
        self.write_message(
            f"<ECHO INIT> {self.request.method} {self.request.uri} "
            f"X-Echo-Header: {self.request.headers.get('X-Echo-Header')}"
        )

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.write_message(b"<ECHO BYTES> " + message, binary=True)
        else:
            self.write_message(f"<ECHO RESPONSE> {message}")


class PlainEchoWebSocket(_AnyOriginWebSocket):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


class CountedEchoWebSocket(PlainEchoWebSocket):
    """An echo that counts its open connections (``FakeBackend.websockets_open``)."""

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.settings["websockets_open"] += 1

    def on_close(self) -> None:
        self.settings["websockets_open"] -= 1


class CookiesWebSocket(_AnyOriginWebSocket):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(
            f'X-Test-Cookie: "{self.get_cookie("X-Test-Cookie")}" '
            f'X-Other-Test-Cookie: "{self.get_cookie("X-Other-Test-Cookie")}"'
        )


class HeadersWebSocket(_AnyOriginWebSocket):
    def open(self, *args: Any, **kwargs: Any) -> None:
        self.write_message(json.dumps([[k, v] for k, v in self.request.headers.get_all()]))


class CloseOnFirstMessageWebSocket(_AnyOriginWebSocket):
    def on_message(self, message: str | bytes) -> None:
        self.close(code=4321, reason="closing as asked")


class SubprotocolWebSocket(_AnyOriginWebSocket):
    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return "v1.test" if "v1.test" in subprotocols else None

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.write_message(f"subprotocol={self.selected_subprotocol}")


def make_app() -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/fake-auth", AuthHandler),
            (r"/fake-auth-hits", AuthHitsHandler),
            (r"/requires-cookies-from-fake-auth", RequiresCookiesHandler),
            (r"/requires-cookies-from-fake-auth-ws", CookiesWebSocket),
            (r"/api/sessions", SessionsHandler),
            (r"/api/streamedresponse", StreamedHandler),
            (r"/api/largeresponse", LargeHandler),
            (r"/bytes", BytesHandler),
            (r"/echo", EchoHandler),
            (r"/headers", HeadersHandler),
            (r"/slow", SlowHandler),
            (r"/die-mid-body", DieMidBodyHandler),
            (r"/redirect", RedirectHandler),
            (r"/chain", ChainHandler),
            (r"/landing", LandingHandler),
            (r"/echoing-ws", EchoWebSocket),
            (r"/plain-echo-ws", PlainEchoWebSocket),
            (r"/counted-echo-ws", CountedEchoWebSocket),
            (r"/headers-ws", HeadersWebSocket),
            (r"/close-on-first-message-ws", CloseOnFirstMessageWebSocket),
            (r"/subprotocol-ws", SubprotocolWebSocket),
            (r"/concurrency", ConcurrencyHandler),
        ],
        auth_hits=[],
        redirect_hits=[],
        slow_active={},
        websockets_open=0,
        websocket_max_message_size=256 * 1024 * 1024,
    )


class FakeBackend:
    """The tornado app above (or ``app``), served on 127.0.0.1 from a daemon thread."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
        app: tornado.web.Application | None = None,
    ) -> None:
        self.app = app if app is not None else make_app()
        self._port = port
        self._ssl_context = ssl_context
        self._ports: queue.Queue[int] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fake-backend", daemon=True)
        self._thread.start()
        self.port = self._ports.get(timeout=30)
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(self._port, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(
            self.app, max_body_size=512 * 1024 * 1024, ssl_options=self._ssl_context
        )
        server.add_sockets(sockets)
        self._ports.put(sockets[0].getsockname()[1])
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()

    @property
    def websockets_open(self) -> int:
        """Connections to /counted-echo-ws open right now."""
        count: int = self.app.settings["websockets_open"]
        return count

    def slow_active(self, tag: str) -> int:
        """How many /slow requests with this tag the backend is serving right now."""
        count: int = self.app.settings["slow_active"].get(tag, 0)
        return count

    @property
    def redirect_hits(self) -> list[str]:
        """The method of every request /redirect answered, in order."""
        hits: list[str] = self.app.settings["redirect_hits"]
        return hits

    @property
    def auth_hits(self) -> list[str]:
        hits: list[str] = self.app.settings["auth_hits"]
        return hits

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


class ConcurrencyHandler(tornado.web.RequestHandler):
    """GET /concurrency?key=K&delay=S: sleeps S seconds, counting requests of key K at once.

    GET /concurrency?key=K&report=1 answers {"running", "max", "total"} for that key. Keys let
    tests sharing this (session-wide) backend keep their counts apart.
    """

    stats: dict[str, dict[str, int]] = {}  # noqa: RUF012 - one event-loop thread touches it

    async def get(self) -> None:
        key = self.get_argument("key")
        stats = self.stats.setdefault(key, {"running": 0, "max": 0, "total": 0})
        if self.get_argument("report", None):
            self.write(stats)
            return
        stats["running"] += 1
        stats["total"] += 1
        stats["max"] = max(stats["max"], stats["running"])
        try:
            await asyncio.sleep(float(self.get_argument("delay", "0.2")))
        finally:
            stats["running"] -= 1
        self.write("done")
