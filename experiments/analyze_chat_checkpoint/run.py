"""A full ``diffing analyze`` of a base/instruct pair (Qwen2.5-0.5B vs -Instruct): the typical user run.

The ``[analyze]`` table of config.toml is an :class:`diffing.report.AnalyzeConfig`;
this script calls :func:`diffing.report.analyze` with it, exactly what
``diffing analyze --config`` does. The dry run swaps the pair for a tiny random
Qwen2 pair and the data for synthetic files in the same layouts (AdvBench CSV,
Alpaca JSON, text and chat transcripts).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python experiments/NAME/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.common import synthetic_corpus, synthetic_prompts, timed, tiny_pair  # noqa: E402

NAME = "analyze_chat_checkpoint"


def run(cfg: dict, out: Path, *, progress=print) -> dict:
    """Write the report into ``out/report``; return its findings and headline numbers."""
    from diffing.report import AnalyzeConfig, analyze

    table = dict(cfg["analyze"])
    if cfg["dry_run"]:
        table["base"], table["finetuned"] = tiny_pair(out / "models", cfg["tiny"])
        table["data"] = [str(p) for p in synthetic_corpus(out / "data")]
        table["harmful"], table["harmless"] = (str(p) for p in synthetic_prompts(out / "data"))
    config = AnalyzeConfig.from_dict(table)
    times: dict[str, float] = {}
    report = timed(
        times,
        "analyze",
        lambda: analyze(out_dir=out / "report", config=config, progress=progress),
        progress,
    )
    data = report.data
    return {
        "report": str(report.html),
        "findings": [f.get("title") for f in report.findings],
        "sections": data["sections"],  # {name: {status: ok|skipped|failed, reason, seconds}}
        "seconds": times,
    }


if __name__ == "__main__":
    from experiments.run import script_main

    sys.exit(script_main(NAME))
