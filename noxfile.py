"""Test matrix, lint, types, benchmark and soak sessions. `nox` runs the default ones."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "compat", "lint", "typecheck"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite against a real hypercorn and a real Jupyter Server 2."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def compat(session: nox.Session) -> None:
    """Our client against the original jupyter_http_over_ws 0.0.8 (it needs Python 3.11, Notebook 6)."""
    session.install("-e", ".[test]")
    session.install("jupyter_http_over_ws==0.0.8", "notebook<7", "tornado<6.5")
    session.run("pytest", "-m", "original", "tests/e2e/test_compat_original.py", *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "trio_httpws", "tests", "bench", "examples", "noxfile.py")
    session.run(
        "ruff", "format", "--check", "trio_httpws", "tests", "bench", "examples", "noxfile.py"
    )


@nox.session(python="3.12")
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy", "types-psutil")
    # Only Linux runs the tests here: the other platforms' branches are at least type-checked.
    for platform in ("linux", "darwin", "win32"):
        session.run("mypy", "--strict", "--platform", platform, "trio_httpws")


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
    import shutil
    from pathlib import Path

    session.install("-e", ".")
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
