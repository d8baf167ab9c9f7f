"""Test matrix, lint, types, benchmark and soak sessions. `nox` runs the default ones.

The tests run on each Python of the matrix that is installed; lint and types run on the Python
that runs nox; the `pythons` session ends the run by saying which Pythons the tests ran on and
which are missing. CI sets TRIO_HTTPWS_REQUIRE_ALL_PYTHONS=1, which makes a missing one an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "compat", "lint", "typecheck", "pythons"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
REQUIRE_ALL = os.environ.get("TRIO_HTTPWS_REQUIRE_ALL_PYTHONS") == "1"


def _installed(version: str) -> bool:
    """Whether ``pythonX.Y`` runs here: the running interpreter, or one on PATH that answers
    with that version (a pyenv shim for a version not selected is on PATH but does not run)."""
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return True
    found = shutil.which(f"python{version}")
    if found is None:
        return False
    try:
        answer = subprocess.run(
            [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return answer.returncode == 0 and answer.stdout.strip() == version


INSTALLED = [version for version in PYTHONS if _installed(version)]
MISSING = [version for version in PYTHONS if version not in INSTALLED]
if REQUIRE_ALL:
    # Every Python is a session, and one that cannot be found fails instead of being skipped.
    nox.options.error_on_missing_interpreters = True
    nox.options.download_python = "never"

#: What each tests session of this run came to (nox runs sessions one after another in this
#: process, so the `pythons` session at the end reads it).
TESTED: dict[str, str] = {}


@nox.session(python=PYTHONS if REQUIRE_ALL else INSTALLED)
def tests(session: nox.Session) -> None:
    """The whole test suite against a real hypercorn and a real Jupyter Server 2."""
    session.notify("pythons")
    version = str(session.python)
    TESTED[version] = "failed"
    session.install("-e", ".[test]")
    # Every hypothesis fuzzer at its full count (a bare pytest runs a third: tests/support/fuzz.py).
    session.run("pytest", *session.posargs, env={"TRIO_HTTPWS_FUZZ": "thorough"})
    TESTED[version] = "passed"


@nox.session(python="3.11")
def compat(session: nox.Session) -> None:
    """Our client against the original jupyter_http_over_ws 0.0.8 (it needs Python 3.11, Notebook 6)."""
    session.install("-e", ".[test]")
    session.install("jupyter_http_over_ws==0.0.8", "notebook<7", "tornado<6.5")
    session.run("pytest", "-m", "original", "tests/e2e/test_compat_original.py", *session.posargs)


@nox.session(python=None)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check, on the Python that runs nox."""
    session.install("ruff")
    session.run("ruff", "check", "trio_httpws", "tests", "bench", "examples", "noxfile.py")
    session.run(
        "ruff", "format", "--check", "trio_httpws", "tests", "bench", "examples", "noxfile.py"
    )


@nox.session(python=None)
def typecheck(session: nox.Session) -> None:
    """mypy --strict for Linux, macOS and Windows, on the Python that runs nox."""
    session.install("-e", ".[test]", "mypy", "types-psutil")
    # Only Linux runs the tests here: the other platforms' branches are at least type-checked.
    for platform in ("linux", "darwin", "win32"):
        session.run("mypy", "--strict", "--platform", platform, "trio_httpws")


@nox.session(python=False)
def pythons(session: nox.Session) -> None:
    """Which Pythons the tests ran on in this run, and which of the matrix are missing."""
    if TESTED:
        ran = ", ".join(f"{version} ({result})" for version, result in sorted(TESTED.items()))
        session.log(f"tests ran on Python {ran}")
    else:
        session.log("no tests session ran in this nox run")
    if INSTALLED:
        session.log(f"Pythons of the matrix found here: {', '.join(INSTALLED)}")
    if "3.11" not in INSTALLED:
        session.log("compat needs Python 3.11 (the original extension runs on no other)")
    if not MISSING:
        return
    session.log(
        f"not installed here: {', '.join(MISSING)}; the tests did not run on "
        f"{'it' if len(MISSING) == 1 else 'them'} (CI runs all of {', '.join(PYTHONS)})"
    )
    if REQUIRE_ALL:
        session.error("TRIO_HTTPWS_REQUIRE_ALL_PYTHONS=1: every Python of the matrix is required")
    if not INSTALLED:
        session.error(f"none of Python {', '.join(PYTHONS)} is installed: the tests did not run")


@nox.session(python=None)
def build(session: nox.Session) -> None:
    """The wheel and the sdist into dist/ (`python -m build`), checked by `twine check --strict`
    (not default: the default `tests` check what they contain, in tests/e2e/test_packaging.py)."""
    from pathlib import Path

    session.install("build", "twine")
    dist = Path("dist")
    for old in dist.glob("trio_httpws-*"):
        old.unlink()
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *sorted(str(p) for p in dist.glob("trio_httpws-*")))


@nox.session(python="3.12")
def soak(session: nox.Session) -> None:
    """200 sockets x 10 requests in flight for 60 s through the proxy to Jupyter (not default).

    Checks that no response is lost or mis-tagged and that the proxy's RSS and open fds stay flat
    after the warm-up; prints them. Options go after ``--``, e.g. ``nox -s soak -- --duration
    300``; ``python -m bench.soak --help`` lists them.
    """
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench.soak", *session.posargs)


@nox.session(python="3.12")
def bench(session: nox.Session) -> None:
    """The benchmark (bench/): trio_httpws under hypercorn and on its own door vs the
    original extension, configurable-http-proxy, nginx, a bare trio splice and direct.

    The original (jupyter_http_over_ws 0.0.8) only installs on Python 3.11 with Notebook 6, so it
    gets a venv of its own, .nox/bench-original, which is also the benchmark's backend server.
    configurable-http-proxy 4 is installed with npm into .nox/bench-peers (node must be on
    PATH); nginx is Debian's nginx-light, installed by hand (`apt-get install -y nginx-light`).
    A peer that is missing gets cells that say so; the rest still runs.
    Arguments after `--` go to bench/run.py (e.g. `nox -s bench -- --quick --runs 3`).
    """
    from pathlib import Path

    session.install("-e", ".[metrics]")  # --metrics runs the door with its metrics listener
    original = Path(".nox") / "bench-original"
    python = original / "bin" / "python"
    if not python.exists():
        interpreter = shutil.which("python3.11")
        if interpreter is None:
            session.error("the original extension needs Python 3.11 (python3.11 on PATH)")
        session.run(interpreter, "-m", "venv", "--clear", str(original), external=True)
    session.run(
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "jupyter_http_over_ws==0.0.8",
        "notebook<7",
        "tornado<6.5",
        "ipykernel",  # the kernel of scenario 9 (notebook 6 pulls it in too; said here)
        external=True,
    )
    peers = Path(".nox") / "bench-peers"
    chp = peers / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
    if not chp.exists():
        if shutil.which("npm") is None:
            session.warn("npm is not on PATH: the configurable-http-proxy seat will fail")
        else:
            peers.mkdir(parents=True, exist_ok=True)
            session.run(
                "npm",
                "install",
                "--prefix",
                str(peers),
                "--no-audit",
                "--no-fund",
                "configurable-http-proxy@4",
                external=True,
            )
    if shutil.which("nginx") is None and shutil.which("nginx", path="/usr/sbin:/sbin") is None:
        session.warn(
            "nginx is missing (as root: apt-get install -y nginx-light): its seat will fail"
        )
    session.run(
        "python",
        "bench/run.py",
        "--original-python",
        str(python.absolute()),
        "--chp",
        str(chp.absolute()),
        *session.posargs,
    )
