"""The diff report: ``analyze`` composes the methods into index.html, report.json and report.md.

``analyze(base, finetuned, out_dir, config=AnalyzeConfig(...)) -> Report`` runs the
steps (weights, statistics, refusal, crosscoder), each guarded so a failing step is
shown as skipped; ``write_report`` renders a report dict (useful with fabricated
section results); ``demo`` runs ``analyze`` on the built-in organism pair.
Keys of report.json: docs/report.md; typed as ``ReportResults`` (``report/results*.py``), from
which ``diffing/report/schema.json`` is generated (``python -m diffing.report.schema``).
"""

from __future__ import annotations

from diffing.lazy import lazy_exports

# Public names and their modules, loaded on first use so that the command line reads
# the light config module without importing torch.
_EXPORTS = {
    "AnalyzeConfig": "diffing.report.config",
    "Report": "diffing.report.pipeline",
    "ReportResults": "diffing.report.results",
    "Thresholds": "diffing.report.findings",
    "analyze": "diffing.report.pipeline",
    "compute_findings": "diffing.report.findings",
    "demo": "diffing.report.organism_demo",
    "load_schema": "diffing.report.schema",
    "validate_report": "diffing.report.schema",
    "write_report": "diffing.report.pipeline",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "AnalyzeConfig",
    "Report",
    "ReportResults",
    "Thresholds",
    "analyze",
    "compute_findings",
    "demo",
    "load_schema",
    "validate_report",
    "write_report",
]
