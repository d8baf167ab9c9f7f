"""Run one cell on a Jupyter kernel through trio_httpws, with the Python client.

    python examples/run_cell.py --url http://127.0.0.1:8889 --token T 'print(6*7)'

prints ``42``. ``--url`` is the proxy (``trio-httpws``, or ``examples/serve_hypercorn.sh``), with
the Jupyter base_url if it has one; ``--token`` is the Jupyter token (or set JUPYTER_TOKEN). The
cell's stdout and stderr are passed through as they arrive; a failing cell prints its error
and exits with status 1.

This is the flow of a browser front end such as Colab, in Python: log in with the token URL
(the auth URL), create a session over ``/http_over_websocket``, run the code on the session's
kernel through ``/http_over_websocket/proxied_ws/api/kernels/<id>/channels``, delete the
session.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from http import HTTPStatus
from urllib.parse import urlsplit

import trio

from trio_httpws.client import ClientError, open_client, open_proxied_websocket, run_code


class CellError(Exception):
    """The cell raised: the message is Python's traceback."""


class RunError(Exception):
    """Jupyter refused a step: the message is one sentence that says what to check."""


#: What a user can check when Jupyter answers with this status.
HINTS = {
    403: "Jupyter refused the token (check --token or JUPYTER_TOKEN)",
    404: "no Jupyter API there (check --url: the proxy, with Jupyter's base_url if it has one)",
}


def refusal(status: int, body: bytes) -> str:
    """Jupyter's error answer as a sentence: the status, then a hint or Jupyter's message."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    detail = HINTS.get(status) or (message if isinstance(message, str) else None)
    return f"{status} {phrase}: {detail}" if detail else f"{status} {phrase}"


async def run_cell(url: str, token: str, code: str, *, kernel: str = "python3") -> None:
    """Run ``code`` on a new kernel behind ``url``; its output goes to our stdout/stderr."""
    base = url.rstrip("/")
    base_path = urlsplit(base).path  # Jupyter's base_url ("" for "/")
    auth_url = f"{base}/?token={token}"
    session_id = secrets.token_hex(16)
    async with open_client(base, auth_url=auth_url) as client:
        spec = {
            "path": f"run_cell-{session_id[:8]}.ipynb",
            "type": "notebook",
            "name": "",
            "kernel": {"name": kernel},
        }
        async with await client.request(
            "POST", f"{base_path}/api/sessions", body=json.dumps(spec)
        ) as response:
            body = await response.read()
        if response.status != 201:
            raise RunError(f"creating a session failed: {refusal(response.status, body)}")
        session = json.loads(body)
        try:
            channels = f"/api/kernels/{session['kernel']['id']}/channels?session_id={session_id}"
            async with open_proxied_websocket(base, channels, auth_url=auth_url) as ws:
                result = await run_code(ws, code, session=session_id, on_output=_pass_through)
            if result.result is not None:
                print(result.result, flush=True)
            if not result.ok:
                raise CellError(result.traceback or result.error or f"ended {result.status!r}")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                async with await client.request(
                    "DELETE", f"{base_path}/api/sessions/{session['id']}"
                ) as response:
                    await response.read()


def _pass_through(name: str, text: str) -> None:
    out = sys.stdout if name == "stdout" else sys.stderr
    out.write(text)
    out.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("code", help="the Python code to run")
    parser.add_argument("--url", default="http://127.0.0.1:8889", help="the proxy's base URL")
    parser.add_argument("--token", default=os.environ.get("JUPYTER_TOKEN"), help="Jupyter token")
    parser.add_argument("--kernel", default="python3", help="kernel name")
    parser.add_argument("--timeout", type=float, default=120, help="seconds for the whole run")
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or JUPYTER_TOKEN) is required")

    async def run() -> None:
        with trio.fail_after(args.timeout):
            await run_cell(args.url, args.token, args.code, kernel=args.kernel)

    try:
        trio.run(run)
    except CellError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (ClientError, RunError) as exc:
        print(f"run_cell: {exc}", file=sys.stderr)
        return 1
    except trio.TooSlowError:
        print(f"no result within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
