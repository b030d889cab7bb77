"""``analyze``: run every section on a pair and write index.html, report.json, report.md and run.toml.

Each step (weights, stats, refusal, crosscoder, then the method steps of
``report.method_steps``: amplify, diff_sae, refusal_link, pca, mining) runs inside its own guard: a step
that was not asked for (or whose method module is not installed) is recorded as
skipped, one that raises (a user-fixable DiffingError or a bug) as failed, each
with its reason, and the other sections still render. With no data flags every
section runs, on the pair's own data or the built-in data (``report.inputs``), at
sizes scaled to the model and the device (``report.budget``). The section
results are gathered into one report dict (keys in docs/report.md), the findings
are computed from it, and the renderers turn it into the three files.
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from diffing import configs
from diffing.errors import DiffingError
from diffing.io import atomic_path, dumps, write_text_atomic
from diffing.report.budget import pair_budget
from diffing.report.config import CLI_FLAGS, CLI_POSITIONALS, METHOD_KEYS, AnalyzeConfig
from diffing.report.findings import Thresholds, compute_findings
from diffing.report.inputs import RunData, prompt_source
from diffing.report.markdown import render_markdown
from diffing.report.render import render_html
from diffing.report.results import SectionStatus
from diffing.report.schema import validate_report
from diffing.report.util import SkipSection, jsonable

RESULT_KEYS = ("weights", "activations", "kl", "adl", "refusal", "crosscoder", *METHOD_KEYS)
"""Report keys that hold section results (null when their step did not run)."""


class Report(NamedTuple):
    """What :func:`analyze` wrote."""

    out_dir: Path
    """The output folder."""
    data: dict
    """The report dict, exactly as saved in report.json."""
    html: Path
    """``index.html``: the self-contained page."""
    json: Path
    """``report.json``: every number, validated against its typed results (``diffing/report/schema.json``)."""
    markdown: Path
    """``report.md``: the findings as Markdown."""
    config: Path
    """``run.toml``: the run config that reproduces the report."""

    @property
    def findings(self) -> list[dict]:
        """The summary's findings, most important first."""
        return self.data["findings"]

    @property
    def failed(self) -> list[str]:
        """Sections whose step failed (the CLI exits non-zero when there is any)."""
        return [k for k, v in self.data["sections"].items() if v.get("status") == "failed"]


def default_progress(msg: str) -> None:
    """Print a progress line to stderr with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


default_progress.bars = True  # type: ignore[attr-defined]  # methods may draw their own progress bars too


def versions() -> dict:
    """Versions of Python and the packages a report depends on."""
    import importlib.metadata as md

    import diffing

    out = {"python": platform.python_version(), "diffing": diffing.__version__}
    for pkg in ("torch", "transformers", "nnsight", "peft", "safetensors", "numpy", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def command_line(cfg: AnalyzeConfig, out_dir: Path) -> str:
    """The ``diffing analyze`` command equivalent to ``cfg`` (flags only where it differs from the defaults)."""
    args = configs.command_line(cfg, positionals=CLI_POSITIONALS, flags=CLI_FLAGS)
    return shlex.join(["diffing", "analyze", *args[:2], "--out", str(out_dir), *args[2:]])


def empty_report(cfg: AnalyzeConfig, models: dict) -> dict:
    """A report dict with every section unset (null), ready to be filled by the steps."""
    return {
        "schema_version": 1,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "models": models,
        "sections": {},
        "inputs": {},
        **{k: None for k in RESULT_KEYS},
        "findings": [],
        "thresholds": Thresholds().to_dict(),
        "config": cfg.to_dict(),
        "reproduce": {"command": "", "config_command": "", "versions": versions()},
    }


def run_step(
    report: dict, name: str, fn: Callable[[], dict], progress: Callable[[str], None]
) -> None:
    """Run one step, merge its result keys into ``report``, and record its status and time."""
    progress(f"{name}: running")
    t0 = time.perf_counter()
    status, reason = "ok", None
    try:
        result = fn()
        for key, value in (result or {}).items():
            if key == "inputs":  # every step adds the files and budgets it used
                report.setdefault("inputs", {}).update(jsonable(value))
            else:
                report[key] = jsonable(value)
    except SkipSection as err:
        status, reason = "skipped", str(err)
    except DiffingError as err:  # the section could not run: a failure the user can fix
        status, reason = "failed", str(err)
    except ImportError as err:  # a method module that is not installed (or not written yet)
        status, reason = "skipped", f"the method is not available in this installation ({err})"
    except Exception as err:  # noqa: BLE001 - one failing method must not take the report down
        status, reason = "failed", f"{type(err).__name__}: {err}"
        progress("".join(traceback.format_exception_only(type(err), err)).strip())
    seconds = time.perf_counter() - t0
    record = SectionStatus(status=status, reason=reason, seconds=round(seconds, 2))
    report["sections"][name] = record.model_dump()
    progress(f"{name}: {status} in {seconds:.1f} s" + (f" ({reason})" if reason else ""))


def write_report(
    report: dict,
    out_dir: str | Path,
    cfg: AnalyzeConfig | None = None,
    *,
    command: str | None = None,
) -> Report:
    """Validate, compute the findings, and write index.html, report.json, report.md and run.toml.

    The report dict is read into its typed results (:class:`~diffing.report.results.ReportResults`)
    here, once: a section that does not match its model stops the write with a
    :class:`DiffingError` naming the path, and the findings read the validated sections.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg or AnalyzeConfig.from_dict(report.get("config") or {})
    report = jsonable(report)
    rep = report.setdefault("reproduce", {})
    rep["command"] = command or command_line(cfg, out)
    rep["config_command"] = f"diffing analyze --config {shlex.quote(str(out / 'run.toml'))}"
    rep.setdefault("versions", versions())
    report.setdefault("thresholds", Thresholds().to_dict())
    report["findings"] = []  # computed below, from the validated sections
    results = validate_report(report)
    report["findings"] = compute_findings(report, results.thresholds, results=results)
    validate_report(report)  # the findings too: at most five, each linking to a section
    paths = {name: out / name for name in ("index.html", "report.json", "report.md", "run.toml")}
    # everything is rendered before anything is written, so a failure leaves the old report whole
    texts = {
        "report.json": dumps(report, non_finite="null", ensure_ascii=False),
        "index.html": render_html(report),
        "report.md": render_markdown(report),
    }
    for name, text in texts.items():
        write_text_atomic(paths[name], text)
    with atomic_path(paths["run.toml"]) as tmp:
        cfg.save(tmp)
    return Report(
        out,
        report,
        paths["index.html"],
        paths["report.json"],
        paths["report.md"],
        paths["run.toml"],
    )


