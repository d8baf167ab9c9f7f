"""Code on a kernel: the ``execute_request`` a kernel's channels socket takes."""

from __future__ import annotations

import json
import secrets


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
