"""The benchmark's scenarios, each run against one target at a time.

A scenario returns ``{metric_key: value}`` or raises (``BenchFailure``, a trio timeout, an
``OSError`` ...): the driver turns that into a ``fails (reason)`` cell.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket
from bench_client import (
    BROWSER_ORIGIN,
    Api,
    BenchFailure,
    HttpOverWs,
    RawHttp,
    execute_request,
    login_cookie,
    open_ws,
    protocol_url,
)

Scenario = Callable[["Target", "Settings"], Awaitable[dict[str, float]]]
MB = 1_000_000
MiB = 1024 * 1024
STATUS_PATH = "/api/status"


@dataclass
class Settings:
    """Sizes and durations; ``--quick`` scales them down."""

    duration: float = 3.0  # seconds of each throughput measurement
    warmup_requests: int = 20
    sockets: int = 50  # scenario 2
    big_download: int = 200 * MB  # scenario 3, beyond the original's 100 MiB body limit
    small_download: int = 90 * MB  # scenario 3, which the original can do
    paused_download: int = 1000 * MB  # scenario 4
    pause: float = 10.0
    ws_small: int = 100  # scenario 5, bytes per message
    ws_small_window: int = 64  # messages in flight
    ws_big: int = 1 * MB
    ws_big_window: int = 4
    idle_sockets: int = 1000  # scenario 6
    big_message: int = 40 * MiB  # scenario 7: the body of one POST (4/3 as much as base64)
    #: w7: one text message, echoed; under the Notebook backend's 10 MiB limit (tornado's
    #: default websocket_max_message_size).
    huge_message: int = 9 * MiB
    huge_repeats: int = 3
    kernel_round_trips: int = 300  # scenario 10
    ping_round_trips: int = 2000  # scenario 11: one 100 B message in flight at a time
    stall: float = 15.0  # a download with no data for this long fails as stalled

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            duration=1.0,
            warmup_requests=5,
            sockets=20,
            big_download=120 * MB,
            small_download=30 * MB,
            paused_download=300 * MB,
            pause=3.0,
            idle_sockets=200,
            kernel_round_trips=60,
            ping_round_trips=300,
        )


@dataclass
class Target:
    """One of the ways to reach the backend."""

    #: "ours" | "door" | "original" | "chp" | "nginx" | "splice" | "direct" | "hypercorn" (the
    #: empty app)
    key: str
    token: str
    base: Callable[[], str]  # http://host:port, the server the client talks to
    rss: Callable[[], int]  # RSS of the proxy process (direct: of the backend itself)
    cookie: str = ""  # direct: the login cookies the token URL set
    #: Start a fresh proxy process (every seat but original and direct), so RSS growth is not
    #: hidden by memory freed earlier.
    fresh: Callable[[], Awaitable[None]] | None = None
    #: ours as Colab's current flow uses it: plain HTTP and WebSockets on the proxy's port.
    reverse: bool = False
    kernel: str = ""  # the id of the backend kernel scenario 10 talks to
    cookies: dict[str, str] = field(default_factory=dict)  # reverse: login cookies by base
    #: No login: the empty app (``empty_app.py``) has no Jupyter behind it to set cookies.
    anonymous: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def direct(self) -> bool:
        return self.key == "direct"

    @property
    def plain(self) -> bool:
        """Plain HTTP/1.1 and WebSocket clients, no tunnel."""
        return self.direct or self.reverse

    async def login(self) -> str:
        """The login cookies for ``base()``: Jupyter names them after the Host's port, so the
        reverse target needs its own, set by the token URL fetched through the proxy."""
        if self.anonymous:
            return ""
        if not self.reverse:
            return self.cookie
        base = self.base()
        if base not in self.cookies:
            self.cookies[base] = await login_cookie(base, self.token)
        return self.cookies[base]

    async def api(self, nursery: trio.Nursery, *, deflate: bool = False) -> Api:
        if self.plain:
            return await RawHttp.connect(self.base(), await self.login())
        return await HttpOverWs.connect(nursery, self.base(), self.token, deflate=deflate)

    async def websocket(
        self, nursery: trio.Nursery, path: str, *, deflate: bool = False, token: bool = False
    ) -> trio_websocket.WebSocketConnection:
        """A WebSocket to ``path`` on the backend: plain, or through the tunnel's proxied_ws.

        ``token``: authenticate plain ones as Colab does (``?token=`` and its Origin) instead
        of with the login cookies.
        """
        base = self.base()
        if not self.plain:
            url = protocol_url(
                base, "/http_over_websocket/proxied_ws" + path, self.token, min_version=False
            )
            headers = [("Origin", BROWSER_ORIGIN)]
        elif token:
            sep = "&" if "?" in path else "?"
            url = f"ws://{urlsplit(base).netloc}{path}{sep}token={self.token}"
            headers = [("Origin", BROWSER_ORIGIN)]
        else:
            url = f"ws://{urlsplit(base).netloc}{path}"
            cookie = await self.login()
            headers = [("Cookie", cookie)] if cookie else []
        try:
            return await open_ws(nursery, url, headers, deflate=deflate)
        except trio_websocket.HandshakeError as exc:
            raise BenchFailure(f"WebSocket upgrade failed: {exc}") from exc

    async def echo_socket(
        self, nursery: trio.Nursery, *, deflate: bool = False
    ) -> trio_websocket.WebSocketConnection:
        return await self.websocket(nursery, "/bench/ws-echo", deflate=deflate)

    async def idle_one(
        self, nursery: trio.Nursery, websocket: bool
    ) -> Callable[[], Awaitable[None]]:
        """A socket that did one exchange and now idles (its close function): a kept-alive
        HTTP one or tunnel (``websocket`` False), or a relayed WebSocket that echoed once."""
        if not websocket:
            api = await self.api(nursery)
            try:
                await _ok(api)
            except BaseException:
                await api.aclose()
                raise
            return api.aclose
        ws = await self.echo_socket(nursery)

        async def close() -> None:
            with trio.move_on_after(3):
                await ws.aclose()

        try:
            await ws.send_message("idle")
            _same(await ws.get_message(), "idle")
        except BaseException:
            await close()
            raise
        return close


class Stalled(BenchFailure):
    """No data for too long: a hang, which the driver does not retry."""

    def __init__(self, seconds: float, received: int) -> None:
        super().__init__(f"hangs: no data for {seconds:.0f} s after {received / MB:.0f} MB")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


async def _ok(api: Api, path: str = STATUS_PATH) -> None:
    reply = await api.request("GET", path)
    if reply.status != 200:
        raise BenchFailure(f"GET {path}: HTTP {reply.status}")


# -- sanity ------------------------------------------------------------------------------------


async def sanity(t: Target, s: Settings) -> dict[str, float]:
    """Every endpoint once, with its answer checked: the auth flow (and XSRF for POST) works."""
    async with trio.open_nursery() as nursery:
        api = await t.api(nursery)
        try:
            await _ok(api)
            reply = await api.request("POST", "/bench/echo", b"hello bench")
            if (reply.status, reply.body) != (200, b"hello bench"):
                raise BenchFailure(f"POST /bench/echo: HTTP {reply.status} {reply.body[:80]!r}")
            got = await api.request("GET", "/bench/bytes?n=300000")
            if got.body != _expected(0, 300000):
                raise BenchFailure(f"GET /bench/bytes: HTTP {got.status}, wrong body")
            ws = await t.echo_socket(nursery)
            await ws.send_message("ping")
            if await ws.get_message() != "ping":
                raise BenchFailure("WebSocket echo answered something else")
            await ws.aclose()
        finally:
            await api.aclose()
            nursery.cancel_scope.cancel()
    return {}


# -- 1 and 2: small requests -------------------------------------------------------------------


async def _hammer(apis: list[Api], per_socket: int, duration: float) -> tuple[float, list[float]]:
    """``per_socket`` concurrent request loops on each api for ``duration``: (req/s, latencies)."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration

    async def loop(api: Api) -> None:
        while (now := time.perf_counter()) < stop_at:
            reply = await api.request("GET", STATUS_PATH)
            latencies.append(time.perf_counter() - now)
            if reply.status != 200:
                raise BenchFailure(f"GET {STATUS_PATH}: HTTP {reply.status}")

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for api in apis:
            for _ in range(per_socket):
                nursery.start_soon(loop, api)
    return len(latencies) / (time.perf_counter() - started), latencies


