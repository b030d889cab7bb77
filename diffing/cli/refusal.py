"""``diffing refusal {extract,eval,export,compare}``: refusal directions (Arditi et al. 2024)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffing.cli.common import (
    add_out_arg,
    add_pair_args,
    add_remote_arg,
    device,
    load_pair_from_args,
    nonnegative_int,
    out_dir,
    positive_int,
    print_json,
    strength,
    template_file,
)
from diffing.cli.options import add_options
from diffing.refusal.config import RefusalConfig


def _model_args(p: argparse.ArgumentParser) -> None:
    """``MODEL`` plus the loading options of a pair command (the same PairOptions fields)."""
    from diffing.pair_options import LOAD_FIELDS, PairOptions

    p.add_argument("model", help="chat model: Hugging Face id or local folder")
    loading = tuple(f for f in LOAD_FIELDS if f != "adapter")  # one model: no adapter on top
    add_options(p, PairOptions, only=loading, types={"device": device}, suppress=False)


_SPLIT_FIELDS = ("n_train", "n_val", "n_test")
"""RefusalConfig fields of the train/validation/test split (commands that split a file)."""
_RUN_FIELDS = ("batch_size", "max_new_tokens")
"""RefusalConfig fields every refusal command takes."""
_SELECT_FIELDS = ("kl_threshold", "induce_threshold", "max_layer_fraction", "filter_train")
"""RefusalConfig fields of candidate selection."""
_FLAGS = {"filter_train": ("--no-filter",)}
"""RefusalConfig fields whose flag is not the field's name."""


def _prompt_args(p: argparse.ArgumentParser, *, val: bool = True) -> None:
    whole = "" if val else ", used whole: give held-out prompts, not extract's train file"
    p.add_argument(
        "--harmful",
        required=True,
        help=f"prompts the model should refuse (txt/jsonl/json/csv{whole})",
    )
    p.add_argument("--harmless", required=True, help=f"ordinary prompts (same formats{whole})")
    if val:
        for kind in ("harmful", "harmless"):
            for held in ("val", "test"):
                use = "selection" if held == "val" else "evaluation"
                p.add_argument(
                    f"--{kind}-{held}",
                    help=f"held-out {kind} prompts for {use} (default: split off --{kind})",
                )
        add_options(p, RefusalConfig, only=_SPLIT_FIELDS, title="split")
    add_options(
        p,
        RefusalConfig,
        only=("refusal_tokens", "refusal_phrases", "template", *_RUN_FIELDS),
        types={"template": template_file, "refusal_tokens": str},
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        help="use at most this many prompts per set (before any split)",
    )


def _select_args(p: argparse.ArgumentParser) -> None:
    add_options(p, RefusalConfig, only=_SELECT_FIELDS, flags=_FLAGS, title="selection")


def register(sub) -> None:
    """Add the ``refusal`` command group."""
    from diffing.cli.refusal_eval import run_eval, run_export

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
    add_out_arg(
        p,
        "refusal extract",
        "output folder (direction.safetensors, candidates.json, scores.png, test_eval.json)",
    )
    p.set_defaults(handler=run_extract)

    p = rsub.add_parser(
        "eval",
        help="refusal rates of MODEL on its own (KL to --reference), or of a direction: baseline vs "
        "ablation vs addition",
    )
    _model_args(p)
    add_remote_arg(p, "the model")
    _prompt_args(p, val=False)
    p.add_argument(
        "--direction",
        help="folder or file written by `refusal extract`: evaluate ablating and adding it "
        "(default: measure MODEL as it is)",
    )
    p.add_argument(
        "--reference",
        help="without --direction: the model MODEL was made from; gives the KL to it on harmless prompts, "
        "its refusal rates, and the refusal phrases when MODEL no longer refuses",
    )
    p.add_argument(
        "--text", help="plain-text file (one document per line, or JSONL) for the loss change"
    )
    p.add_argument(
        "--strength",
        type=strength,
        default=1.0,
        help="with --direction: ablation / addition strength, finite (default 1)",
    )
    add_out_arg(
        p, "refusal eval", "output folder for eval.json and eval.md (not the direction's folder)"
    )
    p.set_defaults(handler=run_eval)

    p = rsub.add_parser(
        "export",
        help="write a weight-orthogonalised copy of MODEL (HF folder) and check it on held-out prompts",
    )
    _model_args(p)
    _prompt_args(p, val=False)
    p.add_argument("--direction", required=True, help="folder or file written by `refusal extract`")
    p.add_argument(
        "--strength",
        type=strength,
        default=1.0,
        help="s in W <- W - s r r^T W: 1 removes the direction from every write (default), "
        "0.5 half of it, 2 flips it; finite",
    )
    p.add_argument(
        "--layers",
        type=nonnegative_int,
        nargs="+",
        help="only these blocks' attention and MLP writes (embeddings then untouched; default: all "
        "blocks and the embeddings)",
    )
    p.add_argument("--text", help="plain-text file: the check also reports the loss change")
    p.add_argument(
        "--out",
        type=out_dir,
        required=True,
        help="folder for the new model (never the input model folder or inside it)",
    )
    p.set_defaults(handler=run_export)

    p = rsub.add_parser("compare", help="base vs fine-tuned refusal directions on the same prompts")
    add_pair_args(p)
    add_remote_arg(p, "both models")
    _prompt_args(p)
    _select_args(p)
    add_out_arg(p, "refusal compare", "output folder (compare.json, both directions)")
    p.set_defaults(handler=run_compare)
    group.set_defaults(handler=lambda args: group.print_help() or 2)


