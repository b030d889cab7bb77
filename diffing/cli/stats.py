"""``diffing stats BASE FINETUNED --out DIR``: weight, activation, KL and ADL statistics of a pair."""

from __future__ import annotations

import argparse

from diffing.cli.common import add_out_arg, add_pair_args, add_remote_arg, token_count
from diffing.cli.options import add_options
from diffing.stats.config import StatsConfig, StatsInputs

OFF_FLAGS = {"weights": "--no-weights"}
"""StatsConfig booleans (on by default) and the flag that turns each off."""


def register(sub) -> None:
    """Add the ``stats`` command."""
    p = sub.add_parser(
        "stats",
        help="feature-change statistics: weights, activations, KL, Activation Difference Lens",
        description="Compare a pair on the same tokens: which weights moved (relative change, effective rank), "
        "how far each layer's activations moved (by token role), per-token KL of the outputs, and the "
        "Activation Difference Lens. Writes DIR/stats.json (fields: docs/stats.md) and PNG figures.",
    )
    add_pair_args(p)
    add_out_arg(p, "stats", "output folder for stats.json and the figures")
    add_options(p, StatsInputs, types={"tokens": token_count}, title="data and layers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_remote_arg(p, "both models (top-k KL; weight statistics from sketches)")
    add_options(p, StatsConfig, off_flags=OFF_FLAGS, title="statistics (fields of StatsConfig)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``diffing stats``."""
    from diffing.cli.common import load_pair_from_args
    from diffing.cli.options import config_from_args
    from diffing.data.corpus import read_documents
    from diffing.stats import compute_stats

    cfg = config_from_args(args, StatsConfig)
    inputs = config_from_args(args, StatsInputs)
    docs = read_documents(inputs.data, field=inputs.text_field)
    pair = load_pair_from_args(args)
    result = compute_stats(
        pair,
        texts=docs.texts,
        chats=docs.chats,
        tokens=inputs.tokens,
        layers=inputs.layers,
        adl_layer=inputs.adl_layer,
        out_dir=args.out,
        config=cfg,
        progress=not args.no_progress,
    )
    print(_summary(result, args.out))
    return 0


def _summary(result: dict, out: str) -> str:
    """A few lines for the terminal; everything else is in stats.json."""
    lines = [
        f"tokens: {result['tokens']['total']} (text {result['tokens']['text']}, chat {result['tokens']['chat']})"
    ]
    mods = result.get("weights", {}).get("modules", [])
    if mods:
        lines.append("most changed weights (relative change, effective rank):")
        for m in mods[:5]:
            rel = m["relative_change"]
            rel = "inf" if rel is None or rel == float("inf") else f"{rel:.4g}"
            if m.get("relative_error") is not None:  # sketched (remote) weights: an estimate
                rel += f" ± {100 * m['relative_error']:.0f}%"
            lines.append(f"  {rel:>10}  {str(m['effective_rank']):>5}  {m['name']}")
    kl = result["kl"]
    lines.append(
        "mean KL(ft||base): "
        + f"{kl.get('mean', 0):.4g}"
        + "".join(f", {kind} {kl[kind]['mean']:.4g}" for kind in ("text", "chat") if kind in kl)
    )
    adl = result["adl"]
    promoted = ", ".join(repr(t["token"]) for t in adl["promoted_tokens"][:8])
    lines.append(f"ADL layer {adl['layer']}: {promoted}")
    lines.append(f"wrote {out}/stats.json and figures")
    return "\n".join(lines)