def _rates(key: str, rate: float, latencies: list[float]) -> dict[str, float]:
    return {
        f"{key}_rps": rate,
        f"{key}_p50": percentile(latencies, 50) * 1000,
        f"{key}_p99": percentile(latencies, 99) * 1000,
    }


def small_requests(in_flight: int) -> Scenario:
    async def scenario(t: Target, s: Settings) -> dict[str, float]:
        async with trio.open_nursery() as nursery:
            api = await t.api(nursery)
            try:
                for _ in range(s.warmup_requests):
                    await _ok(api)
                rate, latencies = await _hammer([api], in_flight, s.duration)
            finally:
                await api.aclose()
                nursery.cancel_scope.cancel()
        return _rates(f"s1_c{in_flight}", rate, latencies)

    return scenario


async def many_sockets(
    t: Target, s: Settings, sockets: int = 0, key: str = "s2", warmup: int = 1
) -> dict[str, float]:
    """One request at a time on each of ``sockets`` (default ``s.sockets``) keep-alive sockets,
    each warmed up by ``warmup`` requests (scenarios 2 and 7)."""
    async with trio.open_nursery() as nursery:
        apis: list[Api] = []
        try:
            for _ in range(sockets or s.sockets):
                api = await t.api(nursery)
                apis.append(api)
                for _ in range(warmup):
                    await _ok(api)
            rate, latencies = await _hammer(apis, 1, s.duration)
        finally:
            for api in apis:
                await api.aclose()
            nursery.cancel_scope.cancel()
    return _rates(key, rate, latencies)


