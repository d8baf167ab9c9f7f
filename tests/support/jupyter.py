"""A real Jupyter Server 2 with ipykernel, as a process on 127.0.0.1, and running a cell on it."""

from __future__ import annotations

import json
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
from typing import Any

import pytest
import trio
import trio_websocket

from trio_httpws._jupyter import free_port, jupyter_command, jupyter_environment
from trio_httpws.client import execute_request


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


async def run_cell(ws: trio_websocket.WebSocketConnection, code: str) -> str:
    """Execute ``code`` and return what it printed on stdout."""
    msg_id, message = execute_request(code, uuid.uuid4().hex)
    await ws.send_message(message)
    printed = []
    replied = idle = False
    # The reply (shell channel) and the output (iopub) are not ordered with respect to each
    # other; the cell is finished once both the reply and iopub's "idle" have arrived.
    with trio.fail_after(60):
        while not (replied and idle):
            reply: dict[str, Any] = json.loads(await ws.get_message())
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply["msg_type"]
            if kind == "stream" and reply["content"]["name"] == "stdout":
                printed.append(reply["content"]["text"])
            elif kind == "execute_reply":
                assert reply["content"]["status"] == "ok", reply["content"]
                replied = True
            elif kind == "status" and reply["content"]["execution_state"] == "idle":
                idle = True
    return "".join(printed)