def _absolute_paths(cfg: AnalyzeConfig) -> None:
    """Make local paths in ``cfg`` absolute, so run.toml works from any folder (hub ids are left alone)."""

    def fix(p: str | None) -> str | None:
        return os.path.abspath(os.path.expanduser(p)) if p and Path(p).expanduser().exists() else p

    for key in ("base", "finetuned", "adapter", "harmful", "harmless", "crosscoder"):
        setattr(cfg, key, fix(getattr(cfg, key)))  # named datasets (advbench, ...) stay names
    cfg.data = [fix(p) for p in cfg.data]


def analyze(
    base: str | None = None,
    finetuned: str | None = None,
    out_dir: str | Path = "report",
    *,
    config: AnalyzeConfig | None = None,
    pair=None,
    progress: Callable[[str], None] | None = default_progress,
    command: str | None = None,
) -> Report:
    """Compare ``base`` with ``finetuned`` and write the diff report into ``out_dir``.

    ``config`` holds every option (its ``base``/``finetuned`` are used when the
    arguments are None). ``pair`` is an already loaded :class:`~diffing.models.ModelPair`
    (skips loading). Returns the :class:`Report` with the paths and the report dict.
    """
    from diffing.report import steps
    from diffing.report.method_steps import METHOD_STEPS

    cfg = config or AnalyzeConfig()
    cfg.base = str(base) if base is not None else cfg.base
    cfg.finetuned = str(finetuned) if finetuned is not None else cfg.finetuned
    if pair is None and (cfg.base is None or (cfg.finetuned is None and cfg.adapter is None)):
        raise DiffingError(
            "analyze needs a base and a fine-tuned model: give BASE and FINETUNED (or an adapter)"
        )
    _absolute_paths(cfg)
    progress = progress or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if pair is None:
        progress(f"loading {cfg.base} and {cfg.finetuned or cfg.adapter}")
        pair = steps.load_pair(cfg)
    cfg.base = cfg.base or pair.base_ref
    cfg.finetuned = cfg.finetuned or pair.finetuned_ref
    report = empty_report(cfg, steps.describe_pair(pair))
    budget = pair_budget(pair, cfg)
    report["inputs"]["budget"] = budget.to_dict()
    progress(
        f"budget on {budget.device}: {budget.tokens} tokens, crosscoder {budget.crosscoder_latents} "
        f"latents x {budget.crosscoder_steps} steps"
    )
    data = RunData(pair, cfg, budget, out, bars=bool(getattr(progress, "bars", False)))
    run_step(report, "weights", lambda: steps.weights(pair), progress)
    plan = {"stats": steps.stats, "refusal": steps.refusal, "crosscoder": steps.crosscoder}
    # the method steps read what the earlier ones left (the crosscoder's store, the refusal selection)
    plan.update({k: functools.partial(fn, report=report) for k, fn in METHOD_STEPS.items()})
    for name, fn in plan.items():
        if name in cfg.sections:
            run_step(
                report,
                name,
                lambda fn=fn, name=name: fn(pair, cfg, out / name, progress, data),
                progress,
            )
        else:
            skipped = SectionStatus(
                status="skipped", reason="not requested (--sections)", seconds=0.0
            )
            report["sections"][name] = skipped.model_dump()
    if data.resolved is not None:  # what the data-reading steps ran on
        report["inputs"].update(data.resolved.report)
    if "refusal" in cfg.sections:  # recorded even when the step failed: it says what was tried
        report["inputs"].setdefault("refusal_source", prompt_source(pair, cfg))
    result = write_report(report, out, cfg, command=command)
    progress(f"report written to {result.html} in {time.perf_counter() - t0:.0f} s")
    return result
