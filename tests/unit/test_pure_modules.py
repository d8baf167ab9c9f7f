"""The sans-IO core stays pure: its modules reach neither trio nor socket, ssl or select.

Read from the source (``tests/support/imports.py``): importing a module of the package would run
``trio_httpws/__init__.py``, which imports trio, so ``sys.modules`` cannot tell.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import trio_httpws

from ..support.imports import FORBIDDEN, imported_modules

PACKAGE = Path(trio_httpws.__file__).parent

#: The pure modules, as paths in the package: a module that holds pure rules is named here.
PURE_MODULES = (
    "_protocol.py",
    "_parts.py",
    "_cors.py",
    "_redirects.py",
    "_frames.py",
    "_outcome.py",
    "_pasted.py",
    "_redact.py",
    "_stats.py",
    "doctor/_seen.py",
    "doctor/_judgement.py",
    "doctor/_report.py",
)


def io_reached(path: Path) -> set[str]:
    return imported_modules(path) & FORBIDDEN


@pytest.mark.parametrize("module", PURE_MODULES)
def test_a_pure_module_reaches_no_io(module: str) -> None:
    path = PACKAGE / module
    assert path.is_file(), f"PURE_MODULES names {module}, which is not in {PACKAGE}"
    assert imported_modules(path), "the walk saw no import at all"
    assert io_reached(path) == set(), f"{module} reaches {sorted(io_reached(path))}"


# -- the walk, on planted packages ------------------------------------------------------------

#: Like trio_httpws's: the package's own __init__.py imports trio.
INIT = "import trio\nserve = None\n"


def plant(root: Path, files: dict[str, str]) -> Path:
    """Package ``pkg`` under ``root`` with ``files`` (path in the package -> source)."""
    package = root / "pkg"
    for name, source in {"__init__.py": INIT, **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return package


def test_a_module_that_imports_only_pure_siblings_passes(tmp_path: Path) -> None:
    package = plant(
        tmp_path,
        {
            "_pure.py": "import json\nfrom ._rules import rule\nfrom . import _more\n",
            "_rules.py": "import re\nrule = 1\n",
            "_more.py": "from pkg._rules import rule\n",
        },
    )
    # The package's __init__.py imports trio, but nothing is taken from it.
    assert {"json", "re"} <= imported_modules(package / "_pure.py")
    assert io_reached(package / "_pure.py") == set()


@pytest.mark.parametrize(
    ("files", "module", "reached"),
    [
        pytest.param({"_pure.py": "import trio\n"}, "_pure.py", {"trio"}, id="direct"),
        pytest.param(
            {"_pure.py": "from ._helper import f\n", "_helper.py": "import socket\nf = 1\n"},
            "_pure.py",
            {"socket"},
            id="relative-import-of-a-module-that-imports-socket",
        ),
        pytest.param(
            {
                "_pure.py": "from . import _a\n",
                "_a.py": "from ._b import g\n",
                "_b.py": "from ssl import SSLContext\ng = 1\n",
            },
            "_pure.py",
            {"ssl"},
            id="two-modules-away",
        ),
        pytest.param(
            {"_pure.py": "from pkg._helper import f\n", "_helper.py": "import select\nf = 1\n"},
            "_pure.py",
            {"select"},
            id="absolute-import-of-the-packages-own-module",
        ),
        pytest.param(
            {"_pure.py": "import pkg._helper\n", "_helper.py": "import socket\n"},
            "_pure.py",
            {"socket"},
            id="import-of-a-submodule",
        ),
        pytest.param(
            {
                "sub/__init__.py": "",
                "sub/_pure.py": "from .._helper import f\n",
                "_helper.py": "import socket\nf = 1\n",
            },
            "sub/_pure.py",
            {"socket"},
            id="from-the-parent-package",
        ),
        pytest.param(
            {
                "_pure.py": "from .sub import _io\n",
                "sub/__init__.py": "",
                "sub/_io.py": "import ssl\n",
            },
            "_pure.py",
            {"ssl"},
            id="a-module-of-a-subpackage",
        ),
        pytest.param({"_pure.py": "from . import serve\n"}, "_pure.py", {"trio"}, id="from-init"),
        pytest.param({"_pure.py": "import pkg\n"}, "_pure.py", {"trio"}, id="the-package-itself"),
        pytest.param(
            {"_pure.py": "def later():\n    import socket\n"}, "_pure.py", {"socket"}, id="lazy"
        ),
        pytest.param(
            {"_pure.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n"},
            "_pure.py",
            {"trio"},
            id="for-types-only",
        ),
    ],
)
def test_a_planted_io_import_is_found(
    tmp_path: Path, files: dict[str, str], module: str, reached: set[str]
) -> None:
    package = plant(tmp_path, files)
    assert io_reached(package / module) == reached


def test_an_import_cycle_ends(tmp_path: Path) -> None:
    package = plant(
        tmp_path,
        {"_a.py": "from ._b import y\nx = 1\n", "_b.py": "from ._a import x\nimport ssl\ny = 2\n"},
    )
    assert io_reached(package / "_a.py") == {"ssl"}
