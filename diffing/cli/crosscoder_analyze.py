"""``diffing crosscoder analyze CROSSCODER --store STORE --out DIR``: read a trained crosscoder.

Registered into the ``crosscoder`` group by :func:`add_analyze` (called from
``diffing/cli/crosscoder.py``). A thin wrapper over
:func:`diffing.crosscoder.analyze.analyze_crosscoder`.
"""

from __future__ import annotations

import argparse

from diffing.cli.common import add_out_arg, add_remote_arg, integer, positive_int
from diffing.cli.options import add_options, config_from_args
from diffing.crosscoder.analysis_config import AnalysisConfig, ScalingThresholds


def add_analyze(actions) -> argparse.ArgumentParser:
    """Add ``crosscoder analyze`` to the group's subparsers."""
    p = actions.add_parser(
        "analyze",
        help="per-latent statistics, Latent Scaling, top contexts, logit lens and a causal check",
        description="Classify every latent by relative decoder norm, run Latent Scaling on the chat-only "
        "and base-only latents, collect top-activating contexts and logit lenses, and (with "
        "--causal-texts) measure how much of KL(fine-tuned || base-patched) latent sets close. "
        "Writes latents.json, summary.json and PNG figures into --out.",
    )
    p.add_argument("crosscoder", help="crosscoder folder (ours, or dictionary_learning layout)")
    p.add_argument("--store", required=True, help="the activation store it was trained on")
    add_out_arg(p, "crosscoder analyze", "output folder")
    p.add_argument(
        "--top",
        type=positive_int,
        default=20,
        help="top-activating contexts kept per latent (default 20)",
    )
    p.add_argument("--layer", type=integer, default=None, help="layer (default: the crosscoder's)")
    p.add_argument("--base", default=None, help="base model (default: the one named in the store)")
    p.add_argument(
        "--finetuned", default=None, help="fine-tuned model (default: the one named in the store)"
    )
    p.add_argument(
        "--causal-texts",
        default=None,
        help='.jsonl of chat transcripts ({"messages": [...]}) for the causal check',
    )
    p.add_argument(
        "--latents",
        type=integer,
        nargs="+",
        default=None,
        help="latent indices that also get contexts and logit lenses",
    )
    add_options(p, AnalysisConfig, exclude=("classes", "scaling", "causal"), title="analysis")
    add_options(p, ScalingThresholds, only=("min_active",), title="Latent Scaling")
    add_remote_arg(p, "both models for the logit lens and the causal check")
    p.set_defaults(handler=run_analyze)
    return p


def run_analyze(args: argparse.Namespace) -> int:
    """Handler of ``diffing crosscoder analyze``."""
    from diffing.crosscoder.analyze import analyze_crosscoder
    from diffing.errors import DiffingError

    pair = None
    if args.base or args.finetuned:
        if not (args.base and args.finetuned):
            raise DiffingError(
                "give both --base and --finetuned (or neither: the store's models are used)"
            )
        from diffing.models import ModelPair

        pair = ModelPair.load(args.base, args.finetuned, remote=args.remote)
    elif args.remote:  # the store names its models; load them config-only, for NDIF
        from diffing.crosscoder.analyze import pair_from_store
        from diffing.store import ActivationStore

        pair = pair_from_store(ActivationStore.open(args.store), remote=True)
    latents = args.latents
    cfg = config_from_args(args, AnalysisConfig)
    cfg.scaling = config_from_args(args, ScalingThresholds)
    res = analyze_crosscoder(args.crosscoder, args.store, args.out, pair=pair, top=args.top,
                             causal_texts=args.causal_texts, layer=args.layer, config=cfg, latents=latents)  # fmt: skip
    s = res.summary
    print(
        f"analysed {s['n_latents']} latents over {s['n_tokens']} tokens (layer {s['layer']}): {s['classes']}"
    )
    for name, counts in s["latent_scaling"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    b = s["decoder_bias"]
    lens = " ".join(repr(t["token"]) for t in (b.get("logit_lens") or {}).get("finetuned", [])[:5])
    print(
        f"  decoder-bias shift (in no latent): norm {b['norm']}, {b['constant_fraction']} of the difference's "
        f"energy is constant" + (f"; promotes {lens}" if lens else "")
    )
    if s["causal"]:
        closed = ", ".join(f"{k} {v}" for k, v in s["causal"]["fraction_closed"].items())
        print(f"  KL closed (of {s['causal']['kl_full']:.4g} nats): {closed}")
    for note in s["notes"]:
        print(f"  note: {note}")
    print(f"wrote {res.out_dir}/latents.json, summary.json and figures")
    return 0
