"""The command line, run as a real process: it starts Jupyter, serves, and stops everything."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from urllib.parse import urlencode

import pytest
import trio

from trio_httpws import Config
from trio_httpws._cli import JsonFormatter, build_parser, config_from_args
from trio_httpws._config import SETTINGS

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
            "--backend",
            "http://127.0.0.1:9999",
        ]
    )
    config = config_from_args(args, {})
    assert config.allow_origins == ("https://a.example", "https://b.example")
    assert config.origin_policy.allows("https://x.c.example")
    assert not config.origin_policy.allows(COLAB)
    assert config.allow_hosts == ("box.lan",)
    assert str(config.backend_url) == "http://127.0.0.1:9999"


def test_cli_defaults_to_colab(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    config = config_from_args(build_parser().parse_args([]), {})
    assert config.allow_origins == (COLAB,)
    assert [r.getMessage() for r in caplog.records] == [
        f"no origin given: allowing {COLAB} (the default)"
    ]


# One sample value per setting, as text, and the Config value it must become.
SAMPLES: dict[str, tuple[str, object]] = {
    "backend": ("http://10.0.0.1:7000", "http://10.0.0.1:7000"),
    "allow_origins": ("https://a.example", ("https://a.example",)),
    "allow_origin_pat": (r"https://.*\.a\.example", r"https://.*\.a\.example"),
    "allow_hosts": ("box.lan", ("box.lan",)),
    "base_url": ("/lab/", "/lab/"),
    "max_message_size": ("1234567", 1234567),
    "max_in_flight": ("7", 7),
    "max_connections": ("11", 11),
    "max_idle_connections": ("3", 3),
    "connect_timeout": ("2.5", 2.5),
    "read_timeout": ("42", 42.0),
    "shutdown_timeout": ("0.5", 0.5),
    "backend_ca": ("/etc/ca.pem", "/etc/ca.pem"),
}


def test_every_setting_has_a_flag_and_a_variable() -> None:
    # Every Config field a user sets has an entry in the table (the derived ones are not init).
    settable = {f.name for f in dataclasses.fields(Config) if f.init}
    assert {s.name for s in SETTINGS} == settable == set(SAMPLES)
    for setting in SETTINGS:
        raw, expected = SAMPLES[setting.name]
        from_flag = config_from_args(build_parser().parse_args([setting.flag, raw]), {})
        from_env = config_from_args(build_parser().parse_args([]), {setting.env: raw})
        assert getattr(from_flag, setting.name) == expected, setting.flag
        assert getattr(from_env, setting.name) == expected, setting.env
        # trio_httpws:app reads the same variable the same way.
        assert getattr(Config.from_env({setting.env: raw}), setting.name) == expected


def test_flags_win_over_the_environment() -> None:
    env = {
        "TRIO_HTTPWS_BACKEND": "http://10.0.0.1:7000",
        "TRIO_HTTPWS_MAX_IN_FLIGHT": "7",
        "TRIO_HTTPWS_READ_TIMEOUT": "9",
        "TRIO_HTTPWS_ALLOW_ORIGIN": "https://env.example,https://env2.example",
        "TRIO_HTTPWS_ALLOW_HOSTS": "env.lan",
    }
    args = build_parser().parse_args(
        ["--max-in-flight", "3", "--allow-origin", "https://flag.example", "--allow-host", "f.lan"]
    )
    config = config_from_args(args, env)
    assert config.max_in_flight == 3  # the flag
    assert config.read_timeout == 9.0  # the variable, no flag given
    assert config.backend == "http://10.0.0.1:7000"
    assert config.allow_origins == ("https://flag.example",)  # a list is replaced, not merged
    assert config.allow_hosts == ("f.lan",)
    # Without flags, the CLI and trio_httpws:app build the same Config from the same variables.
    assert config_from_args(build_parser().parse_args([]), env) == Config.from_env(env)


def test_an_origin_pattern_alone_allows_only_what_it_matches() -> None:
    for args, env in [
        (["--allow-origin-pat", "https://x"], {}),
        ([], {"TRIO_HTTPWS_ALLOW_ORIGIN_PAT": "https://x"}),
    ]:
        config = config_from_args(build_parser().parse_args(args), env)
        assert config.allow_origins == ()
        assert config.origin_policy.allows("https://x")
        assert not config.origin_policy.allows(COLAB)
    # An empty origin list set on purpose allows no foreign origin.
    config = config_from_args(build_parser().parse_args([]), {"TRIO_HTTPWS_ALLOW_ORIGIN": ""})
    assert config.allow_origins == ()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_httpws", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


SECRET = "s3cr3t0ken"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--backend", "ftp://x"], {}, "argument --backend: backend URL 'ftp://x' must be http"),
        (
            ["--backend", f"http://127.0.0.1:8888/?token={SECRET}"],
            {},
            "must be scheme://host[:port] only",
        ),
        (["--backend", f"http://me:{SECRET}@127.0.0.1:8888"], {}, "must be scheme://host"),
        ([f"http://127.0.0.1:8888/?token={SECRET}"], {}, "unrecognized arguments"),
        (["--backnd", f"http://127.0.0.1:8888/lab?foo={SECRET}"], {}, "unrecognized arguments"),
        (["--max-in-flight", "0"], {}, "argument --max-in-flight: must be at least 1, not 0"),
        (["--read-timeout", "soon"], {}, "argument --read-timeout: 'soon' is not a number"),
        ([], {"TRIO_HTTPWS_MAX_CONNECTIONS": "many"}, "TRIO_HTTPWS_MAX_CONNECTIONS: 'many' is"),
        (
            [],
            {"TRIO_HTTPWS_BACKEND": f"http://127.0.0.1:8888/?token={SECRET}"},
            "TRIO_HTTPWS_BACKEND: backend URL",
        ),
        (["--base-url", "lab"], {}, "base_url must start and end with '/'"),
        (["--allow-origin-pat", "("], {}, "allow_origin_pat is not a valid regular expression"),
    ],
)
def test_a_bad_setting_is_one_clear_line_without_secrets(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("trio-httpws: error: "), result.stderr
    assert message in last
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


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
