"""The built-in model organisms (base vs chat / quirk / null), analysed on a CPU.

Builds (or reuses) the organisms with :func:`diffing.organisms.cached_organisms`,
runs :func:`diffing.report.analyze` on each variant against the base, and checks
the findings against the ground truth the build wrote to ``organism.json``: the
chat pair's refusal, the quirk pair's secret word, the null pair's absence of change.
These are the results docs/ shows. The dry run uses the small test build and
small budgets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python experiments/NAME/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.common import timed  # noqa: E402

NAME = "organisms"


def _ground_truth(root: Path) -> dict:
    """The organism build's ground truth (refusal phrase, secret word, ...), or {} if absent."""
    path = root / "organism.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _find(d, *keys):
    """The first of ``keys`` found anywhere in a nested dict (ground-truth layouts differ by build)."""
    if isinstance(d, dict):
        for k in keys:
            if k in d and not isinstance(d[k], dict):
                return d[k]
        for v in d.values():
            found = _find(v, *keys)
            if found is not None:
                return found
    return None


def checks(variant: str, report: dict, truth: dict) -> dict:
    """What the report says about the planted behaviour of ``variant`` (booleans plus evidence)."""
    text = " ".join(f.get("title", "") for f in report.get("findings", [])).lower()
    promoted = [
        t.get("token", "") for t in (report.get("adl") or {}).get("promoted_tokens", [])[:10]
    ]
    if variant == "quirk":
        word = str(_find(truth, "secret_word", "secret") or "")
        # promoted, not merely mentioned: a suppressed secret word is no evidence of the quirk
        hit = bool(word) and any(word.lower() in p.lower() for p in promoted)
        return {"secret_word": word, "secret_word_found": hit, "adl_top10": promoted}
    if variant == "null":
        return {"no_substantial_change": "no substantial change" in text}
    if variant == "chat":
        refusal = report.get("refusal") or {}
        return {"refusal_finding": "refusal" in text, "refusal_rate": refusal.get("refusal_rate")}
    return {}


def run(cfg: dict, out: Path, *, progress=print) -> dict:
    """Analyse each variant into ``out/<variant>``; return the findings and the ground-truth checks."""
    from diffing.organisms import cached_organisms
    from diffing.report import AnalyzeConfig, analyze

    times: dict[str, float] = {}
    o = cfg["organisms"]
    root = Path(timed(times, "organisms", lambda: cached_organisms(fast=o["fast"]), progress))
    truth = _ground_truth(root)
    results: dict = {"organisms": str(root), "variants": {}}
    for variant in o["variants"]:
        config = AnalyzeConfig.from_dict(
            {**cfg["analyze"], "base": str(root / "base"), "finetuned": str(root / variant)}
        )
        report = timed(
            times,
            f"analyze_{variant}",
            lambda config=config, variant=variant: analyze(
                out_dir=out / variant, config=config, progress=progress
            ),
            progress,
        )
        results["variants"][variant] = {
            "report": str(report.html),
            "sections": report.data["sections"],
            "findings": [f.get("title") for f in report.findings],
            "checks": checks(variant, report.data, truth),
        }
    results["seconds"] = times
    return results


if __name__ == "__main__":
    from experiments.run import script_main

    sys.exit(script_main(NAME))
