"""The doctor's report as text (one line per step, a fix under each failure) and as JSON.

Pure: a function of the :class:`~._judgement.Report` only.
"""

from __future__ import annotations

import json

from .._protocol import COLAB_ORIGINS
from ._judgement import Mark, Report

GROUP_TITLES = {
    "reach": "reach",
    "direct": "the direct flow (CORS requests and WebSockets straight to the runtime)",
    "tunnel": "the old tunnel (/http_over_websocket)",
    "kernel": "a real kernel",
    "verdict": "verdict",
}

MARKS = {Mark.OK: "✓", Mark.FAIL: "✗", Mark.WARN: "!", Mark.SKIP: "-"}


def render_text(report: Report) -> str:
    """One line per step with its mark and what it saw; a ``fix:`` line under each failure."""
    lines = [
        f"trio-httpws doctor: {report.url}",
        f"  as a page on {report.origin} would; the runtime is {report.runtime}",
    ]
    if report.told:
        lines.append(f"  {report.told}")
    group = None
    width = max(len(s.title) for s in report.steps)
    for step in report.steps:
        if step.group != group:
            group = step.group
            lines.append(GROUP_TITLES[group])
        lines.append(f"  {MARKS[step.mark]} {step.title:<{width}}  {step.saw}")
        if step.fix:
            lines.append(f"    {'':<{width}}  fix: {step.fix}")
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """The same as one JSON document."""
    document = {
        "url": report.url,
        "base_url": report.base_url,
        "cut": report.cut,
        "origin": report.origin,
        "runtime": report.runtime,
        "ok": report.ok,
        "kernel": report.kernel,
        "flows": {
            f.name: {"works": f.works, "failed_at": f.failed_at, "why": f.why} for f in report.flows
        },
        "steps": [
            {"name": s.name, "title": s.title, "mark": s.mark.value, "saw": s.saw, "fix": s.fix}
            for s in report.steps
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def verdict_line(report: Report) -> str:
    """``Colab can connect: direct flow ok, old tunnel ok``: the startup self-check's line."""
    who = "Colab" if report.origin in COLAB_ORIGINS else report.origin
    parts = []
    for flow in report.flows:
        if flow.works:
            parts.append(f"{flow.title} ok")
        else:
            step = report.step(flow.failed_at) if flow.failed_at else None
            parts.append(f"{flow.title} fails ({step.saw if step else flow.why})")
    return f"{who} {'can' if report.ok else 'cannot'} connect: {', '.join(parts)}"
