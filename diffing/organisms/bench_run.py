"""The identification benchmark: `diffing analyze` with default settings on every organism pair, scored.

For each family and seed the organisms are built (or the cached build reused) with
every variant; each pair (base, variant) is analysed into ``OUT/FAMILY-seedS/VARIANT``
(a pair whose report.json exists is not analysed again, so an interrupted run
resumes), scored by :mod:`diffing.organisms.bench`, and the results written to
``OUT/identify.json`` with a table of pair x method verdicts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from diffing.io import write_json
from diffing.organisms.bench import (
    CLEAN,
    CONTROL,
    FALSE_ALARM,
    HIT,
    METHODS,
    MISS,
    NOT_RUN,
    TOP,
    all_findings,
    chance_hits,
    ground_truth,
    score_report,
)

log = logging.getLogger(__name__)

RESULTS = "identify.json"
"""File name of the benchmark's results inside its output folder."""


class BenchResult(NamedTuple):
    """What :func:`run_bench` measured and wrote."""

    pairs: list[dict]
    """Per pair: family, seed, variant, kind, targets, report (folder), failed sections, top (finding
    ids and titles), identified / false_alarm, methods (section -> verdict), chance (other kind -> hit)."""
    summary: list[dict]
    """Per seed (``family`` "all") and per family and seed: planted, identified, identification_rate,
    controls, false_alarms, chance_checks, chance_hits, chance_rate."""
    table: str
    """The pair x method table (Markdown)."""
    path: Path
    """``OUT/identify.json``."""


def _builds(
    root: str | Path | None,
    families: Sequence[str],
    seeds: Sequence[int],
    fast: bool,
    variants: Sequence[str],
) -> list[tuple[str, int, Path]]:
    """``(family, seed, folder)`` of every organism build to score (built or reused)."""
    if root is not None:
        folder = Path(root).expanduser().resolve()
        manifest = _manifest(folder)
        family = (manifest.get("model") or {}).get("family") or "llama"
        return [(str(family), int(manifest.get("seed", 0)), folder)]
    from diffing.organisms import cached_organisms

    out = []
    for family in families:
        for seed in seeds:
            folder = cached_organisms(
                fast=fast, seed=int(seed), variants=tuple(variants), family=family, progress=True
            )
            out.append((family, int(seed), Path(folder)))
    return out


def _manifest(folder: Path) -> dict:
    from diffing.organisms.manifest import load_manifest

    return load_manifest(folder)


def _pair_folders(folder: Path, manifest: dict, variant: str) -> tuple[Path, Path]:
    """``(base, fine-tuned)`` model folders of a pair: the build's base and the variant's own model."""
    lay = manifest.get("layout") or {}
    model = ((lay.get("variants") or {}).get(variant) or {}).get("model") or variant
    return folder / (lay.get("base") or "base"), folder / model


def _analyse(base: Path, finetuned: Path, out: Path, progress: Callable[[str], None]) -> dict:
    """report.json of the pair: read when it exists (resume), else ``analyze`` with default settings."""
    done = out / "report.json"
    if done.is_file():
        progress(f"{out.name}: reusing {done}")
        return json.loads(done.read_text())
    from diffing.report import analyze
    from diffing.report.config import AnalyzeConfig

    progress(f"{out.name}: analyze {base} {finetuned}")
    cfg = AnalyzeConfig(base=str(base), finetuned=str(finetuned))
    return analyze(out_dir=out, config=cfg, progress=None).data


