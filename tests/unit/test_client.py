"""trio_httpws.client's arguments: refused before anything is sent, with no secret in the error.

The client against a scripted server on real sockets is tests/proxy/test_client.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from trio_httpws.client import http_request, open_client


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("http://127.0.0.1:1/?token=abc", {}, "auth_url"),
        ("ftp://127.0.0.1:1", {}, "base URL"),
        ("http://me:pw@127.0.0.1:1", {}, "user name or password"),
        ("htp://me:pw@127.0.0.1:1", {}, "user name or password"),
        ("ftp://127.0.0.1:1/?token=abc", {}, "base URL"),
        ("http://127.0.0.1:1", {"min_version": "one"}, "invalid version"),
        ("http://127.0.0.1:1", {"buffer_frames": 0}, "buffer_frames"),
    ],
)
async def test_bad_arguments_raise_value_error(
    url: str, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match) as info:
        async with open_client(url, **kwargs):
            pass
    assert "pw" not in str(info.value)
    assert "abc" not in str(info.value)


async def test_plain_request_refuses_a_url_with_a_password() -> None:
    # It would go out as the Host header: refused before anything is sent.
    with pytest.raises(ValueError, match="user name or password") as info:
        await http_request("http://me:pw@127.0.0.1:1", "GET", "/api")
    assert "pw" not in str(info.value)
