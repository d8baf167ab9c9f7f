"""Shared fixtures: real servers on 127.0.0.1 (hypercorn, a tornado fake backend, Jupyter).

The hooks and fixtures live here; what they and the tests call lives in ``tests/support/``.
"""

from __future__ import annotations

import inspect
import ssl
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import trustme
from hypothesis import settings

import trio_httpws

from .support.door_rule import door_chosen, fails_without_a_door, one_door_reason, serves_a_proxy
from .support.fake_backend import FakeBackend
from .support.fuzz import DEFAULT_EXAMPLES, examples
from .support.jupyter import Jupyter, jupyter_server
from .support.proxies import ALLOWED_ORIGIN, DOORS, running_proxy
from .support.watchdog import timeout_of, with_watchdog

# The fuzzers that name no count run hypothesis' default, scaled as the others are.
settings.register_profile("trio_httpws", max_examples=examples(DEFAULT_EXAMPLES))
settings.load_profile("trio_httpws")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # Every test that serves a proxy runs on every door (tests/support/door_rule.py).
        if (
            isinstance(item, pytest.Function)
            and not door_chosen(item)
            and serves_a_proxy(item)
            and one_door_reason(item.nodeid) is None
        ):
            item.obj = fails_without_a_door(item.nodeid)
            item.user_properties.append(("door", "missing"))
        # A hung test fails alone (tests/support/watchdog.py).
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(item.obj)
            and not hasattr(item.obj, "hypothesis")  # pytest-trio unwraps those itself
        ):
            item.obj = with_watchdog(item.obj, 0.9 * timeout_of(item))


@pytest.fixture(scope="session")
def fake_backend() -> Iterator[FakeBackend]:
    backend = FakeBackend()
    yield backend
    backend.close()


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest) -> str:
    """The server ``running_proxy`` uses: hypercorn with the ASGI app, or the proxy's own door."""
    return str(request.param)


@pytest.fixture
async def proxy(fake_backend: FakeBackend, door: str) -> AsyncIterator[str]:
    """The proxy in front of the fake backend, allowing the test origin, on each door."""
    config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(ALLOWED_ORIGIN,))
    async with running_proxy(config, door) as url:
        yield url


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_backend(ca: trustme.CA) -> Iterator[FakeBackend]:
    """The fake backend on https, with a certificate of ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    backend = FakeBackend(ssl_context=context)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def jupyter() -> Iterator[Jupyter]:
    """A real jupyter_server + ipykernel on 127.0.0.1, shared by the session's tests."""
    with jupyter_server() as running:
        yield running


def pytest_report_header() -> str:
    return f"trio_httpws {trio_httpws.__version__} on Python {sys.version.split()[0]}"
