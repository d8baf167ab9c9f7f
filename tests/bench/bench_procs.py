"""The benchmark's processes: the Notebook 6 backend, hypercorn serving trio_httpws, RSS probes."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from trio_httpws._jupyter import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
START_TIMEOUT = 90.0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-size:]
    except OSError:
        return "(no log)"


@dataclass
class Process:
    """A child process started in its own session, with its output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    base: str  # http://127.0.0.1:PORT

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, probe_path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.base + probe_path):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{_tail(self.log)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.popen.poll() is None:
            # Its own session: signal the whole group (hypercorn's worker, a kernel if any).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()

    def rss_bytes(self) -> int:
        """VmRSS of this process and all its descendants (hypercorn runs its app in a child)."""
        return tree_rss(self.popen.pid)


def _spawn(name: str, command: list[str], env: dict[str, str], cwd: Path, base: str) -> Process:
    log = cwd / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return Process(name, popen, log, base)


def start_notebook(original_python: str, token: str, workdir: Path) -> Process:
    """Notebook 6 with the original extension and ``bench_ext``, isolated from user config."""
    port = free_port()
    root = workdir / "notebooks"
    root.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(workdir / "config"),
        JUPYTER_DATA_DIR=str(workdir / "data"),
        JUPYTER_RUNTIME_DIR=str(workdir / "runtime"),
        IPYTHONDIR=str(workdir / "ipython"),
        PYTHONPATH=str(HERE),
        PYTHONWARNINGS="ignore",
    )
    command = [
        original_python,
        "-m",
        "notebook",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        "--allow-root",
        f"--NotebookApp.token={token}",
        "--NotebookApp.allow_origin=*",
        f"--NotebookApp.notebook_dir={root}",
        "--NotebookApp.nbserver_extensions={'jupyter_http_over_ws': True, 'bench_ext': True}",
    ]
    proc = _spawn("notebook", command, env, workdir, f"http://127.0.0.1:{port}")
    proc.wait_ready("/api")
    return proc


#: What the "hypercorn alone" target serves: hypercorn imports a module from a file path.
EMPTY_APP = f"{HERE / 'empty_app.py'}:app"


def start_proxy(
    backend: str, workdir: Path, app: str = "trio_httpws:app", name: str = "hypercorn"
) -> Process:
    """``python -m hypercorn --worker-class trio trio_httpws:app`` in front of ``backend``.

    ``name``: of its log in ``workdir``, so that a second hypercorn (the empty app) has its own.
    """
    port = free_port()
    env = dict(os.environ)
    env.update(TRIO_HTTPWS_BACKEND=backend, TRIO_HTTPWS_ALLOW_ORIGIN="*")
    # hypercorn's own limit is 16 MiB; scenario 7 sends a 53 MiB message (trio_httpws's 64 MiB
    # default, as the trio-httpws command and trio_httpws.serve set it).
    config = workdir / "hypercorn.toml"
    config.write_text(f"websocket_max_message_size = {64 * 1024 * 1024}\n")
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--config",
        str(config),
        "--worker-class",
        "trio",
        app,
        "--bind",
        f"127.0.0.1:{port}",
    ]
    proc = _spawn(name, command, env, workdir, f"http://127.0.0.1:{port}")
    # /api answers without authentication; through the proxy it proves the whole path works.
    proc.wait_ready("/api")
    return proc


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        total += rss_of(current)
        todo.extend(_children(current))
    return total


def raise_fd_limit(wanted: int = 65536) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run_text(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def check_original(original_python: str) -> None:
    """Fail early, and say why, when ``original_python`` cannot run the original extension."""
    try:
        subprocess.run(
            [original_python, "-W", "ignore", "-c", "import notebook, jupyter_http_over_ws"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise SystemExit(
            f"{original_python} cannot import Notebook 6 and jupyter_http_over_ws 0.0.8 "
            f"(run the benchmark through `nox -s bench`, which installs them):\n{detail[-2000:]}"
        ) from None


def machine_info(original_python: str) -> dict[str, str]:
    from importlib.metadata import version

    original = _run_text(
        [
            original_python,
            "-c",
            "import sys, importlib.metadata as m; print(sys.version.split()[0], "
            "*(m.version(p) for p in ('jupyter_http_over_ws', 'notebook', 'tornado')))",
        ]
    ).split()
    if len(original) != 4:
        original = ["unknown"] * 4
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "driver_python": sys.version.split()[0],
        "trio_httpws": version("trio_httpws"),
        "hypercorn": version("hypercorn"),
        "trio": version("trio"),
        "trio_websocket": version("trio-websocket"),
        "original_python": original[0],
        "jupyter_http_over_ws": original[1],
        "notebook": original[2],
        "tornado (backend)": original[3],
    }
