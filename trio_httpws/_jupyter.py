"""Starting and stopping a Jupyter Server backend of our own (when the CLI gets no --backend)."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import trio

from ._errors import HttpOverWsError

log = logging.getLogger("trio_httpws.jupyter")


class JupyterStartError(HttpOverWsError):
    """The Jupyter server we started did not come up."""


@dataclass(frozen=True)
class JupyterServer:
    url: str
    port: int
    token: str
    process: trio.Process


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (Jupyter needs a number, not a listening socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def jupyter_command(port: int, token: str, root_dir: str | None = None) -> list[str]:
    """The command line of a Jupyter Server on 127.0.0.1:port with this token."""
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
    ]
    if root_dir is not None:
        command.append(f"--ServerApp.root_dir={root_dir}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Jupyter refuses to start as root without it (containers and CI run as root).
        command.append("--allow-root")
    return command


async def _answers(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    async with stream:
        await stream.send_all(b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        try:
            head = await stream.receive_some(64)
        except trio.BrokenResourceError:
            return False
        return head.startswith(b"HTTP/1.1 200")


@asynccontextmanager
async def running_jupyter(
    *, root_dir: str | None = None, startup_timeout: float = 60.0, stop_timeout: float = 10.0
) -> AsyncIterator[JupyterServer]:
    """Start a Jupyter Server with a fresh random token; stop it (and its kernels) on exit."""
    try:
        import jupyter_server  # noqa: F401
    except ImportError:
        raise JupyterStartError(
            "no --backend given and jupyter_server is not installed: "
            "pip install 'trio_httpws[jupyter]', or pass --backend URL"
        ) from None
    port = free_port()
    token = secrets.token_hex(24)
    process = await trio.lowlevel.open_process(
        jupyter_command(port, token, root_dir),
        stdin=subprocess.DEVNULL,
        # Its own session: a Ctrl-C in our terminal must not reach Jupyter directly (it would ask
        # "Shutdown this Jupyter server?" on a terminal); we stop it ourselves with SIGTERM.
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        with trio.move_on_after(startup_timeout) as waiting:
            while not await _answers(port):
                if process.poll() is not None:
                    raise JupyterStartError(
                        f"Jupyter Server exited with code {process.returncode} while starting"
                    )
                await trio.sleep(0.1)
        if waiting.cancelled_caught:
            raise JupyterStartError(f"Jupyter Server did not answer within {startup_timeout:g}s")
        log.info("started Jupyter Server (pid %d) on 127.0.0.1:%d", process.pid, port)
        yield JupyterServer(f"http://127.0.0.1:{port}", port, token, process)
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(process, stop_timeout)


async def stop_process(process: trio.Process, grace: float) -> None:
    """SIGTERM (Jupyter then shuts its kernels down), then SIGKILL the group if it lingers."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        log.warning("Jupyter Server did not stop in %gs; killing it", grace)
    # Whatever is left of its process group (kernels it failed to stop) goes too.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
