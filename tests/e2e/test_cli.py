"""The command line, run as a real process: it starts Jupyter, serves, and stops everything."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import psutil
import pytest
import trio

import trio_httpws
from trio_httpws import Config
from trio_httpws._cli import JsonFormatter, build_parser, config_from_args
from trio_httpws._config import SETTINGS
from trio_httpws.doctor import doctor, verdict_line

from ..support._http import http_request
from ..support.proxies import wait_until
from ..support.ws import connect, fetch

COLAB = "https://colab.research.google.com"
COLAB_SHORT = "https://colab.google.com"
#: How the CLI names the default origins.
DEFAULT_ORIGINS = f"{COLAB}, {COLAB_SHORT}"


def _processes_with(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if text in " ".join(process.cmdline()):
                found.append(process)
    return found


@dataclasses.dataclass
class Cli:
    process: trio.Process
    stdout: str
    base: str
    token: str
    jupyter: psutil.Process
    stderr: bytearray
    #: The log file the start lines name (every request, Jupyter's own log).
    log_file: Path
    #: What the CLI writes to stdout after its start lines.
    later: bytearray

    @property
    def log(self) -> str:
        """What the CLI wrote to the screen's stderr."""
        return self.stderr.decode(errors="replace")

    async def wait_for_log(self, text: str, within: float = 30) -> None:
        await wait_until(lambda: text in self.log, within=within)


#: The start line that names the log file.
LOG_FILE_LINE = re.compile(r"^Log \(.*\): (.+)$", re.MULTILINE)


@contextlib.asynccontextmanager
async def running_cli(
    *args: str, env: dict[str, str] | None = None, log_level: str | None = "debug"
) -> AsyncIterator[Cli]:
    """``trio-httpws`` with a Jupyter of its own, as a real process; killed if still running.
    ``log_level`` None: the CLI's default."""
    level = ["--log-level", log_level] if log_level else []
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_httpws", "--port", "0", *level, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = bytearray()
    later = bytearray()

    async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
        async for chunk in stream:
            into.extend(chunk)

    named: re.Match[str] | None = None
    jupyter: psutil.Process | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain, process.stderr, stderr)
        try:
            output = b""
            with trio.fail_after(60):
                while b"Press Ctrl-C to stop.\n" not in output:
                    chunk = await process.stdout.receive_some(4096)
                    assert chunk, f"CLI exited early: {output.decode()} {stderr.decode()}"
                    output += chunk
            output, _, rest = output.partition(b"Press Ctrl-C to stop.\n")
            output += b"Press Ctrl-C to stop.\n"
            later.extend(rest)
            nursery.start_soon(drain, process.stdout, later)
            text = output.decode()
            match = re.search(r"(http://127\.0\.0\.1:(\d+))/(?:[\w/]+/)?\?token=([0-9a-f]+)", text)
            assert match, text
            named = LOG_FILE_LINE.search(text)
            assert named, text
            log_file = Path(named.group(1))
            started = re.search(
                r"started Jupyter Server \(pid (\d+)\)",
                stderr.decode() + await trio.Path(log_file).read_text(),
            )
            assert started, stderr.decode()
            jupyter = psutil.Process(int(started.group(1)))  # the Jupyter server it started
            yield Cli(
                process, text, match.group(1), match.group(3), jupyter, stderr, log_file, later
            )
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            # Killed, the CLI cannot stop its Jupyter (a session of its own): a failed test
            # must not leave it running.
            if jupyter is not None:
                with contextlib.suppress(psutil.Error):
                    jupyter.kill()
            if named:
                await trio.Path(named.group(1)).unlink(missing_ok=True)
            # A Jupyter that outlived us would hold the pipe open: stop reading after a moment.
            nursery.cancel_scope.deadline = trio.current_time() + 5


