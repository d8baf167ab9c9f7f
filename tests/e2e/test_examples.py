"""Every program in examples/ runs as its docstring says, as a subprocess with a timeout.

The servers an example needs (a real Jupyter Server, the proxy) are started here; their URLs
reach the example through its command line or environment, as a user would pass them.
examples/web_page runs in a real browser in test_browser.py; here only its server is checked.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import pytest
import trio

import trio_httpws

from ..support._http import http_get, http_request, websocket_handshake
from ..support.jupyter import Jupyter
from ..support.processes import EXAMPLES, example_env, hypercorn_example, page_server, stop
from ..support.proxies import running_proxy

PYTHON_EXAMPLES = sorted(EXAMPLES.rglob("*.py"))


async def run_example(
    args: Sequence[str], *, env: dict[str, str] | None = None, within: float = 90
) -> subprocess.CompletedProcess[bytes]:
    """Run an example to its end; fail if it takes longer than ``within`` seconds."""
    with trio.fail_after(within):
        return await trio.run_process(
            list(args),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env or example_env(),
        )


def describe(result: subprocess.CompletedProcess[bytes]) -> str:
    return (
        f"exit code {result.returncode}\nstdout:\n{result.stdout.decode()}\n"
        f"stderr:\n{result.stderr.decode()[-4000:]}"
    )


def run_cell_args(url: str, token: str, code: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / "run_cell.py"), "--url", url, "--token", token, code]


# -- the examples say how to run them --------------------------------------------------------


@pytest.mark.parametrize("path", PYTHON_EXAMPLES, ids=lambda p: p.name)
def test_python_examples_say_how_to_run_them(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    relative = path.relative_to(EXAMPLES.parent).as_posix()
    assert re.search(rf"python {re.escape(relative)}\b", docstring), (
        f"{relative}'s docstring must show its command line"
    )


def test_shell_example_says_how_to_run_it() -> None:
    text = (EXAMPLES / "serve_hypercorn.sh").read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "sh examples/serve_hypercorn.sh" in text
    assert "hypercorn --worker-class trio --bind 127.0.0.1:8889 trio_httpws:app" in text


# -- serve_hypercorn.sh + run_cell.py --------------------------------------------------------


async def test_serve_hypercorn_then_run_cell(jupyter: Jupyter) -> None:
    async with hypercorn_example(jupyter.url) as (url, process, log_path):
        result = await run_example(run_cell_args(url, jupyter.token, "print(6*7)"))
        assert result.returncode == 0, describe(result)
        assert result.stdout.decode() == "42\n", describe(result)
        # The same port is Jupyter's, for plain HTTP too.
        status, _, _ = await http_get(url, f"/api/status?token={jupyter.token}")
        assert status == 200
        # The same origin policy as every other entry point: Colab's preflight is answered,
        # a foreign origin is refused, and hypercorn's Date and Server are the only ones.
        colab = "https://colab.research.google.com"
        preflight = await http_request(
            url,
            "OPTIONS",
            "/api/kernelspecs",
            headers=[
                ("Origin", colab),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Private-Network", "true"),
            ],
        )
        assert preflight.status == 204
        assert preflight.all("access-control-allow-private-network") == ["true"]
        specs = await http_request(
            url, "GET", f"/api/kernelspecs?token={jupyter.token}", headers=[("Origin", colab)]
        )
        assert specs.status == 200
        assert specs.all("access-control-allow-origin") == [colab]
        assert len(specs.all("date")) == len(specs.all("server")) == 1
        refused = await http_request(
            url,
            "GET",
            f"/api/kernelspecs?token={jupyter.token}",
            headers=[("Origin", "https://evil.example")],
        )
        assert refused.status == 403
        # Browsers offer WebSocket compression; under `hypercorn trio_httpws:app` too it is
        # declined by default (Config.ws_compression).
        offer = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
        response, _ = await websocket_handshake(url, "/http_over_websocket/diagnose", [offer])
        assert response.status == 101
        assert response.all("sec-websocket-extensions") == []
        await stop(process)
        assert process.returncode == 0, log_path.read_text()


async def test_run_cell_reports_a_failing_cell(jupyter: Jupyter, door: str) -> None:
    async with running_proxy(trio_httpws.Config(backend=jupyter.url), door) as url:
        result = await run_example(
            run_cell_args(url, jupyter.token, "import sys\nprint('before')\n1/0")
        )
    assert result.returncode == 1, describe(result)
    assert result.stdout.decode() == "before\n"
    assert "ZeroDivisionError: division by zero" in result.stderr.decode()
    assert "\x1b[" not in result.stderr.decode()  # the traceback's colours are stripped


async def test_run_cell_with_a_wrong_token_fails_cleanly(jupyter: Jupyter, door: str) -> None:
    async with running_proxy(trio_httpws.Config(backend=jupyter.url), door) as url:
        result = await run_example(run_cell_args(url, "wrong-token", "print(1)"))
    assert result.returncode == 1, describe(result)
    # One sentence that says what to fix, not the bytes of Jupyter's answer.
    assert result.stderr.decode().splitlines() == [
        "run_cell: creating a session failed: 403 Forbidden: Jupyter refused the token "
        "(check --token or JUPYTER_TOKEN)"
    ], describe(result)


# -- embed_in_trio.py ----------------------------------------------------------------------------


async def test_embed_in_trio(jupyter: Jupyter) -> None:
    result = await run_example(
        [
            sys.executable,
            str(EXAMPLES / "embed_in_trio.py"),
            "--backend",
            jupyter.url,
            "--token",
            jupyter.token,
        ],
        within=60,
    )
    assert result.returncode == 0, describe(result)
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "tick 0"
    others = [re.sub(r"\d+ kernel", "N kernel", line) for line in lines[1:] if "tick" not in line]
    assert others == [
        "own server: 200 OK, N kernel(s) running",
        "trio-websocket server: 200 OK, N kernel(s) running",
        "stopped cleanly",
    ], describe(result)


# -- web_page/serve_page.py ----------------------------------------------------------------------


async def test_serve_page_serves_the_page_and_the_packaged_js() -> None:
    async with page_server() as origin:
        status, headers, body = await http_get(origin, "/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert b'from "./httpws.js"' in body
        status, headers, body = await http_get(origin, "/httpws.js")
        assert status == 200
        # A module script needs a JavaScript MIME type.
        assert headers["content-type"].startswith("text/javascript")
        assert body == files("trio_httpws").joinpath("static", "httpws.js").read_bytes()
        status, _, _ = await http_get(origin, "/../../pyproject.toml")
        assert status == 404
