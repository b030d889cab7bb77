"""``diffing refusal {extract,eval,export,compare}``: refusal directions (Arditi et al. 2024)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffing.cli.common import (
    add_pair_args,
    add_remote_arg,
    device,
    finite_float,
    load_pair_from_args,
    nonnegative_float,
    nonnegative_int,
    out_dir,
    positive_int,
    print_json,
    probability,
    strength,
)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="chat model: Hugging Face id or local folder")
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16 or auto (default: float32 on CPU)"
    )
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:N, or auto")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the checkpoint"
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow .bin/.pt weights (loaded with weights_only=True)",
    )


def _prompt_args(p: argparse.ArgumentParser, *, val: bool = True) -> None:
    p.add_argument(
        "--harmful", required=True, help="prompts the model should refuse (txt/jsonl/json/csv)"
    )
    p.add_argument("--harmless", required=True, help="ordinary prompts (same formats)")
    if val:
        p.add_argument(
            "--harmful-val",
            help="held-out harmful prompts for selection (default: split off --harmful)",
        )
        p.add_argument(
            "--harmless-val",
            help="held-out harmless prompts for selection (default: split off --harmless)",
        )
        p.add_argument(
            "--n-train",
            type=positive_int,
            default=128,
            help="most train prompts per set (default 128)",
        )
        p.add_argument(
            "--n-val",
            type=nonnegative_int,
            default=32,
            help="validation prompts per set split off (default 32)",
        )
    p.add_argument(
        "--refusal-tokens", nargs="+", help="refusal token ids or strings (default: inferred)"
    )
    p.add_argument(
        "--refusal-phrases", nargs="+", help="substrings marking a refusal (default: inferred)"
    )
    p.add_argument("--template", help="Jinja chat template file, for models without one")
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="prompts per forward pass (default 32)"
    )
    p.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=24,
        help="greedy tokens per completion (default 24)",
    )
    p.add_argument("--limit", type=positive_int, help="use at most this many prompts per set")


def _select_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kl-threshold",
        type=nonnegative_float,
        default=0.1,
        help="discard candidates with KL above this (0.1)",
    )
    p.add_argument(
        "--induce-threshold",
        type=finite_float,
        default=0.0,
        help="discard candidates inducing less (0)",
    )
    p.add_argument(
        "--max-layer-fraction",
        type=probability,
        default=0.8,
        help="discard layers past this fraction (0.8)",
    )
    p.add_argument(
        "--no-filter",
        action="store_true",
        help="keep train prompts the model does not refuse / refuses",
    )


def register(sub) -> None:
    """Add the ``refusal`` command group."""
    group = sub.add_parser(
        "refusal", help="refusal directions: extract, evaluate, export, compare base vs chat"
    )
    rsub = group.add_subparsers(dest="refusal_command", metavar="SUBCOMMAND")

    p = rsub.add_parser(
        "extract", help="difference-in-means candidates, selection, direction.safetensors"
    )
    _model_args(p)
    add_remote_arg(p, "the model")
    _prompt_args(p)
    _select_args(p)
    p.add_argument(
        "--out",
        type=out_dir,
        required=True,
        help="output folder (direction.safetensors, candidates.json, scores.png)",
    )
    p.set_defaults(handler=run_extract)

    p = rsub.add_parser("eval", help="refusal rates and KL: baseline vs ablation vs addition")
    _model_args(p)
    add_remote_arg(p, "the model")
    _prompt_args(p, val=False)
    p.add_argument("--direction", required=True, help="folder or file written by `refusal extract`")
    p.add_argument(
        "--text", help="plain-text file (one document per line, or JSONL) for the loss change"
    )
    p.add_argument(
        "--strength", type=strength, default=1.0, help="ablation / addition strength (default 1)"
    )
    p.add_argument(
        "--out",
        type=out_dir,
        help="output folder for eval.json and eval.md (default: the direction's folder)",
    )
    p.set_defaults(handler=run_eval)

    p = rsub.add_parser("export", help="write a weight-orthogonalised copy of MODEL (HF folder)")
    _model_args(p)
    p.add_argument("--direction", required=True, help="folder or file written by `refusal extract`")
    p.add_argument("--out", type=out_dir, required=True, help="folder for the new model")
    p.set_defaults(handler=run_export)

    p = rsub.add_parser("compare", help="base vs fine-tuned refusal directions on the same prompts")
    add_pair_args(p)
    add_remote_arg(p, "both models")
    _prompt_args(p)
    _select_args(p)
    p.add_argument("--harmful-test", help="held-out harmful prompts (default: split off --harmful)")
    p.add_argument(
        "--harmless-test", help="held-out harmless prompts (default: split off --harmless)"
    )
    p.add_argument(
        "--n-test",
        type=positive_int,
        default=32,
        help="test prompts per set split off (default 32)",
    )
    p.add_argument(
        "--out", type=out_dir, required=True, help="output folder (compare.json, both directions)"
    )
    p.set_defaults(handler=run_compare)
    group.set_defaults(handler=lambda args: group.print_help() or 2)


def _config(args, tokenizer=None):
    from diffing.errors import DiffingError
    from diffing.refusal.config import RefusalConfig
    from diffing.refusal.scores import parse_refusal_tokens

    cfg = RefusalConfig(
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        phrase_tokens=args.max_new_tokens,
    )
    for name in ("n_train", "n_val", "kl_threshold", "induce_threshold", "max_layer_fraction"):
        if getattr(args, name, None) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.filter_train = not getattr(args, "no_filter", False)
    if args.template:
        path = Path(args.template).expanduser()
        if not path.is_file():
            raise DiffingError(
                f"template file {args.template!r} does not exist; give a Jinja chat template file"
            )
        cfg.template = path.read_text()
    if args.refusal_tokens and tokenizer is not None:
        cfg.refusal_tokens = parse_refusal_tokens(tokenizer, args.refusal_tokens)
    if args.refusal_phrases:
        cfg.refusal_phrases = list(args.refusal_phrases)
    return cfg


def _load(args):
    from diffing.models import load_model

    return load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        remote=getattr(args, "remote", False),
    )


def _sets(args, cfg, *, n_test: int = 0) -> dict[str, list[str]]:
    """train / val (/ test) prompts of both sets, from the given files or split off the main ones."""
    from diffing.refusal.io import check_sets, read_prompts, split_prompts

    out: dict[str, list[str]] = {}
    for name in ("harmful", "harmless"):
        prompts = read_prompts(getattr(args, name))[: args.limit or None]
        test_file = getattr(args, f"{name}_test", None)
        if n_test and test_file:
            out[f"{name}_test"] = read_prompts(test_file)[: args.limit or None]
        elif n_test:
            split = split_prompts(
                prompts,
                len(prompts),
                n_test,
                min_train=cfg.n_val + cfg.min_train,
                seed=cfg.seed + 1,
                name=name,
            )
            out[f"{name}_test"], prompts = split.val, split.train
        val_file = getattr(args, f"{name}_val", None)
        if val_file:
            out[f"{name}_val"] = read_prompts(val_file)[: args.limit or None]
            out[f"{name}_train"] = prompts[: cfg.n_train]
            if len(out[f"{name}_train"]) < cfg.min_train:
                split_prompts(
                    prompts, cfg.n_train, 0, min_train=cfg.min_train, seed=cfg.seed, name=name
                )
        else:
            split = split_prompts(
                prompts, cfg.n_train, cfg.n_val, min_train=cfg.min_train, seed=cfg.seed, name=name
            )
            out[f"{name}_train"], out[f"{name}_val"] = split.train, split.val
    check_sets(out["harmful_train"], out["harmless_train"])
    return out


def run_extract(args: argparse.Namespace) -> int:
    """Handler of ``diffing refusal extract``."""
    from diffing.refusal.pipeline import extract_direction

    lm, tok, arch = _load(args)
    cfg = _config(args, tok)
    sets = _sets(args, cfg)
    result = extract_direction(
        lm,
        tok,
        arch,
        sets["harmful_train"],
        sets["harmless_train"],
        sets["harmful_val"],
        sets["harmless_val"],
        config=cfg,
        model_ref=args.model,
        out=args.out,
    )
    d = result.direction
    print(
        f"selected layer {d.layer} (block input), position {d.position}: bypass {d.scores['bypass']:.2f} "
        f"(baseline {d.scores['baseline_harmful']:.2f}), induce {d.scores['induce']:.2f}, KL {d.scores['kl']:.4f}"
    )
    print(
        f"refusal tokens {d.refusal_tokens}, phrases {d.refusal_phrases}; wrote {args.out}/direction.safetensors, "
        "candidates.json, scores.png"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``diffing refusal eval``."""
    from diffing.refusal.evaluate import eval_markdown, evaluate
    from diffing.refusal.io import Direction, check_sets, read_prompts, write_json

    direction = Direction.load(args.direction)
    lm, tok, arch = _load(args)
    direction.check_model(lm._module.config, what=repr(args.model))
    cfg = _config(args, tok)
    harmful = read_prompts(args.harmful)[: args.limit or None]
    harmless = read_prompts(args.harmless)[: args.limit or None]
    check_sets(harmful, harmless)
    text = read_prompts(args.text) if args.text else None
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
    out = Path(
        args.out
        or (args.direction if Path(args.direction).is_dir() else Path(args.direction).parent)
    )
    write_json(out / "eval.json", result.report)
    (out / "eval.md").write_text(eval_markdown(result.report))
    print(eval_markdown(result.report).split("## Example")[0].rstrip())
    print(f"wrote {out}/eval.json and eval.md")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``diffing refusal export``."""
    from diffing.refusal.io import Direction
    from diffing.refusal.orthogonalize import export_orthogonalized

    direction = Direction.load(args.direction)
    lm, tok, _ = _load(args)
    out = export_orthogonalized(lm._module, tok, direction, args.out, source=args.model)
    print(
        f"wrote the orthogonalised model to {out} (load it with AutoModelForCausalLM.from_pretrained)"
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Handler of ``diffing refusal compare``."""
    from diffing.refusal.compare import compare_pair
    from diffing.refusal.io import write_json

    pair = load_pair_from_args(args)
    cfg = _config(args, pair.tokenizer)
    sets = _sets(args, cfg, n_test=args.n_test)
    result = compare_pair(
        pair,
        sets["harmful_train"],
        sets["harmless_train"],
        sets["harmful_val"],
        sets["harmless_val"],
        sets["harmful_test"],
        sets["harmless_test"],
        config=cfg,
    )
    out = Path(args.out)
    write_json(out / "compare.json", result.report)
    result.finetuned_direction.save(out / "finetuned" / "direction.safetensors")
    result.base_direction.save(out / "base" / "direction.safetensors")
    r = result.report
    print_json(
        {k: r[k] for k in ("selected", "cosine_selected", "cosine_by_layer", "probe_accuracy_base")}
        | {"refusal_rate": r["base_direction_ablates_finetuned"]["refusal_rate"]}
    )
    print(f"wrote {out}/compare.json")
    return 0
