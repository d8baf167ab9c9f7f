"""``_hypercorn_fix.install``: where it puts the WSStream subclass, and when it stays away."""

from __future__ import annotations

import hypercorn.protocol.h2
import hypercorn.protocol.h11
import pytest
from hypercorn.protocol import ws_stream

import trio_httpws
from trio_httpws import _hypercorn_fix
from trio_httpws._hypercorn_fix import FailWithCloseWSStream


def test_building_the_app_installs_it_where_hypercorn_looks() -> None:
    trio_httpws.create_app(trio_httpws.Config())
    for module in (ws_stream, hypercorn.protocol.h11, hypercorn.protocol.h2):
        assert module.WSStream is FailWithCloseWSStream  # type: ignore[attr-defined]
    assert _hypercorn_fix.install() is True  # again: nothing changes
    assert hypercorn.protocol.h11.WSStream is FailWithCloseWSStream  # type: ignore[attr-defined]


def test_other_hypercorn_versions_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (ws_stream, hypercorn.protocol.h11, hypercorn.protocol.h2):
        monkeypatch.setattr(module, "WSStream", _hypercorn_fix._original)
    monkeypatch.setattr(_hypercorn_fix, "version", lambda name: "0.19.0")
    assert _hypercorn_fix.install() is False
    assert hypercorn.protocol.h11.WSStream is _hypercorn_fix._original  # type: ignore[attr-defined]
