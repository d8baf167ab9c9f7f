"""A pasted URL is read by one rule; tests/e2e/test_httpws_js.py checks httpws.js by the same table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_httpws._pasted import PAGES, PastedUrlError, split_pasted
from trio_httpws.client._ws import _endpoint

from ..support.pasted import CASES, SECRET


@pytest.mark.parametrize("case", CASES, ids=[case["url"].strip() for case in CASES])
def test_a_pasted_url_is_read_by_the_table(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(PastedUrlError) as caught:
            split_pasted(case["url"])
        assert case["error"] in str(caught.value)
        assert SECRET not in str(caught.value)
        return
    pasted = split_pasted(case["url"])
    assert (pasted.base_url, pasted.token, pasted.cut) == (
        case["base_url"],
        case["token"],
        case["cut"],
    )


def test_the_user_is_told_what_was_cut() -> None:
    pasted = split_pasted("http://localhost:8888/u/a/lab/tree/x.ipynb?token=abc")
    assert pasted.base_path == "/u/a/"
    assert pasted.told() == (
        "/lab/tree/x.ipynb is a Jupyter page, not part of the server's URL: "
        "using http://localhost:8888/u/a/"
    )
    assert split_pasted("http://localhost:8888/u/a/?token=abc").told() is None


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)


@given(
    base=st.lists(_segment.filter(lambda s: s not in PAGES), max_size=3),
    page=st.sampled_from(sorted(PAGES)),
    rest=st.lists(_segment, max_size=3),
)
def test_whatever_follows_a_page_is_cut_and_the_base_is_kept(
    base: list[str], page: str, rest: list[str]
) -> None:
    base_path = "/" + "".join(f"{s}/" for s in base)
    pasted = split_pasted(f"http://h:1{base_path}{'/'.join([page, *rest])}?token=t")
    assert pasted.base_url == f"http://h:1{base_path}"
    assert pasted.cut == "/" + "/".join([page, *rest])
    assert pasted.token == "t"


def test_the_python_client_cuts_a_pasted_page(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = _endpoint("http://h:1/u/a/lab/tree/x.ipynb", "/api/kernels", {})
    assert endpoint == "ws://h:1/u/a/api/kernels"
    assert caplog.messages == [
        "/lab/tree/x.ipynb is a Jupyter page, not part of the server's URL: cut off"
    ]
