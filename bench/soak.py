"""Soak: many sockets with many requests in flight through a real proxy process to a real Jupyter.

``python -m bench.soak`` (or ``nox -s soak``) runs the full load: 200 sockets x 10 requests
in flight for 60 s, plus proxied kernel WebSockets, against a Jupyter Server 2 it starts itself.
``tests/e2e/test_soak_short.py`` runs the same driver for a few seconds in the default suite.

What runs:

- Jupyter Server 2 (started here, or given with ``--backend URL --token T``) and the proxy as a
  separate process (``python -m trio_httpws``), so that its RSS (``/proc/PID/status`` VmRSS) and
  open file descriptors (``/proc/PID/fd``) can be sampled every second.
- A directory ``soak-<hex>`` made through the Contents API (so any Jupyter works): a few MB of
  random bytes (``big.bin``) and a few small text files, each with distinct content.
- N sockets on ``/http_over_websocket``, each with the auth-URL flow a browser uses, each keeping K
  requests in flight until the deadline. Mix: ``GET /api/status``, ``GET /api/contents/<dir>``,
  ``GET /api/contents/<dir>/small-i.txt`` (each file's content differs, so a frame tagged with
  the wrong id shows as a wrong body) and ``GET /files/<dir>/big.bin`` (streamed over many
  frames; length and sha256 checked).
  Message ids are unique across all sockets, so a frame that reaches the wrong socket, or comes
  after its request's ``done``, is caught too.
- Two kernel-channels WebSockets per kernel session, one through ``proxied_ws`` (the auth URL's
  cookies) and one plain on the proxy's own ``/api/kernels/<id>/channels`` (the reverse
  WebSocket relay, with the token), each sending ``kernel_info_request`` in a loop and matching
  each ``kernel_info_reply`` to its request by the parent ``msg_id``.
- A few plain HTTP/1.1 keep-alive clients on the proxy's port (the reverse proxy, as Jupyter's
  web UI uses it) sending the same mix of GETs with the token, bodies checked the same way.

Checks (``evaluate``): no lost response (none without ``done`` within the per-request timeout),
no mis-tagged frame, every body right, every kernel socket and reverse-proxy request kind
answering. Resources: under load the proxy's fds never exceed what the work in flight can hold
(a socket per client, a backend connection per request, two per kernel relay, the idle pool);
the samples are cut in thirds (``resource_checks``): the first is the warm-up, the last
third's second half has a median RSS within 2 MB of its first half's, and its RSS peak is
within 16 MB and its fd peak within 16 of the middle third's; after the run the fds are back to the baseline
plus the pool's idle keep-alive connections; the proxy exits 0 on SIGTERM. The samples are taken until every response is in, so
the drain after the deadline counts as load too.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from statistics import median
from typing import Any, TextIO
from urllib.parse import urlencode

import h11
import trio
import trio_websocket

from trio_httpws import Config
from trio_httpws._jupyter import free_port, jupyter_command, jupyter_environment

ORIGIN = "https://colab.research.google.com"
MiB = 1024 * 1024
#: The proxy keeps up to this many idle keep-alive connections to the backend (the CLI uses the
#: Config default): after the run its fds may exceed the baseline by that many without a leak.
POOL_IDLE: int = Config.max_idle_connections
DEFAULT_MIX = "status=3,list=2,small=4,big=1"


@dataclass(frozen=True)
class SoakConfig:
    sockets: int = 200
    in_flight: int = 10
    duration: float = 60.0
    kernels: int = 4
    big_size: int = 4 * MiB
    small_files: int = 8
    #: Relative weights of the request kinds: status, list, small, big.
    mix: str = DEFAULT_MIX
    #: Plain HTTP clients on the proxy's own port (the reverse proxy), one keep-alive
    #: connection each, one GET at a time, same mix of requests.
    reverse_clients: int = 10
    #: Seconds a request (or a kernel_info round trip) may take before it counts as lost.
    request_timeout: float = 120.0
    #: Samples in each third of the load needed to judge flatness; fewer: not judged (a failure).
    min_third: int = 5
    interval: float = 1.0
    #: The load's samples in thirds (see resource_checks): the first is the warm-up, not
    #: judged; the median RSS of the last third's second half may exceed its first half's by
    #: at most this much...
    rss_growth_mb: float = 2.0
    #: ...and its peak may exceed the middle third's peak by at most this much (one late step,
    #: e.g. while the last requests drain, is fine; a runaway at the end is not).
    rss_peak_mb: float = 16.0
    #: fds: the last third's peak may exceed the middle third's by at most this many.
    fd_trend: int = 16
    #: fds after the run: at most baseline + POOL_IDLE + this.
    fd_slack: int = 8
    proxy_log_level: str = "warning"
    seed: int = 1

    def weights(self) -> list[tuple[str, int]]:
        pairs = []
        for part in self.mix.split(","):
            name, _, weight = part.partition("=")
            if name.strip() not in ("status", "list", "small", "big"):
                raise ValueError(f"unknown request kind {name!r} in mix {self.mix!r}")
            pairs.append((name.strip(), int(weight)))
        return pairs


@dataclass(frozen=True)
class Backend:
    """A Jupyter server: its URL and token."""

    url: str
    token: str


@dataclass(frozen=True)
class Sample:
    t: float
    rss_kb: int
    fds: int
    responses: int
    ws_replies: int
    #: CPU use over the last interval, in % of one core (None: unknown).
    proxy_cpu: float | None = None
    backend_cpu: float | None = None
    driver_cpu: float | None = None

    @property
    def rss_mb(self) -> float:
        return self.rss_kb / 1024


@dataclass
class Stats:
    responses: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    download_bytes: int = 0
    lost: int = 0
    mistagged: int = 0
    failed: int = 0
    late_frames: int = 0
    sockets_broken: int = 0
    ws_replies: int = 0
    ws_messages: int = 0
    ws_lost: int = 0
    ws_mistagged: int = 0
    ws_failed: int = 0
    #: kernel_info round trips per kernel socket ("proxied 0", "plain 0", ...).
    ws_per_socket: Counter[str] = field(default_factory=Counter)
    #: Verified responses of the plain HTTP clients on the reverse proxy, per request kind.
    reverse: Counter[str] = field(default_factory=Counter)
    #: Latencies of the same requests sent straight to Jupyter during the load, per kind.
    direct: dict[str, list[float]] = field(default_factory=dict)
    #: Seconds from sending a request to its done frame, per request kind.
    latencies: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 30:
            self.problems.append(text)


@dataclass(frozen=True)
class Check:
    name: str
    #: None: not judged (the run was too short for it), which the command line counts as failed.
    ok: bool | None
    detail: str

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]


@dataclass
class SoakResult:
    config: SoakConfig
    stats: Stats
    samples: list[Sample]
    baseline: Sample
    after: Sample
    load_seconds: float
    #: Backend connections in TIME_WAIT when the load ended, and listen-queue overflows.
    network: dict[str, int]
    proxy_returncode: int | None
    proxy_log: str
    checks: list[Check] = field(default_factory=list)
    #: Where the proxy's and Jupyter's logs were kept (a failed run only).
    logs: str | None = None

    @property
    def ok(self) -> bool:
        return all(check.ok is True for check in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def summary(self) -> str:
        return _summary(self)


# -- processes ---------------------------------------------------------------------------------


def proc_usage(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, open file descriptors) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def time_wait_to(port: int) -> int:
    """TCP connections to ``port`` in TIME_WAIT: those closed on our side within the last 60 s."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "06" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def listen_overflows() -> int:
    """The network namespace's count of connections dropped for a full listen queue."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in itertools.pairwise(lines):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            counters = dict(zip(names.split(), values.split(), strict=True))
            return int(counters.get("ListenOverflows", 0))
    return 0


def _open_log(directory: str, name: str) -> TextIO:
    return open(os.path.join(directory, name), "w+")  # closed by the caller


def _read_log(log: TextIO) -> str:
    log.flush()
    log.seek(0)
    return log.read()


async def _answers(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        stream = await trio.open_tcp_stream(host, int(port))
    except OSError:
        return False
    async with stream:
        try:
            await stream.send_all(
                f"GET /api HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            return (await stream.receive_some(64)).startswith(b"HTTP/1.1 200")
        except (trio.BrokenResourceError, OSError):
            return False


async def start_jupyter(root_dir: str, log: TextIO) -> tuple[trio.Process, Backend]:
    port = free_port()
    token = uuid.uuid4().hex
    process = await trio.lowlevel.open_process(
        jupyter_command(port, root_dir),
        env=jupyter_environment(token),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    backend = Backend(f"http://127.0.0.1:{port}", token)
    try:
        with trio.fail_after(90):
            while not await _answers(backend.url):
                if process.poll() is not None:
                    raise RuntimeError(f"Jupyter exited while starting:\n{_read_log(log)[-3000:]}")
                await trio.sleep(0.1)
    except BaseException:
        with trio.CancelScope(shield=True):
            await stop_process(process, 5)
        raise
    return process, backend


async def stop_process(process: trio.Process, grace: float) -> None:
    """Terminate, then kill if it lingers (the soak deletes its kernels itself)."""
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        process.kill()
    await process.wait()


async def start_proxy(backend: Backend, log: TextIO, level: str) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "trio_httpws",
            "--backend",
            backend.url,
            "--port",
            "0",
            "--allow-origin",
            "*",
            "--log-level",
            level,
            # The whole log (an access line per request) beside the screen's: not in /tmp.
            "--log-file",
            os.path.join(os.path.dirname(log.name), "proxy-full.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(60):
            while (match := re.search(rb"proxying (http://127\.0\.0\.1:\d+) ->", output)) is None:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(
                        f"the proxy exited while starting:\n{_read_log(log)[-3000:]}"
                    )
                output += chunk
    except BaseException:
        with trio.CancelScope(shield=True):
            await stop_proxy(process)
        raise
    return process, match.group(1).decode()


async def stop_proxy(process: trio.Process) -> int | None:
    """SIGTERM, as a user's Ctrl-C or a service manager would; the exit code (None: killed)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
        return None
    if process.stdout is not None:
        await process.stdout.aclose()
    return process.returncode


