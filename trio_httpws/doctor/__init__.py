"""``trio-httpws doctor URL``: behave as a front end on another origin would, and say what fails.

Read in the order the data flows: ``_seen`` (the URL asked about and what the probes saw: pure
values), ``_probes`` (the only I/O, over the public :mod:`trio_httpws.client`), ``_judgement``
(one table of steps, one function each: marks, fixes, which flows work), ``_report`` (text and
``--json``) and ``_cli`` (:func:`doctor`, :func:`self_check` and the command line).
"""

from __future__ import annotations

from ._cli import build_parser, doctor, main, self_check
from ._judgement import Flow, Mark, Report, Step, assess
from ._probes import probe
from ._report import render_json, render_text, verdict_line
from ._seen import Observations, Seen, Target, parse_target

__all__ = [
    "Flow",
    "Mark",
    "Observations",
    "Report",
    "Seen",
    "Step",
    "Target",
    "assess",
    "build_parser",
    "doctor",
    "main",
    "parse_target",
    "probe",
    "render_json",
    "render_text",
    "self_check",
    "verdict_line",
]
