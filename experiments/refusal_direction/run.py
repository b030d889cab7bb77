"""Refusal directions in three chat models of different families (Arditi et al. 2024, arXiv 2406.11717).

For each model of ``[models] chat``, one after another: split the prompt files into
train / validation / test; extract the difference-in-means candidates and select the
direction (``diffing.refusal.pipeline.extract_direction``, writing direction.safetensors,
candidates.json and scores.png); evaluate baseline vs directional ablation vs activation
addition on the held-out prompts (refusal rates, refusal scores, KL on harmless prompts,
cross-entropy on plain text); export the weight-orthogonalised checkpoint, load it fresh
and evaluate it again (it should behave like the ablation). The dry run does the same
with tiny random qwen2 / llama / gemma2 models and synthetic prompt files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python experiments/NAME/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.common import synthetic_corpus, synthetic_prompts, timed, tiny_model  # noqa: E402

NAME = "refusal_direction"


def _texts(path: str, n: int) -> list[str]:
    """The first ``n`` documents of a text spec ("" = none)."""
    if not path:
        return []
    from diffing.data.corpus import resolve_all

    out: list[str] = []
    for src in resolve_all([path]):
        for doc in src.documents():
            if isinstance(doc, str):
                out.append(doc)
            if len(out) >= n:
                return out
    return out


def _split(prompts: list[str], n_test: int, rcfg, name: str):
    """``(train, val, test)`` by the package's one split rule (``diffing.refusal.split_prompts``)."""
    from diffing.refusal import split_prompts

    split = split_prompts(
        prompts,
        rcfg.n_train,
        rcfg.n_val,
        n_test=n_test,
        min_train=rcfg.min_train,
        seed=rcfg.seed,
        name=name,
    )
    return split.train, split.val, split.test


def _one_model(
    ref: str, mdir: Path, cfg: dict, sets: dict, text: list[str], times: dict, progress
) -> dict:
    """Extract, evaluate, export and re-evaluate one chat model; return its figures."""
    from diffing.models import load_model
    from diffing.refusal import RefusalConfig, evaluate, export_orthogonalized
    from diffing.refusal.pipeline import extract_direction
    from diffing.refusal.scores import parse_refusal_tokens

    m = cfg["models"]
    table = dict(cfg["refusal"])
    token_strings = table.pop("refusal_token_strings", None)
    lm, tok, arch = load_model(ref, dtype=m.get("dtype"), device=m.get("device"))
    if token_strings:
        table["refusal_tokens"] = parse_refusal_tokens(tok, token_strings)
    rcfg = RefusalConfig(**table)
    (h_tr, h_val, h_te), (s_tr, s_val, s_te) = (
        _split(sets[k], cfg["prompts"]["n_test"], rcfg, k) for k in ("harmful", "harmless")
    )
    tag = mdir.name
    ext = timed(
        times,
        f"{tag}:extract",
        lambda: extract_direction(
            lm, tok, arch, h_tr, s_tr, h_val, s_val, config=rcfg, model_ref=ref, out=mdir
        ),
        progress,
    )
    direction = ext.direction
    ev = timed(
        times,
        f"{tag}:evaluate",
        lambda: evaluate(
            lm, tok, arch, direction, h_te, s_te, config=rcfg, text=text or None, model_ref=ref
        ),
        progress,
    )
    (mdir / "eval.json").write_text(json.dumps(ev.report, indent=2, default=str) + "\n")
    result = {
        "model": ref,
        "family": direction.family,
        "direction": {
            "layer": direction.layer,
            "position": direction.position,
            "norm": direction.norm,
            "unit_norm": float(direction.direction.norm()),
            "n_layers": direction.n_layers,
            "scores": direction.scores,
        },
        "eval": {
            k: ev.report[k] for k in ("refusal_rate", "refusal_score", "kl_harmless", "text_loss")
        },
    }
    if cfg.get("export", {}).get("enabled", True):
        path = timed(
            times,
            f"{tag}:export",
            lambda: export_orthogonalized(
                lm._module, tok, direction, mdir / "orthogonalized", source=ref
            ),
            progress,
        )
        del lm
        lm2, tok2, arch2 = load_model(str(path), dtype=m.get("dtype"), device=m.get("device"))
        ev2 = timed(
            times,
            f"{tag}:evaluate_export",
            lambda: evaluate(
                lm2, tok2, arch2, direction, h_te, s_te, config=rcfg, model_ref=str(path)
            ),
            progress,
        )
        (mdir / "eval_orthogonalized.json").write_text(
            json.dumps(ev2.report, indent=2, default=str) + "\n"
        )
        result["export"] = str(path)
        result["export_eval"] = {
            k: ev2.report[k] for k in ("refusal_rate", "refusal_score", "kl_harmless")
        }
    return result


def run(cfg: dict, out: Path, *, progress=print) -> dict:
    """Run every model into ``out/<model>``; return per-model figures next to the paper's."""
    from diffing.refusal import read_prompts

    p = cfg["prompts"]
    if cfg["dry_run"]:
        tiny = cfg["tiny"]
        refs = [
            str(
                tiny_model(
                    out / "models", f, hidden=tiny.get("hidden", 32), layers=tiny.get("layers", 4)
                )
            )
            for f in tiny["families"]
        ]
        harmful, harmless = (str(x) for x in synthetic_prompts(out / "data", n=p["n"]))
        text_path = str(synthetic_corpus(out / "data")[0])
    else:
        refs, harmful, harmless, text_path = (
            list(cfg["models"]["chat"]),
            p["harmful"],
            p["harmless"],
            p.get("text", ""),
        )
    sets = {"harmful": read_prompts(harmful), "harmless": read_prompts(harmless)}
    text = _texts(text_path, p.get("n_text", 200))
    times: dict[str, float] = {}
    models = {}
    for ref in refs:
        mdir = out / Path(ref).name
        models[Path(ref).name] = _one_model(ref, mdir, cfg, sets, text, times, progress)
    return {"models": models, "paper": cfg.get("paper", {}), "seconds": times}


if __name__ == "__main__":
    from experiments.run import script_main

    sys.exit(script_main(NAME))
