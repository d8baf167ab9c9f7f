"""Shared fixtures: real servers on 127.0.0.1 (hypercorn, a tornado fake backend, Jupyter)."""

from __future__ import annotations

import base64
import functools
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

import trio_httpws
from trio_httpws._jupyter import free_port, jupyter_command

from .fake_backend import FakeBackend

# -- a hung test fails alone ------------------------------------------------------------------
#
# pytest-timeout (pyproject.toml) stops a hung test, but its exception arrives from a signal in
# the middle of trio's run loop, which leaves trio unusable for every later test. So each trio
# test also gets a watchdog that fails it through trio (cancelling it cleanly) a little before:
# pytest-timeout, set to kill the process, is only the backstop for a loop that is blocked.


def timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout"))


def with_watchdog(test: Callable[..., Awaitable[None]], limit: float) -> Callable[..., Any]:
    """``test``, failed with TimeoutError (its tasks cancelled) after ``limit`` real seconds."""

    @functools.wraps(test)
    async def watched(*args: Any, **kwargs: Any) -> None:
        finished = threading.Event()

        async def watchdog() -> None:
            # Real seconds, in a thread: a test on trio's autojump clock skips virtual time.
            if not await trio.to_thread.run_sync(finished.wait, limit, abandon_on_cancel=True):
                raise TimeoutError(f"test still running after {limit:g} s: cancelled")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            try:
                await test(*args, **kwargs)
            finally:
                finished.set()

    return watched


# -- every test that serves a proxy runs on every door -----------------------------------------
#
# A test that starts a proxy (through a fixture or by itself) takes the ``door`` fixture and so
# runs on each door; one that cannot (it tests one door's own machinery) is named here with the
# reason. A test that does neither fails, so a new test cannot quietly cover one door only.

#: What a test's own code calls to serve a proxy.
_SERVES_A_PROXY = re.compile(
    r"\b(running_proxy|running_handler_proxy|running_stub_door|splice_server|running_cli|serve_door"
    r"|create_app|TrioHttpWsApp|hypercorn_serve|trio_httpws\.(?:serve|handler)|Door)\b"
)

#: Tests that serve one door only, by design: node id prefix -> why.
ONE_DOOR: dict[str, str] = {
    "tests/test_hypercorn_fix.py::": "hypercorn's own WebSocket stream, which only that door has",
    "tests/test_wsserver.py::": "the wsproto adapter of the proxy's own door, on a stand-in door",
    "tests/test_splice.py::": "the byte splice of the proxy's own door, on a stand-in door",
    "tests/test_doors_differential.py::": "both doors side by side in one test",
    "tests/test_door.py::test_a_head_that_never_ends": "head_timeout is the proxy's door's own",
    "tests/test_door.py::test_a_pipelining_client": "the read-ahead bound of the door's reader",
    "tests/test_door.py::test_an_h2c_upgrade": "hypercorn takes h2c itself (docs/front-door.md)",
    "tests/test_door.py::test_an_hour_silent": "an in-run backend on the mock clock; the door's",
    "tests/test_door.py::test_out_of_descriptors": "the door's accept loop, with a failing listener",
    "tests/test_door.py::test_a_malformed_head_is_logged": "hypercorn answers such heads itself",
    "tests/test_tls.py::test_a_tls_handshake_that_never_comes": "head_timeout is the door's own",
    "tests/test_colab_flow.py::test_a_send_to_a_closing_connection": "an ASGI send that raises",
    "tests/test_deadlines.py::test_large_message_through_hypercorn": (
        "hypercorn's parts; the door's are in test_wsserver.py"
    ),
    "tests/test_hostile_input.py::test_text_frame_with_invalid_utf8_under_handler": (
        "the trio-websocket handler(), a door of its own"
    ),
    "tests/test_colab_flow.py::test_handler_applies_the_same_policy": "handler(), a door of its own",
    "tests/test_ws_compression.py::test_handler_never_negotiates_compression": (
        "handler(), a door of its own"
    ),
    "tests/test_cli.py::test_cli_stops_the_kernels_jupyter_left_behind": (
        "the Jupyter the CLI starts, whatever serves in front of it"
    ),
    "tests/test_cli.py::test_cli_serves_on_the_proxys_own_door_unless_told": (
        "which door the command picks when none is named"
    ),
    "tests/test_metrics.py::test_asgi_app_": "the ASGI app's lifespan: hypercorn's door only",
}


def _serves_a_proxy(item: pytest.Function) -> bool:
    """Whether the test, or a fixture of its own suite that it uses, starts a proxy."""
    functions = [item.function]
    info = getattr(item, "_fixtureinfo", None)
    for name in item.fixturenames if info is not None else ():
        for fixturedef in info.name2fixturedefs.get(name, ()):
            if fixturedef.func.__module__.startswith("tests."):
                functions.append(fixturedef.func)
    for function in functions:
        try:
            source = inspect.getsource(inspect.unwrap(function))
        except (OSError, TypeError):
            continue
        if _SERVES_A_PROXY.search(source):
            return True
    return False


def _door_chosen(item: pytest.Function) -> bool:
    if "door" in item.fixturenames:
        return True
    # A parameter naming a door; "handler" is trio_httpws.handler() under trio-websocket, a
    # door of its own for the WebSocket tests.
    callspec = getattr(item, "callspec", None)
    doors = (*DOORS, "handler")
    return callspec is not None and any(v in doors for v in callspec.params.values())


def _one_door_reason(nodeid: str) -> str | None:
    for prefix, reason in ONE_DOOR.items():
        if nodeid.startswith(prefix):
            return reason
    return None


