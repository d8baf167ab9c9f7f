"""The benchmark's processes: the Notebook 6 backend, the seats in front of it (hypercorn
serving trio_httpws, the trio-httpws command's own door, configurable-http-proxy, nginx, a bare
trio splice), RSS probes."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from trio_httpws._jupyter import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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
    #: RSS of the children only: nginx's master never touches a connection, its worker does.
    workers_only: bool = False
    #: Its metrics listener (http://127.0.0.1:PORT), when it serves one.
    metrics: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, probe_path: str | None) -> None:
        """Until ``probe_path`` answers 200 (None: until the port accepts a connection)."""
        deadline = time.monotonic() + START_TIMEOUT
        ready = partial(_answers, self.base + probe_path) if probe_path else self._accepts
        while not ready():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{_tail(self.log)}")
            time.sleep(0.1)

    def _accepts(self) -> bool:
        host, _, port = urlsplit(self.base).netloc.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            return False

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
        """VmRSS of this process and all its descendants (hypercorn runs its app in a child),
        or of its descendants only (``workers_only``)."""
        if self.workers_only:
            return sum(tree_rss(child) for child in _children(self.popen.pid))
        return tree_rss(self.popen.pid)


def _spawn(
    name: str,
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    base: str,
    *,
    workers_only: bool = False,
) -> Process:
    # A file, never a pipe: a pipe nobody reads would stall a seat that logs every request.
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
    return Process(name, popen, log, base, workers_only)


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


def start_door(backend: str, workdir: Path, server: str, *, metrics: bool = False) -> Process:
    """The ``trio-httpws`` command (``python -m trio_httpws``) with its default logging (an
    access line per request to its log file, here in ``workdir``), serving on its own door.

    ``server``: the value of ``--server`` (empty: the flag left out, the command's default).
    ``metrics``: with ``--metrics-port`` (the listener's URL is the process's ``metrics``).
    Ready once the port accepts: the probe of the other seats is plain HTTP, which a door that
    serves WebSockets only would never answer.
    """
    port = free_port()
    metrics_port = free_port() if metrics else 0
    extra = ["--metrics-port", str(metrics_port)] if metrics else []
    command = [sys.executable, "-m", "trio_httpws", "--backend", backend,
               "--host", "127.0.0.1", "--port", str(port),
               *(["--server", server] if server else []), "--allow-origin", "*",
               "--log-file", str(workdir / "door-full.log"), *extra]  # fmt: skip
    name = "door-metrics" if metrics else "door"
    proc = _spawn(name, command, dict(os.environ), workdir, f"http://127.0.0.1:{port}")
    proc.wait_ready(None)
    if metrics:
        proc.metrics = f"http://127.0.0.1:{metrics_port}"
        if not _answers(proc.metrics + "/metrics"):
            proc.stop()
            raise RuntimeError(f"{name} did not start:\nits metrics port does not answer")
    return proc


#: Where ``nox -s bench`` installs configurable-http-proxy (npm, no global install).
CHP_DEFAULT = REPO / ".nox/bench-peers/node_modules/configurable-http-proxy/bin"
CHP_DEFAULT = CHP_DEFAULT / "configurable-http-proxy"


def start_chp(chp: str, backend: str, workdir: Path) -> Process:
    """configurable-http-proxy (JupyterHub's) at its default log level (info: no line per
    request), every path to ``backend``; run by node directly, so its pid is node's."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("configurable-http-proxy did not start:\nnode is not on PATH")
    if not Path(chp).exists():
        raise RuntimeError(
            f"configurable-http-proxy did not start:\n{chp} is missing (nox -s bench installs it)"
        )
    port, api_port = free_port(), free_port()
    env = dict(os.environ)
    # Without a token it makes one up and warns; the API port is never used by the bench.
    env["CONFIGPROXY_AUTH_TOKEN"] = secrets.token_hex(16)
    command = [node, chp, "--default-target", backend, "--ip", "127.0.0.1", "--port", str(port),
               "--api-ip", "127.0.0.1", "--api-port", str(api_port)]  # fmt: skip
    proc = _spawn("chp", command, env, workdir, f"http://127.0.0.1:{port}")
    proc.wait_ready("/api")
    return proc


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{
    worker_connections 8192;
}}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # A WebSocket upgrade passes Connection: upgrade on; anything else gets Connection ""
    # so that the upstream connection stays kept alive.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}
    upstream backend {{
        server {backend};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """nginx on PATH, or where Debian puts it (/usr/sbin, often off a user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def start_nginx(backend: str, workdir: Path) -> Process:
    """nginx (Debian's nginx-light) as a Jupyter reverse proxy runs: 1 worker in the
    foreground, HTTP/1.1 keep-alive to the upstream, no buffering; logs in its prefix."""
    nginx = nginx_binary()
    if nginx is None:
        raise RuntimeError(
            "nginx did not start:\nnginx is missing (apt-get install -y nginx-light)"
        )
    port = free_port()
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, backend=urlsplit(backend).netloc))
    command = [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf),
               "-g", "daemon off;"]  # fmt: skip
    proc = _spawn("nginx", command, dict(os.environ), workdir, f"http://127.0.0.1:{port}",
                  workers_only=True)  # fmt: skip
    proc.wait_ready("/api")
    return proc


SPLICE = HERE / "bare_splice.py"


def start_splice(backend: str, workdir: Path) -> Process:
    """``bare_splice.py``: a trio TCP splice in front of ``backend``."""
    port = free_port()
    command = [sys.executable, str(SPLICE), "--backend", urlsplit(backend).netloc,
               "--port", str(port)]  # fmt: skip
    proc = _spawn("splice", command, dict(os.environ), workdir, f"http://127.0.0.1:{port}")
    proc.wait_ready("/api")
    return proc


def peer_versions(chp: str) -> dict[str, str]:
    """The versions of node, configurable-http-proxy and nginx, for the machine section."""
    versions = {"node": _run_text(["node", "--version"]) or "missing"}
    try:
        package = Path(chp).resolve().parent.parent / "package.json"
        versions["configurable_http_proxy"] = str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        versions["configurable_http_proxy"] = "missing"
    nginx = nginx_binary()
    if nginx is None:
        versions["nginx"] = "missing"
    else:
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
        versions["nginx"] = (out.stderr or out.stdout).strip().rpartition("/")[2] or "unknown"
    return versions


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
