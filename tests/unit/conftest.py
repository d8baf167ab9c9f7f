"""tests/unit opens no network socket and starts no process: what needs one belongs in
tests/proxy or tests/e2e. A socket pair inside the process (trio's own wake-up pair, a test's
``socketpair()``) is not the network, and stays allowed."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest

REFUSED = "tests/unit opens no network socket and starts no process: move this test to "


@pytest.fixture(autouse=True)
def no_network_and_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    opened = socket.socket.__init__

    def refuse_network(self: socket.socket, family: int = -1, *args: Any, **kwargs: Any) -> None:
        adopted = (len(args) >= 3 and args[2] is not None) or kwargs.get("fileno") is not None
        if not adopted and family in (-1, socket.AF_INET, socket.AF_INET6):
            raise AssertionError(REFUSED + "tests/proxy (a network socket)")
        opened(self, family, *args, **kwargs)

    def refuse_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(REFUSED + "tests/e2e (a process)")

    monkeypatch.setattr(socket.socket, "__init__", refuse_network)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_process)
