"""A real Jupyter Server 2 with ipykernel, as a process on 127.0.0.1, and running a cell on it."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio_websocket

from trio_httpws._jupyter import free_port, jupyter_command, jupyter_environment
from trio_httpws.client import run_code


@dataclass(frozen=True)
class Jupyter:
    url: str
    token: str
    port: int
    #: Jupyter's own log (its stderr), for a test to show when a kernel misbehaves.
    log: Path
    #: Its ``--ServerApp.base_url``: where its API is (``url`` is scheme://host:port only).
    base_url: str = "/"


@contextmanager
def jupyter_server(*extra_args: str) -> Iterator[Jupyter]:
    """Run a real jupyter_server + ipykernel on 127.0.0.1 (``extra_args`` appended); stop it."""
    base_url = next(
        (a.split("=", 1)[1] for a in extra_args if a.startswith("--ServerApp.base_url=")), "/"
    )
    port = free_port()
    token = "test-token-" + os.urandom(8).hex()
    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as logs:
        # A file, not a pipe: the session-wide server logs for the whole run, and a pipe nobody
        # reads would block it once full.
        log = Path(logs) / "jupyter.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*jupyter_command(port, root), *extra_args],
                env=jupyter_environment(token),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    api = f"http://127.0.0.1:{port}{base_url}api"
                    with urllib.request.urlopen(api, timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Jupyter Server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield Jupyter(f"http://127.0.0.1:{port}", token, port, log, base_url)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def run_cell(ws: trio_websocket.WebSocketConnection, code: str) -> str:
    """Execute ``code`` and return what it printed on stdout."""
    with trio.fail_after(60):
        result = await run_code(ws, code, session=uuid.uuid4().hex)
    assert result.ok, result
    return result.stdout
