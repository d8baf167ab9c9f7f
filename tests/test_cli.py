"""The command line, run as a real process: it starts Jupyter, serves, and stops everything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from urllib.parse import urlencode

import pytest
import trio

from trio_httpws._cli import JsonFormatter, build_parser, config_from_args

from .conftest import connect, fetch

COLAB = "https://colab.research.google.com"


def _processes_with(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_cli_starts_jupyter_serves_and_stops_cleanly(
    tmp_path: object, stop_signal: signal.Signals
) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_httpws", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        output = b""
        with trio.fail_after(60):
            while b"Press Ctrl-C" not in output:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"CLI exited early: {output.decode()}"
                output += chunk
        text = output.decode()
        match = re.search(r"(http://127\.0\.0\.1:(\d+))/\?token=([0-9a-f]+)", text)
        assert match, text
        base, token = match.group(1), match.group(3)
        assert f"Allowed origins: {COLAB}" in text
        assert len(_processes_with(token)) == 1  # the Jupyter server we started

        auth = urlencode({"jupyter_http_over_ws_auth_url": f"{base}/?token={token}"})
        async with connect(base, "/http_over_websocket?" + auth, headers=[("Origin", COLAB)]) as ws:
            response = await fetch(ws, "1", "GET", "/api/sessions")
        assert response.status == 200
        assert json.loads(response.body) == []

        process.send_signal(stop_signal)
        with trio.fail_after(30):
            await process.wait()
        errors = (await process.stderr.receive_some(1 << 20)).decode()
        assert process.returncode == 0, errors
        # The startup log names the default origin.
        assert f"allowing {COLAB} (the default)" in errors
        assert _processes_with(token) == []  # nothing left behind
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_cli_settings_become_a_config() -> None:
    args = build_parser().parse_args(
        [
            "--allow-origin",
            "https://a.example",
            "--allow-origin",
            "https://b.example",
            "--allow-origin-pat",
            r"https://.*\.c\.example",
            "--allow-host",
            "box.lan",
        ]
    )
    config = config_from_args(args, "http://127.0.0.1:9999")
    assert config.allow_origins == ("https://a.example", "https://b.example")
    assert config.origin_policy.allows("https://x.c.example")
    assert not config.origin_policy.allows(COLAB)
    assert config.allow_hosts == ("box.lan",)
    assert str(config.backend_url) == "http://127.0.0.1:9999"


def test_cli_defaults_to_colab(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    config = config_from_args(build_parser().parse_args([]), "http://127.0.0.1:9999")
    assert config.allow_origins == (COLAB,)
    assert any("default" in r.getMessage() for r in caplog.records)


def test_cli_bad_backend_is_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_httpws", "--backend", "ftp://x", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "must be http://host[:port]" in result.stderr
    assert "Traceback" not in result.stderr


async def test_one_structured_access_line_per_request_without_secrets(
    proxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="trio_httpws.access")
    async with connect(proxy) as ws:
        await fetch(ws, "m1", "POST", "/api/sessions?token=secret123", body="x")
    [record] = [
        r
        for r in caplog.records
        if r.name == "trio_httpws.access" and r.fields["kind"] == "tunnel"  # type: ignore[attr-defined]
    ]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["origin"] == "none"
    assert fields["method"] == "POST"
    assert fields["path"] == "/api/sessions"
    assert fields["status"] == 200
    assert fields["bytes"] == 1
    assert fields["message_id"] == "m1"
    assert fields["duration_ms"] >= 0
    line = JsonFormatter().format(record)
    assert "secret123" not in line
    assert json.loads(line)["status"] == 200
    assert "secret123" not in record.getMessage()
