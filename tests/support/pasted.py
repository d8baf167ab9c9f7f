"""The table of pasted URLs (pasted_urls.json) that the Python rule and httpws.js both follow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).parent / "pasted_urls.json"
CASES: list[dict[str, Any]] = json.loads(TABLE_PATH.read_text())["cases"]
#: The token in the error cases: no message may show it.
SECRET = "secret1"
