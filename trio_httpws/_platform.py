"""What differs between Linux, macOS and Windows for the command line, all in one place.

mypy checks this module for each platform (``nox -s typecheck``); the rest of the code calls
only these names and the portable parts of trio and psutil (``Process.terminate``/``kill``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

import trio

if sys.platform == "win32":
    #: Signals that ask us to shut down (Ctrl-C, Ctrl-Break).
    STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGBREAK)
else:
    STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def open_detached_process(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, output: int | None = None
) -> trio.Process:
    """Start ``command`` out of reach of a Ctrl-C in our terminal (stdin: /dev/null; stdout and
    stderr: the file descriptor ``output``, or ours if None).

    Our Ctrl-C must not reach the child directly (Jupyter would ask "Shutdown this Jupyter
    server?" on the terminal): we stop it ourselves, after our own graceful shutdown.
    """
    if sys.platform == "win32":
        # A console Ctrl-C reaches every process on the console, except those in a process
        # group of their own.
        return await trio.lowlevel.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=env,
            creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
        )
    # A terminal's Ctrl-C reaches its foreground process group; a new session is outside it.
    return await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        env=env,
        start_new_session=True,
    )


def runs_as_root() -> bool:
    if sys.platform == "win32":
        return False
    return os.geteuid() == 0
