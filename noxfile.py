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
    session.run("pytest", "-m", "original", "tests/test_compat_original.py", *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "trio_httpws", "tests", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "trio_httpws", "tests", "examples", "noxfile.py")


@nox.session(python="3.12")
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "trio_httpws")
