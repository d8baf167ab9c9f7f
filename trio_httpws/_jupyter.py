"""Starting and stopping a Jupyter Server backend of our own (when the CLI gets no --backend)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ._errors import HttpOverWsError
from ._platform import open_detached_process, runs_as_root

if TYPE_CHECKING:
    import psutil

log = logging.getLogger("trio_httpws.jupyter")


class JupyterStartError(HttpOverWsError):
    """The Jupyter server we started did not come up."""


@dataclass(frozen=True)
class JupyterServer:
    url: str
    port: int
    token: str
    process: trio.Process
    #: Its ``base_url``: its API is under ``{base_url}api``.
    base_url: str = "/"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (Jupyter needs a number, not a listening socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def jupyter_command(port: int, root_dir: str | None = None, base_url: str = "/") -> list[str]:
    """The command line of a Jupyter Server on 127.0.0.1:port. Its token is not on it (every
    local user can read a command line with ``ps``): it goes in :func:`jupyter_environment`."""
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
    ]
    if root_dir is not None:
        command.append(f"--ServerApp.root_dir={root_dir}")
    if base_url != "/":
        command.append(f"--ServerApp.base_url={base_url}")
    if runs_as_root():
        # Jupyter refuses to start as root without it (containers and CI run as root).
        command.append("--allow-root")
    return command


def jupyter_environment(token: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Jupyter Server started with ``token``: ``base`` (ours by default)
    with ``JUPYTER_TOKEN``, which Jupyter Server 2 reads when no token is given on its command
    line. A process's environment is readable by its own user only."""
    env = dict(os.environ if base is None else base)
    env.pop("JUPYTER_TOKEN_FILE", None)  # JUPYTER_TOKEN wins anyway; one source is clearer
    return {**env, "JUPYTER_TOKEN": token, "PYTHONUNBUFFERED": "1"}


async def _answers(port: int, base_url: str) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    async with stream:
        request = f"GET {base_url}api HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        try:
            head = await stream.receive_some(64)
        except trio.BrokenResourceError:
            return False
        return head.startswith(b"HTTP/1.1 200")


class JupyterExited(HttpOverWsError):
    """The Jupyter server we started exited while we were serving in front of it."""


class ProcessTree:
    """The descendants of one process, remembered while it runs.

    Jupyter starts each kernel in a session of its own, so the kernels are outside Jupyter's
    process group; and once Jupyter is gone (killed, crashed) they belong to init and nothing
    leads from Jupyter's pid to them. So we look at Jupyter's children while it runs and stop
    whatever of them outlives it. psutil remembers each process's start time, so a pid reused
    by an unrelated process is never signalled.
    """

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        # psutil.Process compares by pid and start time: a reused pid is a new process.
        self._seen: set[psutil.Process] = set()

    def refresh(self) -> list[psutil.Process]:
        """Look at the tree now (blocking: a walk over the system's processes); the new ones."""
        try:
            children = self._root.children(recursive=True)
        except self._psutil.Error:
            return []
        new = [child for child in children if child not in self._seen]
        self._seen.update(new)
        return new

    async def watch(self, interval: float) -> None:
        while True:
            for child in await trio.to_thread.run_sync(self.refresh):
                log.debug("Jupyter started process %d", child.pid)
            await trio.sleep(interval)

    def survivors(self) -> list[psutil.Process]:
        return [child for child in self._seen if child.is_running()]

    def stop_survivors(self, grace: float) -> list[psutil.Process]:
        """Terminate what is left, kill what does not stop within ``grace``; what was left."""
        left = self.survivors()
        for child in left:
            with suppress(self._psutil.Error):
                child.terminate()
        _, alive = self._psutil.wait_procs(left, timeout=grace)
        for child in alive:
            with suppress(self._psutil.Error):
                child.kill()
        self._psutil.wait_procs(alive, timeout=grace)
        return left


@asynccontextmanager
async def running_jupyter(
    *,
    root_dir: str | None = None,
    base_url: str = "/",
    output: int | None = None,
    startup_timeout: float = 60.0,
    stop_timeout: float = 10.0,
    watch_interval: float = 1.0,
) -> AsyncIterator[JupyterServer]:
    """Start a Jupyter Server with a fresh random token; stop it and its kernels on exit.
    Its own log goes to the file descriptor ``output`` (None: our stdout and stderr).

    If it exits while in use, the body is cancelled and :class:`JupyterExited` raised.
    """
    try:
        import jupyter_server  # noqa: F401
        import psutil  # noqa: F401
    except ImportError:
        from . import __version__  # the package's own __init__ may still be importing us

        # trio_httpws is not on the package index: the extra comes from where it came from.
        wheel = f"trio_httpws-{__version__}-py3-none-any.whl"
        raise JupyterStartError(
            "no --backend given and jupyter_server (or psutil) is not installed: install the "
            "jupyter extra (in a clone of trio_httpws: pip install -e '.[jupyter]'; from a "
            f"built wheel: pip install '{wheel}[jupyter]'), or pass --backend URL"
        ) from None
    port = free_port()
    token = secrets.token_hex(24)
    process = await open_detached_process(
        jupyter_command(port, root_dir, base_url), env=jupyter_environment(token), output=output
    )
    tree = ProcessTree(process.pid)
    server = JupyterServer(f"http://127.0.0.1:{port}", port, token, process, base_url)
    try:
        with trio.move_on_after(startup_timeout) as waiting:
            while not await _answers(port, base_url):
                if process.poll() is not None:
                    raise JupyterStartError(
                        f"Jupyter Server exited with code {process.returncode} while starting"
                    )
                await trio.sleep(0.1)
        if waiting.cancelled_caught:
            raise JupyterStartError(f"Jupyter Server did not answer within {startup_timeout:g}s")
        log.info("started Jupyter Server (pid %d) on 127.0.0.1:%d", process.pid, port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tree.watch, watch_interval)
            nursery.start_soon(_fail_when_exits, process)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stop_jupyter(server, tree, stop_timeout)


async def _fail_when_exits(process: trio.Process) -> None:
    await process.wait()
    raise JupyterExited(f"Jupyter Server exited unexpectedly (code {process.returncode})")


async def _ask_to_shut_down(server: JupyterServer) -> bool:
    """``POST /api/shutdown``: Jupyter shuts its kernels down, then exits (on every platform,
    unlike a signal). False if it could not be asked."""
    request = (
        f"POST {server.base_url}api/shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        f"Authorization: token {server.token}\r\nConnection: close\r\n\r\n"
    )
    with trio.move_on_after(5):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(request.encode())
                head = await stream.receive_some(64)
                return head.startswith(b"HTTP/1.1 2")
        except (OSError, trio.BrokenResourceError):
            pass
    return False


async def stop_jupyter(server: JupyterServer, tree: ProcessTree, grace: float) -> None:
    """Ask Jupyter to shut down, terminate it if it does not, then stop whatever it started
    that is still running (kernels it failed to stop, or outlived it)."""
    process = server.process
    # The latest children (a kernel started a moment ago) while Jupyter still leads to them.
    await trio.to_thread.run_sync(tree.refresh)
    if process.returncode is None:
        if not await _ask_to_shut_down(server):
            process.terminate()
        with trio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            log.warning("Jupyter Server did not stop in %gs; killing it", grace)
            process.kill()
            await process.wait()
    left = await trio.to_thread.run_sync(tree.stop_survivors, grace)
    if left:
        log.warning(
            "stopped %d process(es) the Jupyter Server left running: pid %s",
            len(left),
            ", ".join(str(child.pid) for child in left),
        )