# -- 3: downloads ------------------------------------------------------------------------------

_PATTERN = bytes(range(256)) * (2 * 1024 * 1024 // 256 + 1)


def _expected(offset: int, length: int) -> bytes:
    start = offset % 256
    if length <= len(_PATTERN) - start:
        return _PATTERN[start : start + length]
    return b"".join(
        _expected(offset + i, min(len(_PATTERN) - 256, length - i))
        for i in range(0, length, len(_PATTERN) - 256)
    )


def _check(offset: int, chunk: bytes) -> int:
    """Checks a body slice at ``offset``, byte for byte; returns its length."""
    if chunk != _expected(offset, len(chunk)):
        raise BenchFailure(f"wrong bytes in the body at offset {offset}")
    return len(chunk)


def download(size_of: Callable[[Settings], int], key: str, *, deflate: bool = False) -> Scenario:
    async def scenario(t: Target, s: Settings) -> dict[str, float]:
        size = size_of(s)
        async with trio.open_nursery() as nursery:
            api = await t.api(nursery, deflate=deflate)
            try:
                await _ok(api)  # the auth URL is fetched here, outside the timing
                api.max_frame = 0
                received = 0
                started = time.perf_counter()
                body = api.stream(f"/bench/bytes?n={size}")
                while True:
                    with trio.fail_after(s.stall):
                        try:
                            chunk = await anext(body)
                        except StopAsyncIteration:
                            break
                    received += _check(received, chunk)
                elapsed = time.perf_counter() - started
            except trio.TooSlowError:
                raise Stalled(s.stall, received) from None
            finally:
                await api.aclose()
                nursery.cancel_scope.cancel()
        if received != size:
            raise BenchFailure(f"got {received} of {size} bytes")
        values = {f"{key}_mbps": size / elapsed / MB}
        if not t.plain:
            values[f"{key}_frame"] = api.max_frame / 1024
        return values

    return scenario


# -- 4: a paused reader ------------------------------------------------------------------------


async def paused_reader(t: Target, s: Settings, key: str = "s4_growth") -> dict[str, float]:
    if t.fresh is not None:
        await t.fresh()
    async with trio.open_nursery() as nursery:
        api = await t.api(nursery)
        try:
            await _ok(api)
            await trio.sleep(0.5)
            baseline = t.rss()
            body = api.stream(f"/bench/bytes?n={s.paused_download}")
            received = 0
            try:
                with trio.fail_after(s.stall):
                    while received < 4 * MiB:
                        received += _check(received, await anext(body))
            except trio.TooSlowError:
                raise Stalled(s.stall, received) from None
            # Stop reading: the socket fills, and the proxy must stop reading its backend.
            peak = baseline
            stop_at = time.perf_counter() + s.pause
            while time.perf_counter() < stop_at:
                await trio.sleep(0.2)
                peak = max(peak, t.rss())
            # Still a live download: read a little more to prove the stream survived the pause.
            try:
                with trio.fail_after(s.stall):
                    await anext(body)
            except trio.TooSlowError:
                raise BenchFailure(
                    f"the download never resumed after the pause ({s.stall:.0f} s)"
                ) from None
        finally:
            await api.aclose()
            nursery.cancel_scope.cancel()
    return {key: (peak - baseline) / MiB}


# -- 5: proxied WebSocket echo -----------------------------------------------------------------


def _same(got: str | bytes, sent: str | bytes) -> None:
    if got == sent:
        return
    if isinstance(sent, bytes) and isinstance(got, str):
        raise BenchFailure("a binary message came back as a text message")
    raise BenchFailure("the echo differs from the message sent")


def ws_echo(
    size: int, window: int, key: str, *, binary: bool = False, deflate: bool = False
) -> Scenario:
    """``window`` messages of ``size`` bytes in flight on one socket, for ``Settings.duration``."""
    text = "".join(chr(32 + i % 95) for i in range(size))  # printable ASCII, like JSON
    payload: str | bytes = bytes(i % 256 for i in range(size)) if binary else text

    async def scenario(t: Target, s: Settings) -> dict[str, float]:
        received = 0
        async with trio.open_nursery() as nursery:
            ws = await t.echo_socket(nursery, deflate=deflate)
            try:
                for _ in range(3):
                    await ws.send_message(payload)
                    _same(await ws.get_message(), payload)
                credit = trio.Semaphore(window)
                stop_at = time.perf_counter() + s.duration

                async def sender() -> None:
                    while True:
                        await credit.acquire()
                        await ws.send_message(payload)

                started = time.perf_counter()
                async with trio.open_nursery() as inner:
                    inner.start_soon(sender)
                    while time.perf_counter() < stop_at:
                        with trio.fail_after(s.stall):
                            message = await ws.get_message()
                        _same(message, payload)
                        received += 1
                        credit.release()
                    inner.cancel_scope.cancel()
                elapsed = time.perf_counter() - started
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason
                raise BenchFailure(
                    f"socket closed after {received} echoes: {reason.code} {reason.name}"
                    + (f" {reason.reason}" if reason.reason else "")
                ) from None
            finally:
                with trio.move_on_after(3):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
        if size < 1000:
            return {key: received / elapsed}
        return {key: received * size / elapsed / MB}

    return scenario


# -- 10: kernel round trips ----------------------------------------------------------------------


def kernel_round_trip(key: str, *, deflate: bool) -> Scenario:
    """Execute ``pass`` and wait for the kernel's idle status, one at a time: what a user feels.

    The kernel channels WebSocket is opened as Colab opens it: through the tunnel's proxied_ws,
    or (plain targets) with ``?token=`` and Colab's Origin on the server's port.
    """

    async def scenario(t: Target, s: Settings) -> dict[str, float]:
        session = uuid.uuid4().hex
        path = f"/api/kernels/{t.kernel}/channels?session_id={session}"
        times: list[float] = []
        async with trio.open_nursery() as nursery:
            ws = await t.websocket(nursery, path, deflate=deflate, token=True)
            try:
                for n in range(10 + s.kernel_round_trips):  # 10 warm-up round trips
                    msg_id = uuid.uuid4().hex
                    started = time.perf_counter()
                    await ws.send_message(execute_request(session, msg_id, "pass"))
                    with trio.fail_after(60 if n == 0 else s.stall):  # a kernel may still start
                        while not _idle_after(json.loads(await ws.get_message()), msg_id):
                            pass
                    if n >= 10:
                        times.append(time.perf_counter() - started)
            finally:
                with trio.move_on_after(3):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
        return {
            f"{key}_p50": percentile(times, 50) * 1000,
            f"{key}_p99": percentile(times, 99) * 1000,
        }

    return scenario


def _idle_after(message: dict[str, Any], msg_id: str) -> bool:
    return (
        message.get("channel") == "iopub"
        and message.get("msg_type") == "status"
        and message.get("parent_header", {}).get("msg_id") == msg_id
        and message.get("content", {}).get("execution_state") == "idle"
    )


# -- 6: idle sockets ---------------------------------------------------------------------------


async def idle_sockets(
    t: Target, s: Settings, *, websockets: bool = False, key: str = "s6_kb"
) -> dict[str, float]:
    """RSS growth per idle socket: ``s.idle_sockets`` sockets that each did one exchange (one
    GET, or with ``websockets`` one echo on a relayed WebSocket), held open."""
    if t.fresh is not None:
        await t.fresh()
    limiter = trio.CapacityLimiter(32)
    async with trio.open_nursery() as nursery:
        closers: list[Callable[[], Awaitable[None]]] = []

        async def open_one() -> None:
            async with limiter:
                closers.append(await t.idle_one(nursery, websockets))

        async def close_all() -> None:
            async def close(closer: Callable[[], Awaitable[None]]) -> None:
                async with limiter:
                    await closer()

            async with trio.open_nursery() as closing:
                for closer in closers:
                    closing.start_soon(close, closer)
            closers.clear()

        try:
            # Warm up: whatever a first socket allocates once is not a per-socket cost.
            async with trio.open_nursery() as opener:
                for _ in range(20):
                    opener.start_soon(open_one)
            await close_all()
            await trio.sleep(1.0)
            baseline = t.rss()
            async with trio.open_nursery() as opener:
                for _ in range(s.idle_sockets):
                    opener.start_soon(open_one)
            await trio.sleep(1.0)
            held = statistics.median([t.rss() for _ in range(3)])
        finally:
            with trio.move_on_after(30):
                await close_all()
            nursery.cancel_scope.cancel()
    return {key: (held - baseline) / s.idle_sockets / 1024}


# -- 11: ping-pong -------------------------------------------------------------------------------


async def ping_pong(t: Target, s: Settings) -> dict[str, float]:
    """One relayed WebSocket, one 100 B text message in flight: round-trip p50/p99 in us.

    The table shows each seat's p50 and p99 minus direct's: the latency the seat adds.
    """
    message = "".join(chr(32 + i % 95) for i in range(100))
    times: list[float] = []
    async with trio.open_nursery() as nursery:
        ws = await t.echo_socket(nursery)
        try:
            for n in range(50 + s.ping_round_trips):  # 50 warm-up round trips
                started = time.perf_counter()
                await ws.send_message(message)
                with trio.fail_after(s.stall):
                    got = await ws.get_message()
                if n >= 50:
                    times.append(time.perf_counter() - started)
                _same(got, message)
        except trio_websocket.ConnectionClosed as exc:
            raise BenchFailure(
                f"socket closed after {len(times)} round trips: {exc.reason}"
            ) from None
        finally:
            with trio.move_on_after(3):
                await ws.aclose()
            nursery.cancel_scope.cancel()
    return {
        "w_ping_p50": percentile(times, 50) * 1e6,
        "w_ping_p99": percentile(times, 99) * 1e6,
    }


# -- 9: a paused reader on a relayed WebSocket ---------------------------------------------------


async def paused_ws_reader(t: Target, s: Settings) -> dict[str, float]:
    """The backend pushes ``s.paused_download`` bytes on a relayed WebSocket (64 KiB text
    messages, as fast as they are read); the client reads 4 MiB and stops for ``s.pause``: the
    proxy must stop reading the backend, not buffer the rest (RSS growth = peak - before)."""
    if t.fresh is not None:
        await t.fresh()
    received = 0
    async with trio.open_nursery() as nursery:
        ws = await t.websocket(nursery, "/bench/ws-flood")
        try:
            await trio.sleep(0.5)
            baseline = t.rss()
            await ws.send_message(str(s.paused_download))
            try:
                with trio.fail_after(s.stall):
                    while received < 4 * MiB:
                        received += len(await ws.get_message())
            except trio.TooSlowError:
                raise Stalled(s.stall, received) from None
            # Stop reading (the client's queue holds one message, then its reader stops too).
            peak = baseline
            stop_at = time.perf_counter() + s.pause
            while time.perf_counter() < stop_at:
                await trio.sleep(0.2)
                peak = max(peak, t.rss())
            try:
                with trio.fail_after(s.stall):
                    await ws.get_message()
            except trio.TooSlowError:
                raise BenchFailure(
                    f"the socket never resumed after the pause ({s.stall:.0f} s)"
                ) from None
        except trio_websocket.ConnectionClosed as exc:
            raise BenchFailure(
                f"socket closed after {received / MiB:.0f} MiB: {exc.reason}"
            ) from None
        finally:
            # The backend is still pushing: no close handshake to wait for, just go.
            nursery.cancel_scope.cancel()
            await trio.aclose_forcefully(ws._stream)
    return {"w_pause_growth": (peak - baseline) / MiB}


# -- 7: one huge message next to small requests ------------------------------------------------

BIG_SENDER = Path(__file__).with_name("bench_bigsend.py")


async def big_message(t: Target, s: Settings) -> dict[str, float]:
    """Small requests on one socket while another process POSTs a 40 MiB body on another socket:
    the slowest small request shows how long the big message stalled everyone else.

    Small requests reach the backend, which receives the big body too, so they also show the
    backend's own stall (the direct column). The protocol targets also answer the diagnose
    endpoint themselves: its slowest echo is the stall of the proxy alone.
    """
    async with trio.open_nursery() as nursery:
        api = await t.api(nursery)
        diagnose = None
        if not t.direct:
            url = protocol_url(t.base(), "/http_over_websocket/diagnose", t.token)
            diagnose = await open_ws(nursery, url, [("Origin", BROWSER_ORIGIN)])
        try:
            for _ in range(s.warmup_requests):
                await _ok(api)
            kind = "direct" if t.direct else "protocol"
            arguments = [kind, t.base(), t.token, t.cookie or "-", str(s.big_message)]
            async with _big_sender(arguments) as (sender, lines):
                result: dict[str, object] = {}
                latencies: list[float] = []
                echoes: list[float] = []

                async def wait_for_result() -> None:
                    result.update(json.loads(await anext(lines)))

                async def ping_diagnose(ws: trio_websocket.WebSocketConnection) -> None:
                    while not result:
                        started = time.perf_counter()
                        await ws.send_message("ping")
                        await ws.get_message()
                        echoes.append(time.perf_counter() - started)
                        await trio.sleep(0.002)

                async with trio.open_nursery() as inner:
                    inner.start_soon(wait_for_result)
                    if diagnose is not None:
                        inner.start_soon(ping_diagnose, diagnose)
                    await sender.stdin.send_all(b"go\n")  # type: ignore[union-attr]
                    with trio.fail_after(120):
                        while not result:
                            started = time.perf_counter()
                            await _ok(api)
                            latencies.append(time.perf_counter() - started)
            if "error" in result:
                raise BenchFailure(f"big POST: {result['error']}")
            if result.get("status") != 200 or result.get("body") != str(s.big_message):
                raise BenchFailure(f"big POST: HTTP {result.get('status')} {result.get('body')}")
        finally:
            await api.aclose()
            if diagnose is not None:
                with trio.move_on_after(2):
                    await diagnose.aclose()
            nursery.cancel_scope.cancel()
    values = {
        "s7_max_ms": max(latencies) * 1000,
        "s7_p50_ms": statistics.median(latencies) * 1000,
    }
    if echoes:
        values["s7_loop_ms"] = max(echoes) * 1000
    return values


async def huge_ws_echo(t: Target, s: Settings) -> dict[str, float]:
    """Small echoes on one plain WebSocket while another process has a 9 MiB text message
    echoed on another (w7): the slowest small echo is how long the big message stalled the
    other sockets of the relay (and of the backend, which echoes both: the direct column).

    The 9 MiB message is sent ``s.huge_repeats`` times, one after the other, so the small
    echoes sample several big messages in every run.
    """
    async with trio.open_nursery() as nursery:
        ws = await t.echo_socket(nursery)
        small = "".join(chr(32 + i % 95) for i in range(100))
        try:
            for _ in range(s.warmup_requests):
                await ws.send_message(small)
                _same(await ws.get_message(), small)
            # The login cookies of the reverse target are the proxy's own (named after its port).
            cookie = await t.login() or "-"
            arguments = ["ws", t.base(), t.token, cookie, str(s.huge_message), str(s.huge_repeats)]
            async with _big_sender(arguments) as (sender, lines):
                result: dict[str, Any] = {}
                latencies: list[float] = []

                async def wait_for_result() -> None:
                    result.update(json.loads(await anext(lines)))

                async with trio.open_nursery() as inner:
                    inner.start_soon(wait_for_result)
                    await sender.stdin.send_all(b"go\n")  # type: ignore[union-attr]
                    with trio.fail_after(120):
                        while not result:
                            started = time.perf_counter()
                            await ws.send_message(small)
                            _same(await ws.get_message(), small)
                            latencies.append(time.perf_counter() - started)
            if "error" in result:
                raise BenchFailure(f"{s.huge_message // MiB} MiB echo: {result['error']}")
        except trio_websocket.ConnectionClosed as exc:
            raise BenchFailure(f"the small echo socket closed: {exc.reason}") from None
        finally:
            with trio.move_on_after(2):
                await ws.aclose()
            nursery.cancel_scope.cancel()
    return {
        "w7_max_ms": max(latencies) * 1000,
        "w7_p50_ms": statistics.median(latencies) * 1000,
        # Not in the table: how long each big echo took, for the progress lines and the JSON.
        "w7_huge_ms": statistics.median(result["ms"]),
    }


@asynccontextmanager
async def _big_sender(
    arguments: list[str],
) -> AsyncIterator[tuple[trio.Process, AsyncIterator[str]]]:
    """``bench_bigsend.py`` with ``arguments``, once it said ``ready``; killed on the way out."""
    sender = await trio.lowlevel.open_process(
        [sys.executable, str(BIG_SENDER), *arguments], stdin=-1, stdout=-1
    )
    try:
        lines = _lines(sender.stdout)  # type: ignore[arg-type]
        with trio.fail_after(60):
            if await anext(lines) != "ready":
                raise BenchFailure("the big sender did not start")
        yield sender, lines
    finally:
        sender.kill()
        await sender.wait()


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    while True:
        while b"\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                raise BenchFailure("the big sender exited early")
            buffer += data
        line, buffer = buffer.split(b"\n", 1)
        yield line.decode().strip()
