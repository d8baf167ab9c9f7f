"""A pasted URL is read by one rule, in Python and in httpws.js: one table checks both."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_httpws._pasted import PAGES, PastedUrlError, split_pasted
from trio_httpws.client._ws import _endpoint

TABLE_PATH = Path(__file__).parent / "support" / "pasted_urls.json"
CASES: list[dict[str, Any]] = json.loads(TABLE_PATH.read_text())["cases"]
HTTPWS_JS = Path(__file__).parents[1] / "trio_httpws" / "static" / "httpws.js"
SECRET = "secret1"


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


def _node(script: str) -> Any:
    """What an ES module script printed as JSON, run by node."""
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(
    shutil.which("node") is None, reason="node is not installed: httpws.js runs in it"
)
def test_httpws_js_reads_pasted_urls_by_the_same_table() -> None:
    script = f"""
        import {{ splitPastedUrl }} from {json.dumps(HTTPWS_JS.as_uri())};
        const cases = {json.dumps([case["url"] for case in CASES])};
        const out = cases.map((url) => {{
          try {{ return splitPastedUrl(url); }} catch (error) {{
            return {{ error: `${{error.name}}: ${{error.message}}` }};
          }}
        }});
        console.log(JSON.stringify(out));
    """
    results = _node(script)
    for case, got in zip(CASES, results, strict=True):
        if "error" in case:
            assert got["error"].startswith("TypeError: "), (case["url"], got)
            assert case["error"] in got["error"], (case["url"], got)
            assert SECRET not in got["error"]
        else:
            want = {"baseUrl": case["base_url"], "token": case["token"], "cut": case["cut"]}
            assert got == want, case["url"]


def test_the_python_client_cuts_a_pasted_page(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = _endpoint("http://h:1/u/a/lab/tree/x.ipynb", "/api/kernels", {})
    assert endpoint == "ws://h:1/u/a/api/kernels"
    assert caplog.messages == [
        "/lab/tree/x.ipynb is a Jupyter page, not part of the server's URL: cut off"
    ]


@pytest.mark.skipif(
    shutil.which("node") is None, reason="node is not installed: httpws.js runs in it"
)
def test_httpws_js_names_the_url_to_paste_when_the_base_is_not_jupyters() -> None:
    # A base URL with no known page is only a candidate: a 404 from <base>api/status says it
    # is not Jupyter's and what to paste instead.
    script = f"""
        import {{ connect }} from {json.dumps(HTTPWS_JS.as_uri())};
        const asked = [];
        globalThis.fetch = async (url) => {{
          asked.push(new URL(url).pathname);
          return new Response("", {{ status: 404, statusText: "Not Found" }});
        }};
        try {{
          await connect("http://localhost:8888/u/x/?token=t", {{ transport: "direct" }});
          console.log(JSON.stringify({{ asked }}));
        }} catch (error) {{
          console.log(JSON.stringify({{ asked, error: error.message }}));
        }}
    """
    assert _node(script) == {
        "asked": ["/u/x/api/status"],
        "error": "could not connect to http://localhost:8888/u/x/: GET /u/x/api/status "
        "answered 404 Not Found: http://localhost:8888/u/x/ is not a Jupyter server's "
        "URL; paste the URL Jupyter printed, e.g. http://localhost:8888/?token=...",
    }
