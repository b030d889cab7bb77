"""Non-finite statistics in a report: where they are, and the findings that say the run is broken.

A NaN KL or cosine is not "no change" and not "a change": it means a weight, an
activation or the data is broken (a NaN weight propagates to every later layer).
The findings must never be drawn from such a number, so the summary names each
non-finite statistic first and the rules skip the sections that hold one.

Non-finite values arrive two ways: as raw ``float('nan')``/``inf`` in a report dict
being built, or as ``null`` listed under ``"non_finite"`` in a report.json written
by the strict writer (:func:`diffing.io.dumps`). Both are read here.
"""

from __future__ import annotations

import math
import re
from typing import Any

from diffing.io import NON_FINITE_KEY, non_finite_paths
from diffing.report.config import METHOD_KEYS

NOT_SCANNED = ("findings", "thresholds", "config", "reproduce", NON_FINITE_KEY)
"""Top-level report keys that hold settings or derived text, not statistics."""

MUST_BE_FINITE = re.compile(
    r"^(weights|activations|kl|adl)[.\[]"
    r"|^refusal\.(refusal_rate|refusal_score|kl_harmless)\b"
    r"|^crosscoder\.latents\[\d+\]\.delta$"
    r"|^refusal_link\.ablation\.\w+\.(rate|mean_score)$"
    r"|^diff_sae\.(fvu|l0)$"
)
"""Paths whose value is finite for any healthy pair and data, so a NaN/infinity there means broken input.

Elsewhere a NaN can be a documented "undefined" (a Latent Scaling ratio of a dead latent,
a cosine with a zero vector, a causal fraction when nothing changed): such values are
still written as ``null`` and listed under ``non_finite``, but they are not a broken run."""

LISTED = 20
"""How many non-finite paths the page and report.md list (report.json keeps every one)."""

ANCHORS = ("weights", "activations", "kl", "adl", "refusal", "crosscoder", *METHOD_KEYS)
"""Report sections a finding can link to; other keys link to the summary."""

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _lookup(report: Any, path: str) -> tuple[bool, Any, Any]:
    """``(found, parent, value)`` of a JSON path like ``activations.layers[1].cosine``."""
    parent, node = None, report
    for name, index in _STEP.findall(path):
        parent = node
        try:
            node = node[int(index)] if index else node[name]
        except (KeyError, IndexError, TypeError):
            return False, None, None
    return True, parent, node


def _zero_base_ratio(parent: Any, path: str) -> bool:
    """A relative change whose change itself is finite: the base tensor was zero, a real (not broken) result."""
    if not path.endswith(".relative_change") or not isinstance(parent, dict):
        return False
    delta = parent.get("delta_norm")
    return isinstance(delta, (int, float)) and not isinstance(delta, bool) and math.isfinite(delta)


def broken_paths(report: dict) -> dict[str, str]:
    """JSON path -> ``"NaN"``/``"infinite"``/``"NaN or infinite"`` for every broken statistic in ``report``.

    Reads raw non-finite floats and the paths a strict writer recorded under
    ``"non_finite"``, at the paths of :data:`MUST_BE_FINITE`; an infinite relative change
    of a zero base tensor is not broken.
    """
    scanned = {k: v for k, v in report.items() if k not in NOT_SCANNED}
    paths = list(report.get(NON_FINITE_KEY) or []) + non_finite_paths(scanned)
    out: dict[str, str] = {}
    for path in paths:
        if not isinstance(path, str) or path in out or not MUST_BE_FINITE.search(path):
            continue
        found, parent, value = _lookup(report, path)
        if found and _zero_base_ratio(parent, path):
            continue
        if isinstance(value, float) and math.isnan(value):
            out[path] = "NaN"
        elif isinstance(value, float) and math.isinf(value):
            out[path] = "infinite"
        else:  # written as null by the strict writer: which of the two is lost
            out[path] = "NaN or infinite"
    return out


def broken_sections(report: dict) -> dict[str, dict[str, str]]:
    """:func:`broken_paths` grouped by top-level report key (the section)."""
    out: dict[str, dict[str, str]] = {}
    for path, kind in broken_paths(report).items():
        out.setdefault(_STEP.findall(path)[0][0], {})[path] = kind
    return out


NON_FINITE = "non-finite-"
"""Prefix of the id of a finding that a section holds a non-finite statistic (then the section's name)."""


def broken_findings(report: dict) -> list[dict]:
    """One finding per section holding a non-finite statistic, ready to go before every other finding."""
    found = []
    for sec, paths in broken_sections(report).items():
        first, kind = next(iter(paths.items()))
        more = f" (and {len(paths) - 1} more in this section)" if len(paths) > 1 else ""
        listed = ", ".join(list(paths)[:8]) + (", ..." if len(paths) > 8 else "")
        found.append(
            {
                "id": f"{NON_FINITE}{sec}",
                "section": sec if sec in ANCHORS else "summary",
                "title": f"Statistic {first} is not finite ({kind}) - the model or data is broken{more}",
                "detail": f"Non-finite: {listed}. No finding is drawn from this section. Check both "
                "checkpoints for NaN/inf weights and the data for empty or corrupt records, then rerun.",
                "anchor": f"#{sec if sec in ANCHORS else 'summary'}",
                "evidence": {"non_finite": list(paths), "kind": list(paths.values())},
                "priority": -1.0,
            }
        )
    return found


def listed(report: dict) -> tuple[list[tuple[str, str]], int]:
    """The first :data:`LISTED` ``(path, kind)`` pairs of :func:`broken_paths`, and how many more there are."""
    items = list(broken_paths(report).items())
    return items[:LISTED], max(0, len(items) - LISTED)


def scrub(evidence: Any) -> Any:
    """Evidence with every NaN/infinity (a number that was missing) replaced by ``None``."""
    if isinstance(evidence, float):
        return evidence if math.isfinite(evidence) else None
    if isinstance(evidence, dict):
        return {k: scrub(v) for k, v in evidence.items()}
    if isinstance(evidence, (list, tuple)):
        return [scrub(v) for v in evidence]
    return evidence
