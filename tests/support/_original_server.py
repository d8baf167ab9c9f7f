"""Start a Notebook 6 server with the ORIGINAL jupyter_http_over_ws extension, for compat tests.

Only the ``compat`` nox session (Python 3.11, ``jupyter_http_over_ws==0.0.8``, ``notebook<7``,
``tornado<6.5``) has what this needs; :data:`AVAILABLE` says whether this interpreter does.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from trio_httpws._jupyter import free_port


def _import_error() -> str | None:
    """Why the extension (which imports Notebook 6 and distutils) cannot be imported, if so."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # distutils and Notebook 6 deprecation noise
            importlib.import_module("jupyter_http_over_ws")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


_IMPORT_ERROR = _import_error()

#: The extension, and the Notebook 6 server it plugs into, can be imported here.
AVAILABLE = _IMPORT_ERROR is None

SKIP_REASON = (
    f"the original jupyter_http_over_ws 0.0.8 cannot be imported ({_IMPORT_ERROR}); it needs "
    "Python <= 3.11, Notebook 6 and tornado < 6.5: run `nox -s compat` to test against it"
)

STARTUP_TIMEOUT = 90.0


@dataclass(frozen=True)
class OriginalServer:
    """A running Notebook 6 server with the original extension enabled."""

    #: ``http://127.0.0.1:PORT``
    url: str
    token: str
    root_dir: str

    @property
    def auth_url(self) -> str:
        """The URL a user pastes into Colab: it logs in with the token and sets the cookies."""
        return f"{self.url}/?token={self.token}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def original_server() -> Iterator[OriginalServer]:
    """Run ``python -m notebook`` (this interpreter) with the extension; stop it on exit.

    Jupyter's config, data and runtime directories point into a temporary directory, so neither
    the user's configuration nor a running server interferes.
    """
    port = free_port()
    token = "compat-" + os.urandom(8).hex()
    with tempfile.TemporaryDirectory(prefix="trio-httpws-compat-") as tmp:
        root = os.path.join(tmp, "notebooks")
        os.mkdir(root)
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=os.path.join(tmp, "config"),
            JUPYTER_DATA_DIR=os.path.join(tmp, "data"),
            JUPYTER_RUNTIME_DIR=os.path.join(tmp, "runtime"),
            IPYTHONDIR=os.path.join(tmp, "ipython"),
        )
        command = [
            sys.executable,
            "-m",
            "notebook",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--port-retries=0",
            # CI containers often run as root, which Notebook 6 refuses without this.
            "--allow-root",
            f"--NotebookApp.token={token}",
            "--NotebookApp.allow_origin=*",
            f"--NotebookApp.notebook_dir={root}",
            "--NotebookApp.nbserver_extensions={'jupyter_http_over_ws': True}",
        ]
        log_path = os.path.join(tmp, "notebook.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            # /api answers without authentication once the server listens.
            while not _answers(f"http://127.0.0.1:{port}/api"):
                if process.poll() is not None or time.monotonic() > deadline:
                    with open(log_path, encoding="utf-8", errors="replace") as f:
                        tail = f.read()[-3000:]
                    raise RuntimeError(f"Notebook 6 server did not start:\n{tail}")
                time.sleep(0.1)
            yield OriginalServer(f"http://127.0.0.1:{port}", token, root)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