# -- the protocol, client side -----------------------------------------------------------------


async def _http_get(host: str, port: int, target: str) -> bytes:
    """A whole HTTP/1.1 response (head and body) to one GET on a fresh connection."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        parts = []
        while chunk := await stream.receive_some(65536):
            parts.append(chunk)
        return b"".join(parts)


class KeepAliveClient:
    """HTTP/1.1 GETs on one keep-alive connection (a new one when the server closed it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
        self.stream = None

    async def _next_event(self) -> Any:
        assert self.stream is not None
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            self.conn.receive_data(await self.stream.receive_some(1 << 18))
        return event

    async def get(self, target: str, p: _Pending) -> int:
        """GET ``target``; its body goes into ``p`` (as the tunnel's frames do); the status."""
        if self.stream is None or self.conn.our_state is not h11.IDLE:
            await self.aclose()
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.conn = h11.Connection(h11.CLIENT)
        headers = [("Host", f"{self.host}:{self.port}"), ("Origin", ORIGIN)]
        await self.stream.send_all(
            self.conn.send(h11.Request(method="GET", target=target, headers=headers))
        )
        await self.stream.send_all(self.conn.send(h11.EndOfMessage()))
        response = await self._next_event()
        if not isinstance(response, h11.Response):
            raise h11.RemoteProtocolError(f"unexpected {response!r}")
        while not isinstance(event := await self._next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                p.size += len(event.data)
                if p.hasher is not None:
                    p.hasher.update(event.data)
                else:
                    p.parts.append(bytes(event.data))
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("connection closed mid-body")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        else:
            await self.aclose()
        return response.status_code


def _ws_url(http_url: str, path: str) -> str:
    return http_url.replace("http://", "ws://", 1) + path


class Files:
    """The files the soak downloads, and what each request must answer."""

    def __init__(self, cfg: SoakConfig, token: str) -> None:
        rng = random.Random(cfg.seed)
        self.dir = "soak-" + uuid.uuid4().hex[:12]
        self.token = token
        self.big = rng.randbytes(cfg.big_size)
        self.big_sha = hashlib.sha256(self.big).hexdigest()
        self.small = [
            (f"small file {i} of the soak " * (20 * (i + 1)) + f"[{i}]\n").encode()
            for i in range(cfg.small_files)
        ]
        self.names = {"big.bin", *(f"small-{i}.txt" for i in range(cfg.small_files))}

    def path(self, kind: str, i: int) -> str:
        if kind == "status":
            return "/api/status"
        if kind == "list":
            return f"/api/contents/{self.dir}"
        if kind == "small":
            return f"/api/contents/{self.dir}/small-{i}.txt?type=file&format=text&content=1"
        # Jupyter serves /files/ to a cookie-authenticated request only with a same-site Referer
        # (its XSSI guard; a proxied request has none), so the download names the token.
        return f"/files/{self.dir}/big.bin?token={self.token}"


class _Pending:
    __slots__ = ("done", "error", "frames", "hasher", "index", "kind", "parts", "size", "status")

    def __init__(self, kind: str, index: int) -> None:
        self.kind = kind
        self.index = index
        self.frames = 0
        self.status: Any = None
        self.size = 0
        self.parts: list[bytes] = []
        self.hasher = hashlib.sha256() if kind == "big" else None
        self.done = trio.Event()
        self.error: str | None = None


class HttpSocket:
    """One ``/http_over_websocket`` client: a reader dispatching frames to requests by id."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, name: str, stats: Stats) -> None:
        self.ws = ws
        self.name = name
        self.stats = stats
        self.pending: dict[str, _Pending] = {}
        self.lost: set[str] = set()
        self.count = 0
        self.closing = False
        self.broken = False

    def next_id(self) -> str:
        self.count += 1
        return f"{self.name}-{self.count}"

    async def reader(self) -> None:
        stats = self.stats
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if not self.closing:
                    self.broken = True
                    stats.sockets_broken += 1
                    stats.problem(f"socket {self.name} closed by the proxy: {exc.reason}")
                    for waiting in self.pending.values():
                        waiting.error = f"socket closed: {exc.reason}"
                        waiting.done.set()
                return
            frame = json.loads(message)
            mid = frame.get("message_id")
            p = self.pending.get(mid)
            if p is None:
                if mid in self.lost:
                    stats.late_frames += 1
                else:
                    stats.mistagged += 1
                    stats.problem(
                        f"socket {self.name}: frame for {mid!r}, not in flight here: "
                        f"{str(frame)[:160]}"
                    )
                continue
            if p.frames == 0:
                p.status = frame.get("status")
                if p.status is None:
                    stats.mistagged += 1
                    stats.problem(f"{mid}: first frame without a status: {str(frame)[:160]}")
            elif "status" in frame:
                stats.mistagged += 1
                stats.problem(f"{mid}: a second first frame: {str(frame)[:160]}")
            p.frames += 1
            data = frame.get("data")
            if data:
                chunk = base64.b64decode(data)
                p.size += len(chunk)
                if p.hasher is not None:
                    p.hasher.update(chunk)
                else:
                    p.parts.append(chunk)
            if frame.get("done"):
                del self.pending[mid]
                p.done.set()

    async def fetch(self, method: str, path: str, **fields: Any) -> tuple[Any, bytes]:
        """One request outside the load (setup, cleanup): its status and body."""
        mid = self.next_id()
        p = _Pending("setup", 0)
        self.pending[mid] = p
        await self.ws.send_message(
            json.dumps({"message_id": mid, "method": method, "path": path, **fields})
        )
        with trio.fail_after(120):
            await p.done.wait()
        if p.error:
            raise RuntimeError(f"{method} {path}: {p.error}")
        return p.status, b"".join(p.parts)


def _verify(p: _Pending, files: Files) -> str | None:
    """What is wrong with a finished response (None: nothing)."""
    if p.error:
        return p.error
    if p.status != 200:
        return f"status {p.status}: {b''.join(p.parts)[:200]!r}"
    if p.kind == "big":
        if p.size != len(files.big) or p.hasher is None or p.hasher.hexdigest() != files.big_sha:
            return f"big.bin: {p.size} bytes, wrong sha256 or length"
        return None
    body = b"".join(p.parts)
    try:
        doc = json.loads(body)
    except ValueError:
        return f"{p.kind}: not JSON: {body[:200]!r}"
    if p.kind == "small":
        name = f"small-{p.index}.txt"
        if doc.get("name") != name or doc.get("content") != files.small[p.index].decode():
            return f"{name}: wrong file or content: {doc.get('name')!r}"
        return None
    if p.kind == "status":
        return None if isinstance(doc, dict) and "started" in doc else f"status: {doc!r:.200}"
    names = {item.get("name") for item in doc.get("content") or []}
    if doc.get("type") != "directory" or not files.names <= names:
        return f"listing: {sorted(names)!r:.200}"
    return None


def kernel_info_request(session: str) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    message = {
        "header": {
            "msg_id": msg_id,
            "username": "soak",
            "session": session,
            "msg_type": "kernel_info_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {},
        "channel": "shell",
        "buffers": [],
    }
    return msg_id, json.dumps(message)


# -- the soak ----------------------------------------------------------------------------------


class Soak:
    def __init__(
        self,
        cfg: SoakConfig,
        backend: Backend,
        proxy_url: str,
        nursery: trio.Nursery,
        echo: Callable[[str], None],
        backend_pid: int | None = None,
    ) -> None:
        self.cfg = cfg
        #: Jupyter's pid when we started it (its CPU use is sampled too).
        self.backend_pid = backend_pid
        #: Runs the sockets' background tasks (trio-websocket's and our readers).
        self.nursery = nursery
        self.backend = backend
        self.proxy_url = proxy_url
        self.echo = echo
        self.stats = Stats()
        self.files = Files(cfg, backend.token)
        self.kernels: list[tuple[str, str]] = []  # (session id, kernel id)
        self.auth = urlencode(
            {"jupyter_http_over_ws_auth_url": f"{proxy_url}/?token={backend.token}"}
        )
        kinds = cfg.weights()
        self.kinds = [name for name, weight in kinds for _ in range(weight)]
        self.deadline = 0.0

    async def connect(self, path: str) -> trio_websocket.WebSocketConnection:
        # Not open_websocket_url's context manager: a socket is used by several tasks and closed
        # once they are done, its reader running in the long-lived nursery.
        with trio.fail_after(self.cfg.request_timeout):
            return await trio_websocket.connect_websocket_url(
                self.nursery,
                _ws_url(self.proxy_url, path),
                extra_headers=[(b"Origin", ORIGIN.encode())],
                max_message_size=2**24,
                # trio-websocket reads 4 KiB at a time by default: far too many small reads for
                # ~87 KB frames, which would make this client the bottleneck of the soak.
                receive_buffer_size=2**18,
            )

    async def http_socket(self, name: str) -> HttpSocket:
        ws = await self.connect("/http_over_websocket?min_version=0.0.7&" + self.auth)
        sock = HttpSocket(ws, name, self.stats)
        self.nursery.start_soon(sock.reader)
        return sock

    async def close(self, sock: HttpSocket) -> None:
        sock.closing = True
        with trio.move_on_after(30):
            await sock.ws.aclose()

    # -- setup and cleanup ---------------------------------------------------------------------

    async def setup(self) -> None:
        sock = await self.http_socket("setup")
        files = self.files

        async def put(path: str, model: dict[str, Any]) -> None:
            status, body = await sock.fetch("PUT", f"/api/contents/{path}", body=json.dumps(model))
            if status not in (200, 201):
                raise RuntimeError(f"PUT {path}: {status} {body[:300]!r}")

        await put(files.dir, {"type": "directory"})
        await put(
            f"{files.dir}/big.bin",
            {"type": "file", "format": "base64", "content": base64.b64encode(files.big).decode()},
        )
        for i, text in enumerate(files.small):
            await put(
                f"{files.dir}/small-{i}.txt",
                {"type": "file", "format": "text", "content": text.decode()},
            )

        async def new_kernel(i: int) -> None:
            model = {
                "path": f"{files.dir}/kernel-{i}.ipynb",
                "type": "notebook",
                "name": "",
                "kernel": {"name": "python3"},
            }
            status, body = await sock.fetch("POST", "/api/sessions", body=json.dumps(model))
            if status != 201:
                raise RuntimeError(f"POST /api/sessions: {status} {body[:300]!r}")
            session = json.loads(body)
            self.kernels.append((session["id"], session["kernel"]["id"]))

        async with trio.open_nursery() as nursery:
            for i in range(self.cfg.kernels):
                nursery.start_soon(new_kernel, i)
        await self.close(sock)

    async def cleanup(self) -> None:
        sock = await self.http_socket("cleanup")
        files = self.files
        for session_id, _ in self.kernels:
            await sock.fetch("DELETE", f"/api/sessions/{session_id}")
        for name in sorted(files.names):
            await sock.fetch("DELETE", f"/api/contents/{files.dir}/{name}")
        await sock.fetch("DELETE", f"/api/contents/{files.dir}")
        await self.close(sock)

    # -- load ----------------------------------------------------------------------------------

    async def http_client(self, index: int) -> None:
        cfg, stats, files = self.cfg, self.stats, self.files
        rng = random.Random(cfg.seed * 100_003 + index)
        try:
            sock = await self.http_socket(f"s{index}")
        except (OSError, trio_websocket.HandshakeError, trio.TooSlowError) as exc:
            stats.sockets_broken += 1
            stats.problem(f"socket s{index} could not connect: {exc!r}")
            return

        async def worker() -> None:
            while trio.current_time() < self.deadline and not sock.broken:
                kind = rng.choice(self.kinds)
                i = rng.randrange(len(files.small)) if kind == "small" else 0
                mid = sock.next_id()
                p = _Pending(kind, i)
                sock.pending[mid] = p
                started = trio.current_time()
                message = {"message_id": mid, "method": "GET", "path": files.path(kind, i)}
                try:
                    await sock.ws.send_message(json.dumps(message))
                except trio_websocket.ConnectionClosed:
                    sock.pending.pop(mid, None)
                    return
                with trio.move_on_after(cfg.request_timeout):
                    await p.done.wait()
                if not p.done.is_set() or p.error:
                    stats.lost += 1
                    stats.problem(f"{mid} ({kind}) lost: {p.error or 'no done in time'}")
                    sock.pending.pop(mid, None)
                    sock.lost.add(mid)
                    # Cancel it, or the proxy would hold it (and its backend connection) on top
                    # of the replacement this slot sends next. Its 499 counts as a late frame.
                    with suppress(trio_websocket.ConnectionClosed):
                        await sock.ws.send_message(json.dumps({"message_id": mid, "cancel": True}))
                    continue
                stats.latencies.setdefault(kind, []).append(trio.current_time() - started)
                error = _verify(p, files)
                if error is not None:
                    stats.failed += 1
                    stats.problem(f"{mid} ({kind}): {error}")
                    continue
                stats.responses += 1
                stats.kinds[kind] += 1
                if kind == "big":
                    stats.download_bytes += p.size

        async with trio.open_nursery() as workers:
            for _ in range(cfg.in_flight):
                workers.start_soon(worker)
        await self.close(sock)

    async def kernel_client(self, index: int, kernel_id: str, plain: bool) -> None:
        """kernel_info round trips on a kernel's channels: through ``proxied_ws`` (auth URL
        cookies), or ``plain`` on the proxy's own /api/kernels/<id>/channels (the token)."""
        cfg, stats = self.cfg, self.stats
        name = f"{'plain' if plain else 'proxied'} {index}"
        channels = f"/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
        if plain:
            path = f"{channels}&token={self.backend.token}"
        else:
            path = f"/http_over_websocket/proxied_ws{channels}&{self.auth}"
        ws = await self.connect(path)
        session = uuid.uuid4().hex
        answered: set[str] = set()
        try:
            # At least one round trip per kernel socket, even when the kernel took longer to
            # come up than a short run lasts (seen: a 4 s run whose kernel socket opened late).
            attempted = False
            while not attempted or trio.current_time() < self.deadline:
                attempted = True
                msg_id, message = kernel_info_request(session)
                await ws.send_message(message)
                reply: dict[str, Any] = {}
                with trio.move_on_after(cfg.request_timeout):
                    while True:
                        reply = json.loads(await ws.get_message())
                        stats.ws_messages += 1
                        if reply.get("msg_type") != "kernel_info_reply":
                            continue
                        parent = reply.get("parent_header", {}).get("msg_id")
                        if parent == msg_id:
                            break
                        if parent in answered:
                            stats.ws_mistagged += 1
                            stats.problem(f"kernel {name}: a second reply to {parent}")
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    stats.ws_lost += 1
                    stats.problem(f"kernel {name}: no kernel_info_reply to {msg_id} in time")
                    continue
                answered.add(msg_id)
                if reply.get("content", {}).get("status") != "ok":
                    stats.ws_failed += 1
                    stats.problem(f"kernel {name}: reply {str(reply.get('content'))[:200]}")
                    continue
                stats.ws_replies += 1
                stats.ws_per_socket[name] += 1
        except trio_websocket.ConnectionClosed as exc:
            stats.ws_failed += 1
            stats.problem(f"kernel {name}: socket closed by the proxy: {exc.reason}")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await ws.aclose()

    async def reverse_client(self, index: int) -> None:
        """Plain GETs on the proxy's port, as the Jupyter web UI sends them, until the deadline."""
        cfg, stats, files = self.cfg, self.stats, self.files
        rng = random.Random(cfg.seed * 200_003 + index)
        host, port = self.proxy_url.removeprefix("http://").split(":")
        client = KeepAliveClient(host, int(port))
        try:
            while trio.current_time() < self.deadline:
                kind = rng.choice(self.kinds)
                i = rng.randrange(len(files.small)) if kind == "small" else 0
                path = files.path(kind, i)
                if "token=" not in path:
                    path += ("&" if "?" in path else "?") + f"token={self.backend.token}"
                p = _Pending(kind, i)
                with trio.move_on_after(cfg.request_timeout):
                    try:
                        p.status = await client.get(path, p)
                    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                        p.error = f"connection failed: {exc!r}"
                        await client.aclose()
                    p.done.set()
                if not p.done.is_set():
                    stats.lost += 1
                    stats.problem(f"reverse {index} ({kind}) lost: no response in time")
                    await client.aclose()
                    continue
                error = _verify(p, files)
                if error is not None:
                    stats.failed += 1
                    stats.problem(f"reverse {index} ({kind}): {error}")
                    continue
                stats.reverse[kind] += 1
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def sampler(self, pid: int, t0: float, samples: list[Sample]) -> None:
        backend_pid = self.backend_pid

        def cpu() -> tuple[float, float, float]:
            backend = cpu_seconds(backend_pid) if backend_pid is not None else 0.0
            return time.process_time(), cpu_seconds(pid), backend

        last_t, (last_driver, last_proxy, last_backend) = t0, cpu()
        interval = self.cfg.interval
        while True:
            # The next whole interval from the start: a late wake-up skips ahead, it does not
            # take a burst of catch-up samples.
            await trio.sleep_until(t0 + ((trio.current_time() - t0) // interval + 1) * interval)
            now = trio.current_time()
            rss, fds = proc_usage(pid)
            driver, proxy, backend = cpu()
            span = (now - last_t) / 100
            sample = Sample(
                now - t0,
                rss,
                fds,
                self.stats.responses,
                self.stats.ws_replies,
                proxy_cpu=(proxy - last_proxy) / span,
                backend_cpu=(backend - last_backend) / span if backend_pid is not None else None,
                driver_cpu=(driver - last_driver) / span,
            )
            last_t, last_driver, last_proxy, last_backend = now, driver, proxy, backend
            samples.append(sample)
            self.echo(_row(sample))

    async def probe_backend(self) -> None:
        """Every 2 s, a status and a listing request straight to Jupyter (with the token).

        Their latency next to the proxied requests' tells a slow backend from a slow proxy.
        """
        host, port = self.backend.url.removeprefix("http://").split(":")
        while True:
            for kind in ("status", "list"):
                path = f"{self.files.path(kind, 0)}?token={self.backend.token}"
                started = trio.current_time()
                with trio.move_on_after(self.cfg.request_timeout):
                    await _http_get(host, int(port), path)
                self.stats.direct.setdefault(kind, []).append(trio.current_time() - started)
            await trio.sleep(2)

    async def load(self, pid: int, samples: list[Sample]) -> float:
        """Run the load until the deadline and every response is in; returns its length (s)."""
        t0 = trio.current_time()
        self.deadline = t0 + self.cfg.duration
        self.echo(_header())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.sampler, pid, t0, samples)
            nursery.start_soon(self.probe_backend)
            async with trio.open_nursery() as clients:
                for index, (_, kernel_id) in enumerate(self.kernels):
                    clients.start_soon(self.kernel_client, index, kernel_id, False)
                    clients.start_soon(self.kernel_client, index, kernel_id, True)
                for index in range(self.cfg.reverse_clients):
                    clients.start_soon(self.reverse_client, index)
                for index in range(self.cfg.sockets):
                    clients.start_soon(self.http_client, index)
            elapsed = trio.current_time() - t0
            nursery.cancel_scope.cancel()
        return elapsed


async def run_soak(
    cfg: SoakConfig,
    backend: Backend | None = None,
    *,
    echo: Callable[[str], None] = lambda line: None,
) -> SoakResult:
    """Run the soak; start a Jupyter Server 2 of its own unless ``backend`` is given."""
    with tempfile.TemporaryDirectory(prefix="trio-httpws-soak-") as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        jupyter_log = _open_log(tmp, "jupyter.log")
        proxy_log = _open_log(tmp, "proxy.log")
        jupyter: trio.Process | None = None
        try:
            if backend is None:
                jupyter, backend = await start_jupyter(root, jupyter_log)
                echo(f"started Jupyter Server at {backend.url} (pid {jupyter.pid})")
            backend_pid = jupyter.pid if jupyter is not None else None
            result = await _run_with_backend(cfg, backend, backend_pid, proxy_log, echo)
        finally:
            with trio.CancelScope(shield=True):
                if jupyter is not None:
                    await stop_process(jupyter, 15)
            jupyter_log.close()
            proxy_log.close()
        if not result.ok:
            result.logs = tempfile.mkdtemp(prefix="trio-httpws-soak-logs-")
            for name in ("jupyter.log", "proxy.log", "proxy-full.log"):
                with suppress(FileNotFoundError):  # the proxy may not have started
                    shutil.copy(os.path.join(tmp, name), result.logs)
        return result


async def _run_with_backend(
    cfg: SoakConfig,
    backend: Backend,
    backend_pid: int | None,
    proxy_log: TextIO,
    echo: Callable[[str], None],
) -> SoakResult:
    proxy, proxy_url = await start_proxy(backend, proxy_log, cfg.proxy_log_level)
    echo(f"started the proxy at {proxy_url} (pid {proxy.pid}) -> {backend.url}")
    returncode: int | None = None
    try:
        async with trio.open_nursery() as nursery:
            soak = Soak(cfg, backend, proxy_url, nursery, echo, backend_pid)
            await soak.setup()
            echo(
                f"made {soak.files.dir}/ ({len(soak.files.big) / MiB:g} MB big.bin, "
                f"{cfg.small_files} small files) and {len(soak.kernels)} kernel session(s)"
            )
            await trio.sleep(0.5)
            baseline = Sample(0.0, *proc_usage(proxy.pid), 0, 0)
            echo(
                f"load: {cfg.sockets} sockets x {cfg.in_flight} requests in flight for "
                f"{cfg.duration:g} s (mix {cfg.mix}), {len(soak.kernels)} kernel socket(s); "
                f"proxy baseline RSS {baseline.rss_mb:.1f} MB, {baseline.fds} fds"
            )
            samples: list[Sample] = []
            overflows = listen_overflows()
            load_seconds = await soak.load(proxy.pid, samples)
            network = {
                "time_wait": time_wait_to(int(backend.url.rsplit(":", 1)[1])),
                "listen_overflows": listen_overflows() - overflows,
            }
            after = await _settled(proxy.pid, baseline, cfg)
            echo(f"after the run: RSS {after.rss_mb:.1f} MB, {after.fds} fds")
            await soak.cleanup()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            returncode = await stop_proxy(proxy)
    result = SoakResult(
        cfg,
        soak.stats,
        samples,
        baseline,
        after,
        load_seconds,
        network,
        returncode,
        _read_log(proxy_log),
    )
    result.checks = evaluate(result)
    return result


async def _settled(pid: int, baseline: Sample, cfg: SoakConfig) -> Sample:
    """The proxy's usage once its sockets are closed (waits up to 10 s for fds to drop)."""
    limit = baseline.fds + POOL_IDLE + cfg.fd_slack
    for _ in range(50):
        if proc_usage(pid)[1] <= limit:
            break
        await trio.sleep(0.2)
    await trio.sleep(0.5)
    return Sample(-1.0, *proc_usage(pid), 0, 0)


# -- verdict -----------------------------------------------------------------------------------


def resource_checks(samples: list[Sample], cfg: SoakConfig) -> list[Check]:
    """RSS and fds under load, judged on the last third of the samples.

    The first third is mostly warm-up (the pool, hypercorn's and our buffers, the allocator's
    arenas filling to what the load needs); on a slow machine the filling may go on through the
    middle third. Judged: the median RSS of the last third's second half is within
    ``rss_growth_mb`` of its first half's (a plateau reached before the last third passes at
    any level, noise and one late step included; growth faster than ``rss_growth_mb`` per
    sixth of the run fails: 0.2 MB/s in a 60 s run, 0.04 MB/s in 300 s), and the last third's
    RSS and fd peaks are within a step of the middle third's.
    """
    names = ("RSS flat through the last third", "RSS peak bounded", "fds bounded")
    n = len(samples) // 3
    if n < cfg.min_third:
        detail = f"not judged: {len(samples)} samples, fewer than 3 x {cfg.min_third}"
        return [Check(name, None, detail) for name in names]
    middle, last = samples[n : 2 * n], samples[2 * n :]
    half = len(last) // 2
    early, late = median(x.rss_mb for x in last[:half]), median(x.rss_mb for x in last[half:])
    mid_peak, last_peak = max(x.rss_mb for x in middle), max(x.rss_mb for x in last)
    mid_fds, last_fds = max(x.fds for x in middle), max(x.fds for x in last)
    return [
        Check(
            names[0],
            late <= early + cfg.rss_growth_mb,
            f"median {late:.1f} MB in {last[half].t:.0f}-{last[-1].t:.0f} s vs {early:.1f} MB "
            f"in {last[0].t:.0f}-{last[half - 1].t:.0f} s (allowed +{cfg.rss_growth_mb:g})",
        ),
        Check(
            names[1],
            last_peak <= mid_peak + cfg.rss_peak_mb,
            f"last third's peak {last_peak:.1f} MB vs the middle third's {mid_peak:.1f} MB "
            f"({middle[0].t:.0f}-{middle[-1].t:.0f} s; allowed +{cfg.rss_peak_mb:g})",
        ),
        Check(
            names[2],
            last_fds <= mid_fds + cfg.fd_trend,
            f"last third's peak {last_fds} vs the middle third's {mid_fds} "
            f"(allowed +{cfg.fd_trend})",
        ),
    ]


def evaluate(result: SoakResult) -> list[Check]:
    cfg, s = result.config, result.stats
    checks = [
        Check("no lost responses", s.lost == 0, f"{s.lost} lost"),
        Check(
            "no mis-tagged frames",
            s.mistagged == 0,
            f"{s.mistagged} mis-tagged, {s.late_frames} late (after a lost one)",
        ),
        Check("every response correct", s.failed == 0, f"{s.failed} wrong status or body"),
        Check(
            "every socket served to the end",
            s.sockets_broken == 0,
            f"{s.sockets_broken} closed or refused",
        ),
        Check(
            "every request kind answered",
            s.responses > 0 and all(s.kinds[k] > 0 for k, _ in cfg.weights()),
            ", ".join(f"{k} {s.kinds[k]}" for k, _ in cfg.weights()),
        ),
        Check(
            "reverse-proxy HTTP answered",
            cfg.reverse_clients == 0 or all(s.reverse[k] > 0 for k, _ in cfg.weights()),
            ", ".join(f"{k} {s.reverse[k]}" for k, _ in cfg.weights()),
        ),
        Check(
            "kernel WebSockets answered",
            s.ws_lost == s.ws_mistagged == s.ws_failed == 0
            and all(
                s.ws_per_socket[f"{how} {i}"] > 0
                for i in range(cfg.kernels)
                for how in ("proxied", "plain")
            ),
            f"{s.ws_replies} replies ({dict(sorted(s.ws_per_socket.items()))}), {s.ws_lost} lost, "
            f"{s.ws_mistagged} mis-tagged, {s.ws_failed} failed",
        ),
    ]
    # Every in-flight request holds at most one backend connection, every socket one fd, every
    # kernel relay two (two relays per kernel), every reverse client two: more than that (plus
    # the idle pool) under load would be a leak.
    base = result.baseline.fds
    work = cfg.sockets * (1 + cfg.in_flight) + 4 * cfg.kernels + 2 * cfg.reverse_clients
    bound = base + work + POOL_IDLE + cfg.fd_slack
    peak_fds = max((x.fds for x in result.samples), default=0)
    checks.append(
        Check(
            "fds bounded by the work in flight",
            peak_fds <= bound,
            f"peak {peak_fds} (allowed {bound}: baseline {base} + sockets x (1 + in flight) + "
            f"4 x kernels + 2 x reverse clients + {POOL_IDLE} idle + {cfg.fd_slack})",
        )
    )
    checks += resource_checks(result.samples, cfg)
    limit = base + POOL_IDLE + cfg.fd_slack
    checks.append(
        Check(
            "fds back to baseline after the run",
            result.after.fds <= limit,
            f"{result.after.fds} fds after vs {base} before (allowed {limit}: "
            f"+{POOL_IDLE} idle backend connections, +{cfg.fd_slack})",
        )
    )
    checks.append(
        Check(
            "proxy stopped cleanly on SIGTERM",
            result.proxy_returncode == 0,
            f"exit code {result.proxy_returncode}",
        )
    )
    return checks


def _header() -> str:
    return (
        f"{'t (s)':>7} {'RSS (MB)':>9} {'fds':>6} {'responses':>10} {'kernel replies':>15}"
        f"   CPU %: {'proxy':>6} {'jupyter':>8} {'driver':>7}"
    )


def _percent(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.0f}"


def _row(x: Sample) -> str:
    return (
        f"{x.t:7.1f} {x.rss_mb:9.1f} {x.fds:6d} {x.responses:10d} {x.ws_replies:15d}"
        f"          {_percent(x.proxy_cpu, 6)} {_percent(x.backend_cpu, 8)}"
        f" {_percent(x.driver_cpu, 7)}"
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(r: SoakResult) -> str:
    cfg, s = r.config, r.stats
    rate = s.responses / r.load_seconds if r.load_seconds else 0.0
    every = [x for values in s.latencies.values() for x in values]
    # Log lines are "date time LEVEL logger: message"; the same message is counted, not repeated.
    proxy_problems = Counter(
        line.split(" ", 2)[-1]
        for line in r.proxy_log.splitlines()
        if " WARNING " in line or " ERROR " in line
    )
    lines = [
        "",
        f"soak summary: {cfg.sockets} sockets x {cfg.in_flight} in flight, "
        f"{cfg.duration:g} s load ({r.load_seconds:.1f} s with the drain), "
        f"{cfg.kernels} kernel socket(s)",
        f"  responses     {s.responses} verified ({rate:.1f}/s): "
        + ", ".join(f"{k} {s.kinds[k]}" for k, _ in cfg.weights()),
        f"  downloads     {s.kinds['big']} x {cfg.big_size / MiB:g} MB = "
        f"{s.download_bytes / MiB:.0f} MB, length and sha256 checked",
        "  latency (s)   "
        + "; ".join(
            f"{kind} p50 {_percentile(values, 0.5):.1f} p99 {_percentile(values, 0.99):.1f} "
            f"max {max(values):.1f}"
            for kind, values in [("all", every), *sorted(s.latencies.items())]
            if values
        ),
        "  direct (s)    the same requests straight to Jupyter, every 2 s: "
        + "; ".join(
            f"{kind} p50 {_percentile(values, 0.5):.1f} p99 {_percentile(values, 0.99):.1f} "
            f"max {max(values):.1f}"
            for kind, values in sorted(s.direct.items())
            if values
        ),
        f"  kernel WS     {s.ws_replies} kernel_info round trips, {s.ws_messages} messages "
        f"received, {s.ws_lost} lost, {s.ws_mistagged} mis-tagged; per socket "
        f"{dict(sorted(s.ws_per_socket.items()))}",
        f"  reverse HTTP  {s.reverse.total()} plain GETs verified by {cfg.reverse_clients} "
        "keep-alive clients: " + ", ".join(f"{k} {s.reverse[k]}" for k, _ in cfg.weights()),
        f"  lost {s.lost}, mis-tagged {s.mistagged}, wrong {s.failed}, "
        f"broken sockets {s.sockets_broken}",
        f"  proxy RSS     baseline {r.baseline.rss_mb:.1f} MB, after the run "
        f"{r.after.rss_mb:.1f} MB; series (MB): " + " ".join(f"{x.rss_mb:.0f}" for x in r.samples),
        f"  proxy fds     baseline {r.baseline.fds}, after the run {r.after.fds}; series: "
        + " ".join(str(x.fds) for x in r.samples),
        f"  backend TCP   {r.network['time_wait']} connections to Jupyter in TIME_WAIT when the "
        "load ended (each one the proxy opened and closed in the last 60 s); listen-queue "
        f"overflows during the load (whole machine): {r.network['listen_overflows']}",
        f"  proxy log     {proxy_problems.total()} warning/error line(s)",
    ]
    lines += [f"    {n} x {line[:300]}" for line, n in proxy_problems.most_common(8)]
    if s.problems:
        lines.append("  first problems:")
        lines += [f"    {p}" for p in s.problems[:15]]
    lines.append("checks:")
    lines += [f"  {c.label}  {c.name}: {c.detail}" for c in r.checks]
    if r.logs:
        lines.append(f"logs kept in {r.logs}")
    lines.append(f"verdict: {'PASS' if r.ok else 'FAIL'}")
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    d = SoakConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sockets", type=int, default=d.sockets)
    parser.add_argument("--in-flight", type=int, default=d.in_flight)
    parser.add_argument("--duration", type=float, default=d.duration, help="seconds of load")
    parser.add_argument("--kernels", type=int, default=d.kernels)
    parser.add_argument("--big-mb", type=float, default=d.big_size / MiB)
    parser.add_argument("--mix", default=d.mix, help=f"request kind weights ({DEFAULT_MIX})")
    parser.add_argument(
        "--request-timeout", type=float, default=d.request_timeout, help="seconds until lost"
    )
    parser.add_argument(
        "--reverse-clients",
        type=int,
        default=d.reverse_clients,
        help="plain HTTP clients on the reverse proxy",
    )
    parser.add_argument("--backend", help="an existing Jupyter server's URL (default: start one)")
    parser.add_argument("--token", help="its token (with --backend)")
    parser.add_argument("--proxy-log-level", default=d.proxy_log_level)
    args = parser.parse_args(argv)
    if bool(args.backend) != bool(args.token):
        parser.error("--backend and --token go together")
    cfg = SoakConfig(
        sockets=args.sockets,
        in_flight=args.in_flight,
        duration=args.duration,
        kernels=args.kernels,
        big_size=int(args.big_mb * MiB),
        mix=args.mix,
        request_timeout=args.request_timeout,
        reverse_clients=args.reverse_clients,
        proxy_log_level=args.proxy_log_level,
    )
    backend = Backend(args.backend.rstrip("/"), args.token) if args.backend else None

    def echo(line: str) -> None:
        print(line, flush=True)

    started = time.monotonic()
    result = trio.run(lambda: run_soak(cfg, backend, echo=echo))
    print(result.summary())
    print(f"(wall time {time.monotonic() - started:.0f} s)")
    return 0 if result.ok else 1


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        raise SystemExit(main())
