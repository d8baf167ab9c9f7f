"""Every test that serves a proxy runs on every door.

A test that starts a proxy (through a fixture or by itself) takes the ``door`` fixture and so
runs on each door; one that cannot (it tests one door's own machinery) is named in ``ONE_DOOR``
with the reason. A test that does neither fails: tests/conftest.py replaces it at collection
with one that says so, so a new test cannot quietly cover one door only.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable

import pytest

from .proxies import DOORS

#: What a test's own code calls to serve a proxy.
SERVES_A_PROXY = re.compile(
    r"\b(running_proxy|running_handler_proxy|running_stub_door|splice_server|running_cli|serve_door"
    r"|create_app|TrioHttpWsApp|hypercorn_serve|trio_httpws\.(?:serve|handler)|Door)\b"
)


#: Tests that serve one door only, by design: node id prefix -> why.
ONE_DOOR: dict[str, str] = {
    "tests/proxy/test_hypercorn_fix.py::": "hypercorn's own WebSocket stream, which only that door has",
    "tests/proxy/test_wsserver.py::": "the wsproto adapter of the proxy's own door, on a stand-in door",
    "tests/proxy/test_splice.py::": "the byte splice of the proxy's own door, on a stand-in door",
    "tests/proxy/test_doors_differential.py::": "both doors side by side in one test",
    "tests/proxy/test_door.py::test_a_head_that_never_ends": "head_timeout is the proxy's door's own",
    "tests/proxy/test_door.py::test_a_pipelining_client": "the read-ahead bound of the door's reader",
    "tests/proxy/test_door.py::test_an_h2c_upgrade": "hypercorn takes h2c itself (docs/front-door.md)",
    "tests/proxy/test_door.py::test_an_hour_silent": "an in-run backend on the mock clock; the door's",
    "tests/proxy/test_door.py::test_out_of_descriptors": "the door's accept loop, with a failing listener",
    "tests/proxy/test_door.py::test_a_malformed_head_is_logged": "hypercorn answers such heads itself",
    "tests/proxy/test_tls.py::test_a_tls_handshake_that_never_comes": "head_timeout is the door's own",
    "tests/proxy/test_colab_flow.py::test_a_send_to_a_closing_connection": "an ASGI send that raises",
    "tests/proxy/test_deadlines.py::test_large_message_through_hypercorn": (
        "hypercorn's parts; the door's are in test_wsserver.py"
    ),
    "tests/proxy/test_hostile_input.py::test_text_frame_with_invalid_utf8_under_handler": (
        "the trio-websocket handler(), a door of its own"
    ),
    "tests/proxy/test_colab_flow.py::test_handler_applies_the_same_policy": "handler(), a door of its own",
    "tests/proxy/test_leaks.py::test_under_handler_": "handler(), a door of its own",
    "tests/proxy/test_ws_compression.py::test_handler_never_negotiates_compression": (
        "handler(), a door of its own"
    ),
    "tests/e2e/test_cli.py::test_cli_stops_the_kernels_jupyter_left_behind": (
        "the Jupyter the CLI starts, whatever serves in front of it"
    ),
    "tests/e2e/test_cli.py::test_a_second_ctrl_c": "the command's signals, whatever serves",
    "tests/e2e/test_cli.py::test_a_base_url_reaches": "the Jupyter the command starts",
    "tests/proxy/test_metrics.py::test_asgi_app_": "the ASGI app's lifespan: hypercorn's door only",
    "tests/e2e/test_cli.py::test_the_screen_ends_with": "the CLI's output, whatever serves",
    "tests/e2e/test_cli.py::test_log_level_info_shows": "the CLI's output, whatever serves",
    "tests/e2e/test_cli.py::test_the_json_access_log_on_stdout": "the CLI's output, whatever serves",
    "tests/e2e/test_cli.py::test_cli_serves_on_the_proxys_own_door_unless_told": (
        "which door the command picks when none is named"
    ),
}


def serves_a_proxy(item: pytest.Function) -> bool:
    """Whether the test, or a fixture of its own suite that it uses, starts a proxy."""
    functions = [item.function]
    info = getattr(item, "_fixtureinfo", None)
    for name in item.fixturenames if info is not None else ():
        for fixturedef in info.name2fixturedefs.get(name, ()):
            if fixturedef.func.__module__.startswith("tests."):
                functions.append(fixturedef.func)
    for function in functions:
        try:
            source = inspect.getsource(inspect.unwrap(function))
        except (OSError, TypeError):
            continue
        if SERVES_A_PROXY.search(source):
            return True
    return False


def door_chosen(item: pytest.Function) -> bool:
    if "door" in item.fixturenames:
        return True
    # A parameter naming a door; "handler" is trio_httpws.handler() under trio-websocket, a
    # door of its own for the WebSocket tests.
    callspec = getattr(item, "callspec", None)
    doors = (*DOORS, "handler")
    return callspec is not None and any(v in doors for v in callspec.params.values())


def one_door_reason(nodeid: str) -> str | None:
    for prefix, reason in ONE_DOOR.items():
        if nodeid.startswith(prefix):
            return reason
    return None


def fails_without_a_door(nodeid: str) -> Callable[..., Awaitable[None]]:
    async def test(**_: object) -> None:
        pytest.fail(
            f"{nodeid} serves a proxy without the `door` fixture: take `door` (and pass it to "
            "running_proxy), or name the test in ONE_DOOR in tests/support/door_rule.py with why"
        )

    return test
