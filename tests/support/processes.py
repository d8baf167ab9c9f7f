"""Child processes of a test: the examples (their environment, their ready line) and stopping a
process for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import h11
import pytest
import trio

from trio_httpws._jupyter import free_port

from ._http import http_get

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_env(**extra: str) -> dict[str, str]:
    """The environment of an example: ours, with this interpreter's scripts first on PATH."""
    scripts = str(Path(sys.executable).parent)
    path = scripts + os.pathsep + os.environ.get("PATH", "")
    return {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1", **extra}


async def read_line(stream: trio.abc.ReceiveStream, within: float = 30) -> str:
    """One line of a child's output (its "I am ready" line), within ``within`` seconds."""
    data = b""
    with trio.fail_after(within):
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(1)
            if not chunk:
                raise AssertionError(f"the process closed its output after {data!r}")
            data += chunk
    return data.decode().strip()


async def stop(process: trio.Process, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL (its whole session) if it lingers; always reaps it."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(grace):
                await process.wait()
        if process.returncode is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@asynccontextmanager
async def page_server() -> AsyncIterator[str]:
    """examples/web_page/serve_page.py on a free port; yields its origin ``http://127.0.0.1:P``."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "web_page" / "serve_page.py"), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=example_env(),
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = await read_line(process.stdout)
        assert line.startswith("Serving http://127.0.0.1:"), line
        yield line.removeprefix("Serving ").rstrip("/")
    finally:
        await stop(process)


@asynccontextmanager
async def hypercorn_example(backend: str) -> AsyncIterator[tuple[str, trio.Process, Path]]:
    """examples/serve_hypercorn.sh on a free port; yields its URL, process and log file."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "hypercorn.log"
        with log_path.open("wb") as log_file:
            process = await trio.lowlevel.open_process(
                ["sh", str(EXAMPLES / "serve_hypercorn.sh")],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=example_env(TRIO_HTTPWS_BACKEND=backend, BIND=f"127.0.0.1:{port}"),
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            # Ready once the proxy answers an HTTP request, relayed to Jupyter.
            status = 0
            with trio.move_on_after(30):
                while status != 200 and process.poll() is None:
                    try:
                        status, _, _ = await http_get(url, "/api")
                    except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
                        await trio.sleep(0.05)
            if status != 200:
                pytest.fail(f"hypercorn did not serve the proxy:\n{log_path.read_text()[-4000:]}")
            yield url, process, log_path
        finally:
            await stop(process)