def score_build(
    family: str,
    seed: int,
    folder: Path,
    out: Path,
    variants: Sequence[str] | None = None,
    progress: Callable[[str], None] = log.info,
) -> list[dict]:
    """Analyse and score every pair of one organism build (its variants, or ``variants`` of them)."""
    manifest = _manifest(folder)
    names = [v for v in manifest.get("variants") or {} if not variants or v in variants]
    truth = {v: ground_truth(manifest, v) for v in names}
    rows = []
    for v in names:
        kind, targets = truth[v]
        base, ft = _pair_folders(folder, manifest, v)
        where = out / f"{family}-seed{seed}" / v
        report = _analyse(base, ft, where, progress)
        score = score_report(report, kind, targets, all_findings(report))
        others = {k: t for k, t in truth.values() if k not in (kind, CONTROL)}
        failed = [
            k for k, s in (report.get("sections") or {}).items() if s.get("status") == "failed"
        ]
        rows.append(
            {
                "family": family,
                "seed": seed,
                "variant": v,
                "kind": kind,
                "targets": targets,
                "report": str(where),
                "failed_sections": failed,
                "top": score.top,
                "identified": score.identified,
                "false_alarm": score.false_alarm,
                "methods": score.methods,
                "chance": chance_hits(report.get("findings", [])[:TOP], others)
                if kind != CONTROL
                else {},
            }
        )
    return rows


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def summarise(pairs: Sequence[dict]) -> list[dict]:
    """Per seed over every family (``family`` "all"), then per family and seed: the benchmark's rates."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for p in pairs:
        groups.setdefault(("all", p["seed"]), []).append(p)
    for p in pairs:
        groups.setdefault((p["family"], p["seed"]), []).append(p)
    out = []
    for (family, seed), rows in groups.items():
        planted = [r for r in rows if r["kind"] != CONTROL]
        controls = [r for r in rows if r["kind"] == CONTROL]
        checks = [hit for r in planted for hit in r["chance"].values()]
        found = sum(bool(r["identified"]) for r in planted)
        alarms = sum(bool(r["false_alarm"]) for r in controls)
        out.append(
            {
                "family": family,
                "seed": seed,
                "planted": len(planted),
                "identified": found,
                "identification_rate": _rate(found, len(planted)),
                "controls": len(controls),
                "false_alarms": alarms,
                "false_alarm_rate": _rate(alarms, len(controls)),
                "chance_checks": len(checks),
                "chance_hits": sum(checks),
                "chance_rate": _rate(sum(checks), len(checks)),
            }
        )
    return out


def overall(pair: dict) -> str:
    """The pair's overall verdict word: hit / miss for a planted pair, FA / clean for a control."""
    if pair["kind"] == CONTROL:
        return FALSE_ALARM if pair["false_alarm"] else CLEAN
    return HIT if pair["identified"] else MISS


def table(pairs: Sequence[dict]) -> str:
    """Markdown table: one row per pair, the overall verdict (top five findings) then each method's."""
    head = ["pair", "kind", "top 5", *METHODS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in pairs:
        cells = [f"{p['family']} s{p['seed']} {p['variant']}", p["kind"], overall(p)]
        cells += [p["methods"].get(m, NOT_RUN) for m in METHODS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def summary_table(summary: Sequence[dict]) -> str:
    """Markdown table of :func:`summarise`'s rows."""
    lines = [
        "| family | seed | identified (planted pairs) | false alarms (controls) | chance hits (checks) |",
        "|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['family']} | {s['seed']} | {s['identified']}/{s['planted']} ({_pct(s['identification_rate'])}) "
            f"| {s['false_alarms']}/{s['controls']} ({_pct(s['false_alarm_rate'])}) "
            f"| {s['chance_hits']}/{s['chance_checks']} ({_pct(s['chance_rate'])}) |"
        )
    return "\n".join(lines)


def run_bench(
    root: str | Path | None = None,
    families: Sequence[str] = ("llama",),
    seeds: Sequence[int] = (0,),
    fast: bool = True,
    out: str | Path = "identify",
    *,
    variants: Sequence[str] = ("all",),
    progress: Callable[[str], None] = log.info,
) -> BenchResult:
    """Score `diffing analyze` (default settings) on every organism pair; write ``OUT/identify.json``.

    ``root`` scores one existing build (every variant it holds, or those in ``variants``);
    without it the organisms of every family x seed are built (``fast``: the small
    test build) or reused from the cache. Prints nothing: the table is returned.
    """
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    chosen = [v for v in variants if v != "all"] if root is not None else None
    pairs = []
    for family, seed, folder in _builds(root, families, seeds, fast, variants):
        pairs += score_build(family, seed, folder, out, chosen, progress)
    summary = summarise(pairs)
    text = table(pairs)
    path = out / RESULTS
    write_json(
        path,
        {
            "fast": fast,
            "methods": list(METHODS),
            "top": TOP,
            "pairs": pairs,
            "summary": summary,
        },
    )
    return BenchResult(pairs, summary, text, path)