async def start_kernel(cli: Cli, name: str) -> psutil.Process:
    """Start a kernel through the proxy's reverse HTTP; its process, once it runs."""

    def post() -> str:
        request = urllib.request.Request(
            f"{cli.base}/api/kernels",
            data=json.dumps({"name": name}).encode(),
            headers={"Authorization": f"token {cli.token}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            kernel_id: str = json.load(response)["id"]
            return kernel_id

    kernel_id = await trio.to_thread.run_sync(post)
    found: list[psutil.Process] = []

    def running() -> bool:
        found[:] = _processes_with(f"kernel-{kernel_id}.json")
        return len(found) == 1

    await wait_until(running, within=30)
    return found[0]


def orphan_prone_kernelspec(root: Path) -> dict[str, str]:
    """A Python kernel that does not watch its parent: killed with Jupyter, it would live on
    (as do kernels of most other languages). The environment that makes Jupyter offer it."""
    spec = root / "share" / "jupyter" / "kernels" / "orphan"
    spec.mkdir(parents=True)
    argv = ["env", "-u", "JPY_PARENT_PID", sys.executable, "-m", "ipykernel_launcher"]
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [*argv, "-f", "{connection_file}"],
                "display_name": "orphan-prone Python",
                "language": "python",
            }
        )
    )
    return {"JUPYTER_PATH": str(root / "share" / "jupyter")}


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_cli_starts_jupyter_serves_and_stops_cleanly(
    stop_signal: signal.Signals, door: str
) -> None:
    async with running_cli("--server", door) as cli:
        assert f"Allowed origins: {DEFAULT_ORIGINS}\n" in cli.stdout
        # Under the URL: the no-kernel doctor's verdict on the proxy, from Colab's origin.
        lines = cli.stdout.splitlines()
        verdict = lines[lines.index(f"    {cli.base}/?token={cli.token}") + 1]
        assert verdict == "Colab can connect: direct flow ok, old tunnel ok"
        report = await doctor(f"{cli.base}/?token={cli.token}", COLAB, kernel=False)
        assert verdict == verdict_line(report)
        auth = urlencode({"jupyter_http_over_ws_auth_url": f"{cli.base}/?token={cli.token}"})
        path = "/http_over_websocket?" + auth
        async with connect(cli.base, path, headers=[("Origin", COLAB)]) as ws:
            response = await fetch(ws, "1", "GET", "/api/sessions")
        assert response.status == 200
        assert json.loads(response.body) == []
        kernel = await start_kernel(cli, "python3")
        # The token reached Jupyter, and so the proxy works, through no command line: `ps`
        # shows command lines to every local user.
        assert cli.jupyter.is_running()
        assert cli.token not in " ".join(cli.jupyter.cmdline())
        assert _processes_with(cli.token) == []

        cli.process.send_signal(stop_signal)
        with trio.fail_after(30):
            await cli.process.wait()
        assert cli.process.returncode == 0, cli.log
        # The startup log names the default origin.
        assert f"allowing {DEFAULT_ORIGINS} (the default)" in cli.log, cli.log
        # Jupyter stopped, and stopped its kernel itself: nothing was left for us to stop.
        assert not cli.jupyter.is_running()
        assert not kernel.is_running()
        assert "left running" not in cli.log


async def stop_cleanly(cli: Cli) -> None:
    cli.process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        await cli.process.wait()
    assert cli.process.returncode == 0, cli.log


async def test_the_screen_ends_with_the_url_the_verdict_and_how_to_stop() -> None:
    async with running_cli(log_level=None) as cli:
        lines = cli.stdout.splitlines()
        assert lines[-3:] == [
            f"    {cli.base}/?token={cli.token}",
            "Colab can connect: direct flow ok, old tunnel ok",
            "Press Ctrl-C to stop.",
        ]
        # Jupyter's own lines (its "is running at" URL is not the one to paste) and each
        # request, the self-check's among them, are in the log file the start lines name.
        log = await trio.Path(cli.log_file).read_text()
        assert "Jupyter Server" in log
        assert "is running at" in log
        assert "trio_httpws.access: http OPTIONS /api/sessions 204" in log
        assert cli.token not in log
        response = await http_request(cli.base, "GET", "/api/status")
        assert response.status == 403  # no token: Jupyter's answer, through the proxy
        await wait_until(lambda: "GET /api/status 403" in cli.log_file.read_text())
        await stop_cleanly(cli)
        assert "received SIGTERM; shutting down" in await trio.Path(cli.log_file).read_text()
    # The screen showed the start lines and nothing else: no warning, no error, no request.
    assert cli.log == ""
    assert cli.later == b""


async def test_log_level_info_shows_each_request_on_the_screen() -> None:
    async with running_cli(log_level="info") as cli:
        assert cli.stdout.splitlines()[-1] == "Press Ctrl-C to stop."
        await http_request(cli.base, "GET", "/api/status")
        await cli.wait_for_log("trio_httpws.access: http GET /api/status 403")
        # Jupyter's own log still goes to the file only.
        assert "is running at" not in cli.log
        assert "is running at" in await trio.Path(cli.log_file).read_text()
        await stop_cleanly(cli)


async def test_the_json_access_log_on_stdout_for_collectors() -> None:
    async with running_cli("--access-log-stdout", "--log-format", "json", log_level=None) as cli:
        await http_request(cli.base, "GET", "/api/status")
        await wait_until(lambda: b"/api/status" in cli.later, within=15)
        await stop_cleanly(cli)
    # After the start lines, stdout holds one JSON object per request (the self-check's last
    # sockets may end after the start lines), and nothing else.
    entries = [json.loads(line) for line in cli.later.decode().splitlines()]
    assert {e["logger"] for e in entries} == {"trio_httpws.access"}
    assert [(e["kind"], e["status"]) for e in entries if e["path"] == "/api/status"] == [
        ("http", 403)
    ]
    assert cli.log == ""


