"""The diff report: ``analyze`` composes the methods into index.html, report.json and report.md.

``analyze(base, finetuned, out_dir, config=AnalyzeConfig(...)) -> Report`` runs the
steps (weights, statistics, refusal, crosscoder), each guarded so a failing step is
shown as skipped; ``write_report`` renders a report dict (useful with fabricated
section results); ``demo`` runs ``analyze`` on the built-in organism pair.
Keys of report.json: docs/report.md; schema: ``diffing/report/schema.json``.
"""

from __future__ import annotations

from diffing.report.analyze import Report, analyze, write_report
from diffing.report.config import AnalyzeConfig
from diffing.report.demo import demo
from diffing.report.findings import Thresholds, compute_findings
from diffing.report.schema import load_schema, validate_report

__all__ = [
    "AnalyzeConfig",
    "Report",
    "Thresholds",
    "analyze",
    "compute_findings",
    "demo",
    "load_schema",
    "validate_report",
    "write_report",
]