def _fails_without_a_door(nodeid: str) -> Callable[..., Awaitable[None]]:
    async def test(**_: object) -> None:
        pytest.fail(
            f"{nodeid} serves a proxy without the `door` fixture: take `door` (and pass it to "
            "running_proxy), or name the test in ONE_DOOR in tests/conftest.py with why"
        )

    return test


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and not _door_chosen(item)
            and _serves_a_proxy(item)
            and _one_door_reason(item.nodeid) is None
        ):
            item.obj = _fails_without_a_door(item.nodeid)
            item.user_properties.append(("door", "missing"))
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(item.obj)
            and not hasattr(item.obj, "hypothesis")  # pytest-trio unwraps those itself
        ):
            item.obj = with_watchdog(item.obj, 0.9 * timeout_of(item))


@pytest.fixture(scope="session")
def fake_backend() -> Iterator[FakeBackend]:
    backend = FakeBackend()
    yield backend
    backend.close()


#: The servers a proxy runs under in the tests: every I/O test runs on each (the ``door`` fixture).
DOORS = ("hypercorn", "trio")
#: The Server header each door writes on every answer (in place of the backend's).
SERVER_NAMES = {"hypercorn": "hypercorn-h11", "trio": "trio-httpws"}


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest) -> str:
    """The server ``running_proxy`` uses: hypercorn with the ASGI app, or the proxy's own door."""
    return str(request.param)


@asynccontextmanager
async def running_proxy(
    config: trio_httpws.Config, door: str = "hypercorn", **kwargs: Any
) -> AsyncIterator[str]:
    """Serve ``config`` on 127.0.0.1 with ``door``; yields ``http://127.0.0.1:PORT``."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(trio_httpws.serve, config, "127.0.0.1", 0, server=door, **kwargs)
        )
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_handler_proxy(config: trio_httpws.Config) -> AsyncIterator[str]:
    """The WebSocket endpoints only: ``trio_httpws.handler`` on a trio-websocket server."""
    proxy = trio_httpws.Proxy(config)
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    trio_httpws.handler(config, proxy=proxy),
                    "127.0.0.1",
                    0,
                    ssl_context=None,
                )
            )
            yield f"http://127.0.0.1:{server.port}"
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await proxy.aclose()


@pytest.fixture
async def proxy(fake_backend: FakeBackend, door: str) -> AsyncIterator[str]:
    """The proxy in front of the fake backend, allowing the test origin, on each door."""
    config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(ALLOWED_ORIGIN,))
    async with running_proxy(config, door) as url:
        yield url


ALLOWED_ORIGIN = "http://www.examplewhitelistedorigin.com"


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` (state owned by another thread, e.g. the fake backend) until true."""
    with trio.fail_after(within):
        while True:
            if predicate():
                return
            await trio.sleep(0.005)


def ws_url(http_url: str, path: str) -> str:
    return http_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + path


@asynccontextmanager
async def connect(
    base: str,
    path: str = "/http_over_websocket",
    *,
    headers: list[tuple[str, str]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    extra = [(k.encode(), v.encode()) for k, v in (headers or [])]
    async with trio_websocket.open_websocket_url(
        ws_url(base, path), extra_headers=extra, max_message_size=2**26, **kwargs
    ) as ws:
        yield ws


def request_json(message_id: Any, method: str, path: str, **fields: Any) -> str:
    return json.dumps({"message_id": message_id, "method": method, "path": path, **fields})


async def read_frame(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str), "the server must send text frames"
    frame: dict[str, Any] = json.loads(message)
    return frame


@dataclass
class Response:
    frames: list[dict[str, Any]]

    @property
    def first(self) -> dict[str, Any]:
        return self.frames[0]

    @property
    def status(self) -> int:
        return int(self.first["status"])

    @property
    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = self.first.get("headers", {})
        return headers

    @property
    def body(self) -> bytes:
        return b"".join(base64.b64decode(f["data"]) for f in self.frames if "data" in f)


async def read_response(ws: trio_websocket.WebSocketConnection, message_id: Any) -> Response:
    """Frames of one request until done; fails on a frame of another request."""
    frames = []
    while True:
        frame = await read_frame(ws)
        assert frame.get("message_id") == message_id, frame
        frames.append(frame)
        if frame["done"]:
            return Response(frames)


async def fetch(
    ws: trio_websocket.WebSocketConnection, message_id: Any, method: str, path: str, **fields: Any
) -> Response:
    await ws.send_message(request_json(message_id, method, path, **fields))
    return await read_response(ws, message_id)


# -- a real Jupyter Server 2 -----------------------------------------------------------------


@dataclass(frozen=True)
class Jupyter:
    url: str
    token: str
    port: int
    #: Jupyter's own log (its stderr), for a test to show when a kernel misbehaves.
    log: Path


@contextmanager
def jupyter_server(*extra_args: str) -> Iterator[Jupyter]:
    """Run a real jupyter_server + ipykernel on 127.0.0.1 (``extra_args`` appended); stop it."""
    port = free_port()
    token = "test-token-" + os.urandom(8).hex()
    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as logs:
        # A file, not a pipe: the session-wide server logs for the whole run, and a pipe nobody
        # reads would block it once full.
        log = Path(logs) / "jupyter.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*jupyter_command(port, token, root), *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Jupyter Server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield Jupyter(f"http://127.0.0.1:{port}", token, port, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def jupyter() -> Iterator[Jupyter]:
    """A real jupyter_server + ipykernel on 127.0.0.1, shared by the session's tests."""
    with jupyter_server() as running:
        yield running


def pytest_report_header() -> str:
    return f"trio_httpws {trio_httpws.__version__} on Python {sys.version.split()[0]}"
