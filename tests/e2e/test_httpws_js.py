"""httpws.js in node: it reads a pasted URL by the rule of trio_httpws/_pasted.py (one table of
cases for both), and names the URL to paste when a base URL is not Jupyter's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..support.pasted import CASES, SECRET

HTTPWS_JS = Path(__file__).parents[2] / "trio_httpws" / "static" / "httpws.js"


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
