"""Code on a kernel: the ``execute_request`` a kernel's channels socket takes, and
:func:`run_code`, which sends one and waits for the kernel to be done with it."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


def execute_request(code: str, session: str | None = None) -> tuple[str, str]:
    """A Jupyter ``execute_request`` for a kernel's channels socket: ``(msg_id, JSON text)``.

    Send the text on a socket from :func:`open_proxied_websocket` (default channel protocol, no
    subprotocol); the kernel's replies carry ``msg_id`` as their ``parent_header.msg_id``. Output
    (iopub) and the reply (shell) are not ordered with respect to each other: the cell is done
    once both the ``execute_reply`` and iopub's ``status`` ``idle`` have arrived.
    """
    msg_id = secrets.token_hex(16)
    message = {
        "header": {
            "msg_id": msg_id,
            "username": "trio_httpws",
            "session": session or secrets.token_hex(16),
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
    return msg_id, json.dumps(message)


class KernelSocket(Protocol):
    """A kernel's channels socket (default JSON protocol), as ``open_websocket`` and
    ``open_proxied_websocket`` yield it."""

    async def send_message(self, message: str) -> None: ...

    async def get_message(self) -> str | bytes: ...


@dataclass(frozen=True)
class CodeResult:
    """What running code on a kernel gave."""

    #: ``execute_reply``'s status: ``"ok"``, ``"error"`` or ``"aborted"`` ("" if it had none).
    status: str
    #: What the code printed on stdout, and on stderr.
    stdout: str = ""
    stderr: str = ""
    #: The value of the last expression (``execute_result``'s ``text/plain``), or None.
    result: str | None = None
    #: The exception the code raised, as ``Name: value``, or None.
    error: str | None = None
    #: Its traceback, without the terminal's colour codes ("" when the kernel sent none).
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.error is None


@dataclass
class _Run:
    """What has arrived so far of one execution."""

    on_output: Callable[[str, str], object] | None
    status: str = ""
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    result: str | None = None
    error: str | None = None
    traceback: str = ""
    replied: bool = False
    idle: bool = False

    def take(self, kind: object, content: dict[str, Any]) -> None:
        if kind == "stream" and content.get("name") in ("stdout", "stderr"):
            text = str(content.get("text", ""))
            (self.stdout if content["name"] == "stdout" else self.stderr).append(text)
            if self.on_output is not None:
                self.on_output(content["name"], text)
        elif kind == "execute_result":
            data = content.get("data")
            self.result = str(data.get("text/plain", "")) if isinstance(data, dict) else ""
        elif kind == "error":
            self.error = _error_of(content)
            lines = content.get("traceback")
            if isinstance(lines, list):
                self.traceback = _ANSI_ESCAPE.sub("", "\n".join(str(line) for line in lines))
        elif kind == "execute_reply":
            self.replied = True
            self.status = str(content.get("status", ""))
            if self.status not in ("ok", "") and self.error is None:
                self.error = _error_of(content)
        elif kind == "status" and content.get("execution_state") == "idle":
            self.idle = True

    def outcome(self) -> CodeResult:
        return CodeResult(
            self.status,
            "".join(self.stdout),
            "".join(self.stderr),
            self.result,
            self.error,
            self.traceback,
        )


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _error_of(content: dict[str, Any]) -> str:
    return f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"


def _reply_to(raw: str | bytes, msg_id: str) -> tuple[object, dict[str, Any]] | None:
    """(msg_type, content) of a kernel message answering ``msg_id``; None for any other."""
    try:
        reply: Any = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        return None  # not a kernel message of the JSON protocol: not ours either
    parent = reply.get("parent_header") if isinstance(reply, dict) else None
    if not isinstance(parent, dict) or parent.get("msg_id") != msg_id:
        return None
    # Our msg_id, but not necessarily a well-formed message: odd parts count as empty.
    header = reply.get("header") if isinstance(reply.get("header"), dict) else {}
    content = reply.get("content") if isinstance(reply.get("content"), dict) else {}
    return reply.get("msg_type") or header.get("msg_type"), content


async def run_code(
    ws: KernelSocket,
    code: str,
    *,
    session: str | None = None,
    on_output: Callable[[str, str], object] | None = None,
) -> CodeResult:
    """Run ``code`` on the kernel behind ``ws`` and wait until it is done.

    Done is both the ``execute_reply`` (shell) and iopub's ``status`` ``idle``, which arrive in
    either order. ``on_output(name, text)`` sees each piece of ``stdout``/``stderr`` as it
    arrives. Messages for other requests, and messages that are not the kernel's JSON, are
    skipped. Bound the wait with a trio deadline: a kernel that never answers is waited for.
    """
    msg_id, message = execute_request(code, session)
    await ws.send_message(message)
    run = _Run(on_output)
    while not (run.replied and run.idle):
        reply = _reply_to(await ws.get_message(), msg_id)
        if reply is not None:
            run.take(*reply)
    return run.outcome()