async def test_a_second_ctrl_c_while_stopping_still_stops_everything() -> None:
    async with running_cli() as cli:
        cli.process.send_signal(signal.SIGINT)
        # Jupyter takes longer than this to stop: the second one comes while it stops.
        await trio.sleep(0.05)
        cli.process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await cli.process.wait()
        assert cli.process.returncode == 0, cli.log
        assert "received SIGINT again: still stopping the proxy and Jupyter" in cli.log
        assert "Traceback" not in cli.log
        assert not cli.jupyter.is_running()
        assert _processes_with(cli.token) == []


async def test_a_base_url_reaches_the_jupyter_the_command_starts() -> None:
    async with running_cli("--base-url", "/u/a/") as cli:
        lines = cli.stdout.splitlines()
        url = f"{cli.base}/u/a/?token={cli.token}"
        assert f"    {url}" in lines
        assert lines[lines.index(f"    {url}") + 1] == (
            "Colab can connect: direct flow ok, old tunnel ok"
        )
        assert "--ServerApp.base_url=/u/a/" in cli.jupyter.cmdline()
        await stop_cleanly(cli)
        # Jupyter was asked to stop under its base path, and did, kernels and all.
        assert "did not stop" not in cli.log
        assert not cli.jupyter.is_running()


async def test_cli_stops_the_kernels_jupyter_left_behind(tmp_path: Path) -> None:
    async with running_cli(env=orphan_prone_kernelspec(tmp_path)) as cli:
        kernel = await start_kernel(cli, "orphan")
        await cli.wait_for_log(f"Jupyter started process {kernel.pid}")
        # Jupyter dies without stopping its kernel, which lives on on its own.
        cli.jupyter.kill()
        with trio.fail_after(30):
            await cli.process.wait()
        # The proxy in front of a dead Jupyter stops, says why, and stops the kernel.
        assert cli.process.returncode == 1, cli.log
        assert "Jupyter Server exited unexpectedly (code -9)" in cli.log
        assert f"the Jupyter Server left running: pid {kernel.pid}" in cli.log
        assert not kernel.is_running()


async def test_cli_serves_on_the_proxys_own_door_unless_told() -> None:
    async with running_cli() as cli:

        def server_header() -> str | None:
            request = urllib.request.Request(
                f"{cli.base}/api/status", headers={"Authorization": f"token {cli.token}"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.headers["Server"]

        assert await trio.to_thread.run_sync(server_header) == "trio-httpws"
    # serve() defaults to the same door as the command.
    assert inspect.signature(trio_httpws.serve).parameters["server"].default == "trio"


def test_help_names_the_doctor() -> None:
    text = build_parser().format_help()
    assert text.startswith("usage: trio-httpws [options]\n       trio-httpws doctor [options] URL")
    assert "doctor --help`" in " ".join(text.split())  # argparse may wrap at the hyphen


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
    assert config.allow_origins == (COLAB, COLAB_SHORT)
    assert [r.getMessage() for r in caplog.records] == [
        f"no origin given: allowing {DEFAULT_ORIGINS} (the default)"
    ]
    # Config() and trio_httpws:app have the same default.
    assert Config().allow_origins == Config.from_env({}).allow_origins == (COLAB, COLAB_SHORT)


# One sample value per setting, as text, and the Config value it must become.
SAMPLES: dict[str, tuple[str, object]] = {
    "backend": ("http://10.0.0.1:7000", "http://10.0.0.1:7000"),
    "allow_origins": ("https://a.example", ("https://a.example",)),
    "allow_origin_pat": (r"https://.*\.a\.example", r"https://.*\.a\.example"),
    "allow_hosts": ("box.lan", ("box.lan",)),
    "base_url": ("/lab/", "/lab/"),
    "max_message_size": ("1234567", 1234567),
    "max_in_flight": ("7", 7),
    "max_pending_bytes": ("4096", 4096),
    "thread_parse_threshold": ("2048", 2048),
    "write_timeout": ("3", 3.0),
    "pool_timeout": ("4.5", 4.5),
    "auth_timeout": ("6", 6.0),
    "max_connections": ("11", 11),
    "max_idle_connections": ("3", 3),
    "connect_timeout": ("2.5", 2.5),
    "read_timeout": ("42", 42.0),
    "shutdown_timeout": ("0.5", 0.5),
    "backend_ca": ("/etc/ca.pem", "/etc/ca.pem"),
    "ws_compression": ("on", True),  # a switch: the flag alone
    "max_head_size": ("32768", 32768),
    "head_timeout": ("7.5", 7.5),
    "keep_alive_timeout": ("9", 9.0),
    "backlog": ("512", 512),
    "metrics_port": ("9100", 9100),
    "metrics_host": ("::1", "::1"),
}


def test_every_setting_has_a_flag_and_a_variable() -> None:
    # Every Config field a user sets has an entry in the table (the derived ones are not init).
    settable = {f.name for f in dataclasses.fields(Config) if f.init}
    assert {s.name for s in SETTINGS} == settable == set(SAMPLES)
    for setting in SETTINGS:
        raw, expected = SAMPLES[setting.name]
        argv = [setting.flag] if setting.switch else [setting.flag, raw]
        from_flag = config_from_args(build_parser().parse_args(argv), {})
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
