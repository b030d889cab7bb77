"""Logit-difference amplification: generate from ``logits_ft + α (logits_ft - logits_base)``.

A narrow fine-tune often changes a behaviour only a little on most inputs: the
fine-tuned model leans towards it without showing it. Extrapolating along the
difference of the two models' next-token logits (Aranguri & McGrath 2025,
"Discovering undesired rare behaviors via model diff amplification"; the diffing
toolkit of Minder et al.) makes such behaviours frequent enough to see in a
handful of samples. α = 0 is the fine-tuned model alone; the sweep over α, and
the base model alone, give the rate of a target behaviour (a string or regular
expression) as a curve. For a pair, the weight form ``W_base + (1+α)ΔW``
(exact for LoRA adapters) is available too (:mod:`diffing.lens.amplify_weights`).
Decoding is :mod:`diffing.lens.amplify_decode`; the method is docs/amplify.md.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from diffing.errors import DiffingError
from diffing.generation import cut_at_eos, eos_ids_of, left_pad
from diffing.io import write_json
from diffing.lens.amplify_config import AmplifyConfig
from diffing.lens.amplify_decode import amplified_logits, decode
from diffing.lens.amplify_figures import rates_figure
from diffing.lens.amplify_weights import amplified_weights
from diffing.lens.amplify_words import emerging_words_json
from diffing.progress import bar as progress_bar

__all__ = [
    "AmplifyConfig",
    "AmplifyResult",
    "Run",
    "Sample",
    "amplify",
    "amplify_json",
    "save_amplify",
    "section",
    "rates_figure",
    "target_matcher",
    "encode_prompts",
    "decode",
    "amplified_logits",
    "amplified_weights",
    "emerging_words_json",
]

AMPLIFY_JSON = "amplify.json"
"""File name of the saved result."""
RATES_FIGURE = "amplify_rates.png"
"""File name of the rate-vs-α figure."""
FORMULAS = {
    "logits": "logits_ft + alpha * (logits_ft - logits_base)",
    "weights": "W_base + (1 + alpha) * (W_ft - W_base)",
}
"""What each form generates from."""


class Sample(NamedTuple):
    """One completion."""

    prompt: str
    """The prompt as given (for a conversation: its last message's content)."""
    completion: str
    """The generated text up to the end of turn, special tokens dropped."""
    hit: bool | None
    """Whether the completion contains the target (None without a target)."""


class Run(NamedTuple):
    """The completions of one model setting."""

    model: str
    """``base`` (base alone), ``finetuned`` (α = 0) or ``amplified``."""
    alpha: float | None
    """Amplification strength (None for the base alone)."""
    samples: list[Sample]
    """Every completion, prompt by prompt (``samples`` per prompt, consecutive)."""

    @property
    def rate(self) -> float | None:
        """Share of completions containing the target (None without a target or completions)."""
        hits = [s.hit for s in self.samples if s.hit is not None]
        return sum(hits) / len(hits) if hits and len(hits) == len(self.samples) else None


class AmplifyResult(NamedTuple):
    """A sweep over α, plus the base alone."""

    config: AmplifyConfig
    """The settings used."""
    base_ref: str
    """How the base model was named."""
    finetuned_ref: str
    """How the fine-tuned model was named."""
    runs: list[Run]
    """One run per α, in the config's order."""
    base: Run | None
    """The base model alone (None when ``include_base`` is off)."""
    n_prompts: int
    """Number of prompts."""
    notes: list[str]
    """Things to know when reading the result (not errors)."""


def target_matcher(config: AmplifyConfig) -> Callable[[str], bool] | None:
    """A predicate telling whether a completion contains ``config.target`` (None without a target)."""
    if config.target is None:
        return None
    pattern = config.target if config.target_regex else re.escape(config.target)
    compiled = re.compile(pattern, 0 if config.case_sensitive else re.IGNORECASE)
    return lambda text: compiled.search(text) is not None


def encode_prompts(
    tokenizer, prompts: Sequence, *, chat: bool = True, template: str | None = None
) -> tuple[list[str], list[list[int]]]:
    """``(shown prompts, token ids)``: strings as single user turns (or plain text), conversations as given.

    Chat prompts end with the template's generation prompt, so the next token is the
    assistant's first (:func:`diffing.tokens.encode_chat`; the pair's tokenizer carries
    the fine-tuned model's template; ``template`` is a Jinja template for models without one).
    """
    from diffing.generation import prompt_ids, prompt_text

    ids = [prompt_ids(tokenizer, p, chat=chat, template=template) for p in prompts]
    return [prompt_text(p) for p in prompts], ids


def _default_prompts() -> list[str]:
    from diffing.data.builtin import chat_prompts

    return chat_prompts()


def amplify(
    pair,
    prompts: Sequence | None = None,
    config: AmplifyConfig | None = None,
    *,
    template: str | None = None,
    progress: bool = False,
) -> AmplifyResult:
    """Generate at every α of ``config`` (and from the base alone), and count the target.

    ``prompts`` are strings (user turns, or plain text with ``chat=False``) or message
    lists; None uses the built-in chat prompts. ``template`` is a Jinja chat template for a
    pair whose tokenizer has none. Both models of the pair must be local
    (their weights here): decoding runs their torch modules step by step.
    """
    cfg = config or AmplifyConfig()
    if pair.remote is True:
        raise DiffingError(
            "amplification decodes with both models' weights step by step; a remote (NDIF) pair "
            "has none here: load the pair locally"
        )
    prompts = list(prompts) if prompts is not None else _default_prompts()
    if cfg.max_prompts is not None:
        prompts = prompts[: cfg.max_prompts]
    if not prompts:
        raise DiffingError("no prompts to amplify on; give a prompt file with at least one prompt")
    tok = pair.tokenizer
    shown, ids = encode_prompts(tok, prompts, chat=cfg.chat, template=template)
    base, ft = pair.hf("base"), pair.hf("finetuned")
    eos = eos_ids_of(ft, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    opts = dict(
        max_new_tokens=cfg.max_new_tokens, eos_ids=eos, pad_id=pad, temperature=cfg.temperature
    )
    match = target_matcher(cfg)
    chunks = [
        list(range(i, min(i + cfg.batch_size, len(ids))))
        for i in range(0, len(ids), cfg.batch_size)
    ]
    amplified = [a for a in cfg.alphas if a != 0]
    texts: dict[float | None, list[str]] = {
        a: [] for a in ([None] if cfg.include_base else []) + list(cfg.alphas)
    }

    def rows(chunk: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_pad([ids[i] for i in chunk for _ in range(cfg.samples)], pad)

    def finish(key: float | None, new: torch.Tensor) -> None:
        texts[key] += tok.batch_decode(cut_at_eos(new, eos), skip_special_tokens=True)

    steps = len(chunks) * (
        int(cfg.include_base)
        + int(0.0 in cfg.alphas)
        + (len(amplified) if cfg.form == "weights" else bool(amplified))
    )
    bar = progress_bar(total=steps, desc="amplify", unit="batch", enabled=progress)
    for c, chunk in enumerate(chunks):
        x, mask = rows(chunk)  # [rows, seq]
        seed = cfg.seed + c
        if cfg.include_base:
            finish(None, decode([base], x, mask, seed=seed, **opts))
            bar.update()
        if 0.0 in cfg.alphas:
            finish(0.0, decode([ft], x, mask, seed=seed, **opts))
            bar.update()
        if cfg.form == "logits" and amplified:
            # every α > 0 of this chunk in one batch: both models run once per step for all of them
            n = x.shape[0]
            alphas = torch.tensor(amplified).repeat_interleave(n)  # [len(amplified) * rows]
            new = decode([base, ft], x.repeat(len(amplified), 1), mask.repeat(len(amplified), 1),
                         alphas=alphas, seed=seed, **opts)  # fmt: skip
            for k, a in enumerate(amplified):
                finish(a, new[k * n : (k + 1) * n])
            bar.update()
    if cfg.form == "weights":
        for a in amplified:
            with amplified_weights(pair, a) as model:
                for c, chunk in enumerate(chunks):
                    x, mask = rows(chunk)
                    finish(a, decode([model], x, mask, seed=cfg.seed + c, **opts))
                    bar.update()
    bar.close()

    def run(key: float | None) -> Run:
        prompt_of = [shown[i] for i in range(len(shown)) for _ in range(cfg.samples)]
        samples = [Sample(p, t, match(t) if match else None) for p, t in zip(prompt_of, texts[key])]
        model = "base" if key is None else ("finetuned" if key == 0 else "amplified")
        return Run(model, key, samples)

    notes = list(pair.notes)
    if pair.adapter is None and cfg.form == "weights":
        notes.append("no adapter: the weight form extrapolates the full difference W_ft - W_base")
    return AmplifyResult(
        config=cfg,
        base_ref=pair.base_ref,
        finetuned_ref=pair.finetuned_ref,
        runs=[run(a) for a in cfg.alphas],
        base=run(None) if cfg.include_base else None,
        n_prompts=len(shown),
        notes=notes,
    )


def _run_json(run: Run) -> dict:
    hits = [s.hit for s in run.samples if s.hit is not None]
    return {
        "model": run.model,
        "alpha": run.alpha,
        "rate": run.rate,
        "hits": sum(hits) if hits else None,
        "n": len(run.samples),
        "samples": [s._asdict() for s in run.samples],
    }


def amplify_json(result: AmplifyResult) -> dict:
    """The result as strict JSON (no NaN): settings, and per α the samples and the target's rate."""
    cfg = result.config
    return {
        "method": "amplify",
        "formula": FORMULAS[cfg.form],
        "base": result.base_ref,
        "finetuned": result.finetuned_ref,
        "config": dataclasses.asdict(cfg),
        "target": cfg.target,
        "n_prompts": result.n_prompts,
        "base_model": _run_json(result.base) if result.base is not None else None,
        "alphas": [_run_json(r) for r in result.runs],
        "notes": list(result.notes),
    }


def save_amplify(result: AmplifyResult, out_dir: str | Path) -> Path:
    """Write ``amplify.json`` (atomically) and, with a target, the rate-vs-α figure into ``out_dir``."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    data = amplify_json(result)
    path = out / AMPLIFY_JSON
    write_json(path, data, indent=1)
    if result.config.target is not None:
        rates_figure(data, out / RATES_FIGURE)
    return path


def _label(key: str | float) -> str:
    return key if isinstance(key, str) else f"α={key:g}"


def section(result: AmplifyResult | dict, *, examples: int = 3) -> dict:
    """The report's view: rates per model setting and a few completions at the strongest setting.

    Accepts the result or its :func:`amplify_json` dictionary. ``examples`` are taken
    at the α with the highest target rate (hits first), or, without a target, at the
    largest α, preferring completions that differ from the fine-tuned model's. Without a
    target (and with the base alone), ``emerging_words`` lists the words the fine-tuned or
    amplified answers use most above the base's (:mod:`diffing.lens.amplify_words`).
    """
    data = amplify_json(result) if isinstance(result, AmplifyResult) else result
    settings = ([data["base_model"]] if data.get("base_model") else []) + data["alphas"]
    rates = [
        {"model": r["model"], "alpha": r["alpha"], "rate": r["rate"], "n": r["n"]} for r in settings
    ]
    amplified = [r for r in data["alphas"] if r["model"] == "amplified"]
    ft = next((r for r in data["alphas"] if r["model"] == "finetuned"), None)
    shown: list[dict] = []
    best = None
    if amplified:
        if data.get("target") is not None:
            best = max(amplified, key=lambda r: (r["rate"] or 0.0, -abs(r["alpha"])))
            pool = [s for s in best["samples"] if s["hit"]] + [
                s for s in best["samples"] if not s["hit"]
            ]
        else:
            best = max(amplified, key=lambda r: r["alpha"])
            same = {(s["prompt"], s["completion"]) for s in (ft["samples"] if ft else [])}
            pool = sorted(best["samples"], key=lambda s: (s["prompt"], s["completion"]) in same)
        shown = [
            {"prompt": s["prompt"], "completion": s["completion"], "hit": s["hit"]}
            for s in pool[:examples]
        ]
    by = {r["model"] if r["model"] != "amplified" else r["alpha"]: r["rate"] for r in rates}
    words = emerging_words_json(data) if data.get("target") is None else None
    if data.get("target") is None:
        alphas = ", ".join(f"{r['alpha']:g}" for r in data["alphas"])
        summary = f"generated at α = {alphas}; " + (
            "words said more than by the base: "
            + ", ".join(
                f"{w['word']} ({w['share']:.0%} at α = {w['alpha']:g}, base {w['base']:.0%})"
                for w in words[:3]
            )
            if words
            else "no target to count"
        )
    else:
        parts = [f"{_label(k)} {v:.0%}" for k, v in by.items() if v is not None]
        summary = f"completions containing {data['target']!r}: " + ", ".join(parts)
    return {
        "title": "Logit-difference amplification",
        "formula": data["formula"],
        "target": data.get("target"),
        "summary": summary,
        "rates": rates,
        "best_alpha": best["alpha"] if best else None,
        "examples": shown,
        "figure": RATES_FIGURE if data.get("target") is not None else None,
        "emerging_words": words,
        "notes": data.get("notes", []),
    }
