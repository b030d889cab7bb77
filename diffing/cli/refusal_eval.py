"""``diffing refusal eval`` and ``diffing refusal export``: measure a model or a direction, export and check."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffing.cli.refusal import _config, _load, _read


def _check_eval_out(out: Path, direction: str | None) -> None:
    from diffing.errors import DiffingError

    if direction is None:
        return
    folder = Path(direction).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    if out.expanduser().resolve() == folder.resolve():
        raise DiffingError(
            f"--out {str(out)!r} is the direction's folder; give eval its own folder so the extraction's "
            "files stay as written"
        )


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``diffing refusal eval``."""
    import gc

    from diffing.errors import DiffingError
    from diffing.refusal.config import check_strength
    from diffing.refusal.evaluation import eval_markdown, evaluate
    from diffing.refusal.io import Direction, check_sets, write_json
    from diffing.refusal.measure import behaviour, evaluate_model, measure_markdown

    out = Path(args.out)
    _check_eval_out(out, args.direction)
    check_strength(args.strength, "--strength")
    if args.direction and args.reference:
        raise DiffingError(
            "--reference measures MODEL on its own and --direction evaluates a direction; give one of them"
        )
    harmful = _read(args.harmful, args.limit)
    harmless = _read(args.harmless, args.limit)
    check_sets(harmful, harmless)
    text = _read(args.text, None) if args.text else None
    reference = None
    if args.reference:  # measured first and freed, so one model is in memory at a time
        rlm, rtok, rarch = _load(args, args.reference)
        reference = behaviour(rlm, rtok, rarch, harmful, harmless, config=_config(args), text=text)
        del rlm
        gc.collect()
    lm, tok, arch = _load(args)
    cfg = _config(args)
    if args.direction:
        direction = Direction.load(args.direction)
        direction.check_model(lm._module.config, what=repr(args.model))
        result = evaluate(
            lm,
            tok,
            arch,
            direction,
            harmful,
            harmless,
            config=cfg,
            text=text,
            strength=args.strength,
            model_ref=args.model,
        )
        markdown = eval_markdown(result.report)
    else:
        result = evaluate_model(
            lm,
            tok,
            arch,
            harmful,
            harmless,
            config=cfg,
            reference=reference,
            text=text,
            model_ref=args.model,
            reference_ref=args.reference or "",
        )
        markdown = measure_markdown(result.report)
    write_json(out / "eval.json", result.report)
    (out / "eval.md").write_text(markdown)
    print(markdown.split("## Example")[0].rstrip())
    print(f"wrote {out}/eval.json and eval.md")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``diffing refusal export``."""
    from diffing.refusal.config import check_strength
    from diffing.refusal.export_check import EXPORT_FILE, export_checked
    from diffing.refusal.io import Direction, check_sets
    from diffing.refusal.orthogonalize import check_out_dir

    check_out_dir(args.out, args.model)
    check_strength(args.strength, "--strength")
    direction = Direction.load(args.direction)
    harmful = _read(args.harmful, args.limit)
    harmless = _read(args.harmless, args.limit)
    check_sets(harmful, harmless)
    lm, tok, arch = _load(args)
    result = export_checked(
        lm,
        tok,
        arch,
        direction,
        args.out,
        harmful,
        harmless,
        config=_config(args),
        strength=args.strength,
        layers=args.layers,
        source=args.model,
        text=_read(args.text, None) if args.text else None,
        load_kwargs={
            "dtype": args.dtype,
            "device": args.device,
            "trust_remote_code": args.trust_remote_code,
        },
        release=True,
    )
    c = result.report["check"]
    print(
        f"wrote the orthogonalised model to {result.out} (strength {args.strength:g}, blocks "
        f"{'all + embeddings' if args.layers is None else sorted(args.layers)}; load it with "
        "AutoModelForCausalLM.from_pretrained)"
    )
    print(f"check, reloaded from disk (refusal phrases {c['refusal_phrases']}):")
    for name in ("harmful", "harmless"):
        print(
            f"  {name} ({c['n_prompts'][name]} prompts) refusal rate: {c['refusal_rate'][name]:.0%} "
            f"(original {c['reference_refusal_rate'][name]:.0%})"
        )
    print(f"  KL to the original on harmless prompts (first token): {c['kl_harmless']:.4f}")
    if c["text_loss"]:
        t = c["text_loss"]
        print(f"  plain-text loss {t['reference']:.4f} -> {t['model']:.4f}")
    print(f"recorded in {result.out}/{EXPORT_FILE}")
    return 0
