"""The test command (`nox`) on a machine with one Python, as most newcomers have.

nox runs from a PATH that holds one interpreter only (the one running these tests, under its
`pythonX.Y` name), and the noxfile is asked what it would run (``-l``) and what it says about
the matrix (the ``pythons`` session, which ends every run). Nothing is installed: each call
takes well under a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ["3.10", "3.11", "3.12", "3.13"]
RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHERS = [version for version in MATRIX if version != RUNNING]
REQUIRE_ALL = "TRIO_HTTPWS_REQUIRE_ALL_PYTHONS"


@pytest.fixture
def one_python(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds this interpreter alone, and no CI switch."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / f"python{RUNNING}").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop(REQUIRE_ALL, None)
    return env


def nox(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "nox",
            "--noxfile",
            str(ROOT / "noxfile.py"),
            "--envdir",
            str(tmp_path / "nox-envs"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def selected(env: dict[str, str], tmp_path: Path) -> dict[str, object]:
    """The sessions a plain `nox` would run: name -> the Python it asks for."""
    result = nox(env, tmp_path, "-l", "--json")
    assert result.returncode == 0, result.stderr
    return {s["session"]: s["python"] for s in json.loads(result.stdout)}


def test_one_python_runs_the_tests_on_it_and_the_checks_too(
    one_python: dict[str, str], tmp_path: Path
) -> None:
    sessions = selected(one_python, tmp_path)
    assert sorted(name for name in sessions if name.startswith("tests")) == [f"tests-{RUNNING}"]
    # Lint and types run on the interpreter that runs nox (python None), whichever it is.
    assert sessions["lint"] is None
    assert sessions["typecheck"] is None
    # The run ends by saying what the matrix covered.
    assert list(sessions)[-1] == "pythons"


def test_the_run_says_which_pythons_are_missing(one_python: dict[str, str], tmp_path: Path) -> None:
    result = nox(one_python, tmp_path, "-s", "pythons")
    assert result.returncode == 0, result.stderr
    said = result.stderr
    assert f"Pythons of the matrix found here: {RUNNING}\n" in said, said
    assert f"not installed here: {', '.join(OTHERS)}" in said, said


def test_ci_requires_all_four(one_python: dict[str, str], tmp_path: Path) -> None:
    env = {**one_python, REQUIRE_ALL: "1"}
    sessions = selected(env, tmp_path)
    assert sorted(name for name in sessions if name.startswith("tests")) == [
        f"tests-{version}" for version in MATRIX
    ]
    result = nox(env, tmp_path, "-s", "pythons")
    assert result.returncode != 0
    assert f"not installed here: {', '.join(OTHERS)}" in result.stderr
    assert f"{REQUIRE_ALL}=1" in result.stderr
