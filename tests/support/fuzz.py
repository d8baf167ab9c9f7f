"""How hard the hypothesis fuzzers try.

Under nox (``nox``, ``nox -s tests``, CI) every fuzzer runs its full count of examples; a bare
``pytest`` run, the quick loop (``pytest tests/unit`` in under 10 s), runs a third of each. The
nox sessions set ``TRIO_HTTPWS_FUZZ=thorough``; set it yourself for the full count anywhere.
"""

from __future__ import annotations

import os

THOROUGH = os.environ.get("TRIO_HTTPWS_FUZZ", "") == "thorough"
#: hypothesis' own default count, for the fuzzers that do not name one.
DEFAULT_EXAMPLES = 100


def examples(full: int) -> int:
    """The number of examples a fuzzer whose full count is ``full`` runs in this run."""
    return full if THOROUGH else max(full // 3, 30)
