"""The suite's own rule: every test that serves a proxy runs on every door."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import trio_httpws

from ..support.collection import collected_node_ids
from ..support.door_rule import ONE_DOOR, one_door_reason, serves_a_proxy
from ..support.proxies import DOORS, running_proxy


async def _planted_single_door_test(fake_backend: Any) -> None:
    async with running_proxy(trio_httpws.Config(backend=fake_backend.url)):
        pass


async def _planted_pure_test() -> None:
    assert trio_httpws.Config().max_head_size > 0


def test_a_test_serving_a_proxy_is_recognised() -> None:
    planted = SimpleNamespace(function=_planted_single_door_test)
    pure = SimpleNamespace(function=_planted_pure_test)
    assert serves_a_proxy(planted)  # type: ignore[arg-type]
    assert not serves_a_proxy(pure)  # type: ignore[arg-type]
    assert one_door_reason("tests/proxy/test_x.py::_planted_single_door_test") is None
    assert (
        one_door_reason("tests/proxy/test_splice.py::test_anything")
        == ONE_DOOR["tests/proxy/test_splice.py::"]
    )


def test_every_collected_test_that_serves_a_proxy_runs_on_every_door(
    request: pytest.FixtureRequest,
) -> None:
    items = request.session.items
    unexplained = [i.nodeid for i in items if ("door", "missing") in i.user_properties]
    assert unexplained == []


def test_both_doors_run_the_same_io_tests() -> None:
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    per_door = {
        door: {
            line.replace(f"[{door}]", "[]").replace(f"[{door}-", "[").replace(f"-{door}]", "]")
            for line in collected
            if f"[{door}]" in line or f"[{door}-" in line or f"-{door}]" in line
        }
        for door in DOORS
    }
    assert per_door["hypercorn"] == per_door["trio"]
    assert len(per_door["trio"]) > 250


def test_every_one_door_entry_names_collected_tests() -> None:
    """An entry left behind (its test renamed, moved or gone) would excuse whatever next takes
    its name."""
    root = Path(__file__).parents[2]
    collected = collected_node_ids(root, {prefix.split("::")[0] for prefix in ONE_DOOR})
    stale = [p for p in ONE_DOOR if not any(node_id.startswith(p) for node_id in collected)]
    assert stale == []
