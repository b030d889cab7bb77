"""``diffing amplify BASE FINETUNED --out DIR``: logit-difference amplification over a sweep of α.

A thin wrapper over :func:`diffing.lens.amplify.amplify`; its flags are generated
from :class:`diffing.lens.amplify_config.AmplifyConfig`.
"""

from __future__ import annotations

import argparse

from diffing.cli.common import add_out_arg, add_pair_args, template_file
from diffing.cli.options import add_options, config_from_args
from diffing.lens.amplify_config import AmplifyConfig


def register(sub) -> argparse.ArgumentParser:
    """Add ``amplify`` to the top-level subparsers."""
    p = sub.add_parser(
        "amplify",
        help="generate from logits_ft + α (logits_ft - logits_base) and count a target behaviour",
        description="Logit-difference amplification (Aranguri & McGrath 2025): generate from the "
        "fine-tuned model's logits pushed further along their difference from the base's, at each "
        "--alphas value (0 is the fine-tuned model alone), and from the base alone; with --target, "
        "count the completions that contain it. --form weights generates from W_base + (1+α)ΔW "
        "instead (exact for adapters). Writes amplify.json (and amplify_rates.png with --target) "
        "into --out.",
    )
    add_pair_args(p)
    add_out_arg(p, "amplify", "output folder")
    p.add_argument(
        "--prompts",
        default=None,
        help="prompt file (.txt/.json/.jsonl/.csv or hf:NAME; default: the built-in chat prompts)",
    )
    p.add_argument(
        "--template", type=template_file, help="Jinja chat template file, for models without one"
    )
    add_options(p, AmplifyConfig, title="amplification")
    p.set_defaults(handler=run_amplify)
    return p


def run_amplify(args: argparse.Namespace) -> int:
    """Handler of ``diffing amplify``."""
    from diffing.cli.common import load_pair_from_args
    from diffing.lens.amplify import amplify, save_amplify, section

    cfg = config_from_args(args, AmplifyConfig)
    prompts = None
    if args.prompts:
        from diffing.data import load_prompts

        prompts = load_prompts(args.prompts)
    pair = load_pair_from_args(args)
    result = amplify(pair, prompts, cfg, template=args.template, progress=True)
    path = save_amplify(result, args.out)
    sec = section(result, examples=1)
    print(f"{result.n_prompts} prompts x {cfg.samples} sample(s), form {cfg.form}")
    for row in sec["rates"]:
        where = "base alone" if row["alpha"] is None else f"α = {row['alpha']:g}"
        rate = "" if row["rate"] is None else f": {row['rate']:.1%} contain {cfg.target!r}"
        print(f"  {where} ({row['model']}){rate}")
    for ex in sec["examples"]:
        print(
            f"  e.g. at α = {sec['best_alpha']:g}: {ex['prompt']!r} -> {ex['completion'][:120]!r}"
        )
    for note in result.notes:
        print(f"  note: {note}")
    print(f"wrote {path}")
    return 0
