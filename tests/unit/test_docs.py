"""What the documentation promises about itself is checked: the README's length, and that each
guarantee in docs/guarantees.md names a test that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support.collection import collected_node_ids, named_node_ids, not_collected

ROOT = Path(__file__).resolve().parents[2]
README_LINES = 200
GUARANTEES = ROOT / "docs" / "guarantees.md"


def test_the_readme_is_short() -> None:
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_LINES, f"README.md has {lines} lines: the rest belongs in docs/"


def test_every_test_named_in_the_guarantees_is_collected() -> None:
    if not GUARANTEES.is_file():
        pytest.fail(
            f"{GUARANTEES.relative_to(ROOT)} is missing: it names the test behind each guarantee"
        )
    named = named_node_ids(GUARANTEES.read_text())
    assert named, "docs/guarantees.md names no test (`tests/...py::test_name` in backticks)"
    collected = collected_node_ids(ROOT, {name.split("::")[0] for name in named})
    missing = not_collected(named, collected)
    assert missing == [], f"docs/guarantees.md names tests that are not collected: {missing}"


# -- the check itself ---------------------------------------------------------------------------


def test_node_ids_are_read_from_backticks_only() -> None:
    markdown = (
        "- Refused with 400 (`tests/proxy/test_hostile_input.py::test_non_json[hypercorn]`,\n"
        "  `tests/unit/test_protocol.py::test_parse_client_message_never_raises`).\n"
        "- Not a node id: tests/unit/test_cors.py::test_x, `tests/unit/test_cors.py`, `trio`.\n"
        "- A class: `tests/unit/test_x.py::TestY::test_z[a b-1]`.\n"
    )
    assert named_node_ids(markdown) == [
        "tests/proxy/test_hostile_input.py::test_non_json[hypercorn]",
        "tests/unit/test_protocol.py::test_parse_client_message_never_raises",
        "tests/unit/test_x.py::TestY::test_z[a b-1]",
    ]


def test_a_name_without_parameters_matches_each_parametrization() -> None:
    collected = {"tests/a.py::test_x[1]", "tests/a.py::test_x[2]", "tests/a.py::K::test_y"}
    named = ["tests/a.py::test_x", "tests/a.py::test_x[2]", "tests/a.py::K"]
    missing = not_collected(named, collected)
    assert missing == [], f"docs/guarantees.md names tests that are not collected: {missing}"


def test_a_name_that_is_not_collected_is_reported() -> None:
    collected = {"tests/a.py::test_x[1]", "tests/a.py::test_xy"}
    named = [
        "tests/a.py::test_x[3]",
        "tests/a.py::test_",
        "tests/b.py::test_x",
        "tests/a.py::test_x",
    ]
    assert not_collected(named, collected) == named[:3]


def test_the_collection_is_pytests_own() -> None:
    here = Path(__file__).resolve().relative_to(ROOT).as_posix()
    collected = collected_node_ids(ROOT, [here, "tests/unit/no_such_file.py"])
    assert f"{here}::test_the_collection_is_pytests_own" in collected
    assert f"{here}::test_the_readme_is_short" in collected
    assert all(node_id.startswith(f"{here}::") for node_id in collected)
