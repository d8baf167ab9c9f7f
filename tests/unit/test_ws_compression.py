"""WebSocket compression (``Config.ws_compression``) as the environment and the command line set it.

What the setting does to a handshake is checked on real sockets in
tests/proxy/test_ws_compression.py.
"""

from __future__ import annotations

import pytest

import trio_httpws
from trio_httpws._cli import build_parser, config_from_args


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("on", True), ("True", True), ("0", False), ("off", False), ("no", False)],
)
def test_environment_variable(raw: str, expected: bool) -> None:
    env = {"TRIO_HTTPWS_WS_COMPRESSION": raw}
    assert trio_httpws.Config.from_env(env).ws_compression is expected


def test_bad_environment_value_is_a_clear_error() -> None:
    with pytest.raises(trio_httpws.ConfigError, match="TRIO_HTTPWS_WS_COMPRESSION: 'maybe'"):
        trio_httpws.Config.from_env({"TRIO_HTTPWS_WS_COMPRESSION": "maybe"})


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], False), (["--ws-compression"], True), (["--no-ws-compression"], False)],
)
def test_cli_flag(argv: list[str], expected: bool) -> None:
    args = build_parser().parse_args(argv)
    assert config_from_args(args, {}).ws_compression is expected
