"""The wheel and the sdist as users meet them: license, metadata, and the install advice.

Both are built by the project's build backend (hatchling, as `python -m build` would, without
its isolated environment) into a temporary directory and read back.
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import trio_httpws

ROOT = Path(__file__).resolve().parents[2]
NAME = f"trio_httpws-{trio_httpws.__version__}"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hatchling.build import build_sdist, build_wheel;"
            "build_wheel(sys.argv[1]); build_sdist(sys.argv[1])",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def test_the_license_file_is_apache_2_and_ships_in_the_wheel_and_the_sdist(dist: Path) -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    with zipfile.ZipFile(dist / f"{NAME}-py3-none-any.whl") as wheel:
        assert wheel.read(f"{NAME}.dist-info/licenses/LICENSE").decode() == text
    with tarfile.open(dist / f"{NAME}.tar.gz") as sdist:
        member = sdist.extractfile(f"{NAME}/LICENSE")
        assert member is not None
        assert member.read().decode() == text


def test_the_metadata_names_the_license_pythons_and_systems(dist: Path) -> None:
    with zipfile.ZipFile(dist / f"{NAME}-py3-none-any.whl") as wheel:
        raw = wheel.read(f"{NAME}.dist-info/METADATA").decode()
    metadata = email.parser.Parser().parsestr(raw)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    classifiers = metadata.get_all("Classifier") or []
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert [c for c in classifiers if c.startswith("Operating System ::")] == [
        "Operating System :: MacOS",
        "Operating System :: Microsoft :: Windows",
        "Operating System :: POSIX :: Linux",
    ]


def test_without_jupyter_the_cli_says_how_to_install_it(tmp_path: Path) -> None:
    # A jupyter_server that cannot be imported, first on the path.
    blocker = tmp_path / "jupyter_server"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('not installed here')\n")
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "trio_httpws", "--port", "0", "--log-file", str(tmp_path / "log")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    # What works today: the package is not on the package index.
    assert "pip install 'trio_httpws[jupyter]'" not in message
    assert "pip install -e '.[jupyter]'" in message
    assert f"'{NAME}-py3-none-any.whl[jupyter]'" in message
    assert "or pass --backend URL" in message


def test_the_long_description_opens_with_what_it_is_not_a_clone_install(dist: Path) -> None:
    with zipfile.ZipFile(dist / f"{NAME}-py3-none-any.whl") as wheel:
        raw = wheel.read(f"{NAME}.dist-info/METADATA").decode()
    metadata = email.parser.Parser().parsestr(raw)
    assert metadata["Description-Content-Type"] == "text/markdown"
    body = str(metadata.get_payload())
    opening = body.split("## Use", 1)[0]
    assert "Colab" in opening
    assert "pip install" not in body.split("\n\n## ", 1)[0]
    # Nothing in it needs a clone to work.
    assert "pip install '." not in body
    assert "pip install -e" not in body
    with tarfile.open(dist / f"{NAME}.tar.gz") as sdist:
        names = sdist.getnames()
    assert f"{NAME}/docs/package-description.md" in names
    assert f"{NAME}/docs/configuration.md" in names