def _config(args):
    from diffing.cli.options import config_from_args

    cfg = config_from_args(args, RefusalConfig)
    if "max_new_tokens" in vars(args):  # the phrases are inferred from completions this long
        cfg.phrase_tokens = cfg.max_new_tokens
    return cfg


def _load(args, ref: str | None = None):
    from diffing.models import load_model

    return load_model(
        ref or args.model,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        remote=getattr(args, "remote", False),
    )


def _read(path, limit):
    from diffing.refusal.io import read_prompts

    return read_prompts(path)[: limit or None]


def _sets(args, cfg) -> dict:
    """``{"harmful": Split, "harmless": Split}`` by ``split_set``; prints what the split gave."""
    from diffing.refusal.io import check_sets, split_set

    full = {name: _read(getattr(args, name), args.limit) for name in ("harmful", "harmless")}
    check_sets(full["harmful"], full["harmless"])  # before splitting: the clearer error
    out = {}
    for name in ("harmful", "harmless"):
        held = {
            kind: _read(f, args.limit) if (f := getattr(args, f"{name}_{kind}", None)) else None
            for kind in ("val", "test")
        }
        out[name] = split_set(full[name], cfg, name, **held)
    print(
        f"prompts (train/val/test): harmful {out['harmful'].counts()}, "
        f"harmless {out['harmless'].counts()} (seed {cfg.seed})"
    )
    return out


def run_extract(args: argparse.Namespace) -> int:
    """Handler of ``diffing refusal extract``."""
    from diffing.refusal.pipeline import extract_direction

    lm, tok, arch = _load(args)
    cfg = _config(args)
    sets = _sets(args, cfg)
    h, s = sets["harmful"], sets["harmless"]
    result = extract_direction(
        lm,
        tok,
        arch,
        h.train,
        s.train,
        h.val,
        s.val,
        config=cfg,
        model_ref=args.model,
        out=args.out,
        harmful_test=h.test,
        harmless_test=s.test,
    )
    d = result.direction
    print(
        f"selected layer {d.layer} (block input), position {d.position}: bypass {d.scores['bypass']:.2f} "
        f"(baseline {d.scores['baseline_harmful']:.2f}), induce {d.scores['induce']:.2f}, KL {d.scores['kl']:.4f}"
    )
    if result.evaluation is not None:
        r = result.evaluation.report
        rate, n = r["refusal_rate"], r["n_prompts"]
        for name in ("harmful", "harmless"):
            print(
                f"test {name} ({n[name]} prompts) refusal rate: baseline {rate[name]['baseline']:.0%}, "
                f"ablated {rate[name]['ablation']:.0%}, added {rate[name]['addition']:.0%}"
            )
        print(f"test KL on harmless prompts (baseline || ablated): {r['kl_harmless']:.4f}")
    print(
        f"refusal tokens {d.refusal_tokens}, phrases {d.refusal_phrases}; wrote {args.out}/direction.safetensors, "
        "candidates.json, scores.png" + (", test_eval.json" if result.evaluation else "")
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Handler of ``diffing refusal compare``."""
    from diffing.refusal.compare import compare_pair
    from diffing.refusal.io import write_json

    pair = load_pair_from_args(args)
    cfg = _config(args)
    sets = _sets(args, cfg)
    h, s = sets["harmful"], sets["harmless"]
    if not h.test or not s.test:
        from diffing.errors import DiffingError

        raise DiffingError(
            "compare needs test prompts: give --n-test > 0 or --harmful-test/--harmless-test"
        )
    result = compare_pair(pair, h.train, s.train, h.val, s.val, h.test, s.test, config=cfg)
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
