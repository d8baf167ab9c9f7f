"""Which tests pytest collects, asked of pytest itself, in this process."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest

#: A pytest node id of this suite written as inline code in Markdown: `tests/...py::name[...]`.
NODE_ID = re.compile(r"`(tests/[^`\s]+?\.py::[^`]+)`")


def named_node_ids(markdown: str) -> list[str]:
    """Every node id written in backticks in ``markdown``, in order."""
    return NODE_ID.findall(markdown)


def not_collected(named: Iterable[str], collected: set[str]) -> list[str]:
    """The ``named`` node ids that match no ``collected`` one. A name without ``[params]``
    matches each parametrization of it, and a class or module matches the tests in it."""
    return [
        name
        for name in named
        if name not in collected
        and not any(c.startswith((f"{name}[", f"{name}::")) for c in collected)
    ]


class _Collected:
    def __init__(self) -> None:
        self.node_ids: set[str] = set()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.node_ids = {item.nodeid for item in session.items}


def collected_node_ids(root: Path, files: Iterable[str]) -> set[str]:
    """The node ids pytest collects from ``files`` (paths under ``root``); a file that does
    not exist yields none. In-process (pytest.main), since a second interpreter would cost
    more than the collection itself."""
    existing = sorted({f for f in files if (root / f).is_file()})
    if not existing:
        return set()
    collector = _Collected()
    args = ["--collect-only", "-qq", "-p", "no:cacheprovider", f"--rootdir={root}"]
    args += ["-c", str(root / "pyproject.toml"), *(str(root / f) for f in existing)]
    code = pytest.main(args, plugins=[collector])
    assert code == pytest.ExitCode.OK, f"collecting {existing} ended with {code!r}"
    return collector.node_ids
