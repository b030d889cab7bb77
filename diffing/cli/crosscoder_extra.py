"""``diffing crosscoder diff-sae STORE --out DIR`` and ``diffing crosscoder refusal-link CROSSCODER ...``.

Registered into the ``crosscoder`` group by :func:`add_extra` (called from
``diffing/cli/crosscoder.py``). Thin wrappers over :mod:`diffing.crosscoder.diff_sae`,
:mod:`diffing.crosscoder.diff_sae_analysis` and :mod:`diffing.crosscoder.refusal_link`;
flags are generated from their config dataclasses. The refusal direction file is read here
(tensor ``direction``, metadata ``layer`` = the block whose input it is at), so the method
itself never depends on the refusal package.
"""

from __future__ import annotations

import argparse

from diffing.cli.common import add_out_arg, cli_message, device
from diffing.cli.options import add_options, config_from_args
from diffing.crosscoder.extra_config import DiffSAEConfig, RefusalLinkConfig

_TRAIN = ("layer", "dict_size", "expansion", "k", "steps", "tokens", "batch_size", "lr", "auxk_alpha",
          "dead_tokens", "seed", "scale", "scale_tokens", "checkpoint_every")  # fmt: skip


def add_extra(actions) -> None:
    """Add ``crosscoder diff-sae`` and ``crosscoder refusal-link`` to the group's subparsers."""
    add_diff_sae(actions)
    add_refusal_link(actions)


def add_diff_sae(actions) -> argparse.ArgumentParser:
    """Add ``crosscoder diff-sae``."""
    p = actions.add_parser(
        "diff-sae",
        help="train and read a BatchTopK SAE on the activation differences x_ft - x_base",
        description="Train a diff-SAE (a one-model BatchTopK crosscoder on s * (x_ft - x_base)) on one layer of "
        "a store, then read it: latent frequencies and shares of the difference, top contexts, logit lenses "
        "through the fine-tuned model, and (with --crosscoder) the max cosine of each latent with the "
        "crosscoder's chat-only decoder differences. Writes the SAE (crosscoder.safetensors, config.json, "
        "metrics.json), diff_sae.json and diff_sae.png into --out; --resume continues a stopped training.",
    )
    p.add_argument("store", help="activation store folder (from `diffing harvest`)")
    add_out_arg(p, "crosscoder diff-sae", "output folder")
    p.add_argument(
        "--crosscoder", default=None, help="a crosscoder of the same layer to compare with"
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--analyze-only", action="store_true", help="read the diff-SAE already in --out")
    p.add_argument(
        "--no-models", action="store_true", help="skip the logit lens (no model loading)"
    )
    p.add_argument(
        "--device", type=device, default=None, help="cpu or cuda (default: cuda if available)"
    )
    add_options(p, DiffSAEConfig, only=_TRAIN, title="training")
    add_options(p, DiffSAEConfig, exclude=_TRAIN, title="analysis")
    p.set_defaults(handler=run_diff_sae)
    return p


def _device(arg: str | None) -> str:
    import torch

    return arg or ("cuda" if torch.cuda.is_available() else "cpu")


def run_diff_sae(args: argparse.Namespace) -> int:
    """Handler of ``diffing crosscoder diff-sae``."""
    from pathlib import Path

    from diffing.crosscoder.analyze import pair_from_store
    from diffing.crosscoder.diff_sae import train_diff_sae
    from diffing.crosscoder.diff_sae_analysis import analyze_diff_sae
    from diffing.errors import DiffingError
    from diffing.store import ActivationStore

    cfg = config_from_args(args, DiffSAEConfig)
    store = ActivationStore.open(args.store)
    out = Path(args.out)
    if not args.analyze_only:
        res = train_diff_sae(store, cfg, out, resume=args.resume, device=_device(args.device),
                             progress=not args.quiet)  # fmt: skip
        m = res.metrics
        print(f"diff-SAE saved to {out}: FVU {m.get('fvu', [0])[0]:.3f}; L0 {m.get('l0', 0):.1f}; "
              f"dead {100 * m.get('dead_frac', 0):.1f}%")  # fmt: skip
    pair = None
    if not args.no_models:
        try:
            pair = pair_from_store(store)
        except DiffingError as err:  # the lens is optional: say why it is missing
            print(f"note: logit lens skipped: {cli_message(err)}")
    res = analyze_diff_sae(out, store, out, pair=pair, crosscoder=args.crosscoder, config=cfg)
    s = res.summary
    print(f"read {s['n_tokens']} tokens (layer {s['layer']}): FVU {s['fvu']}, L0 {s['l0']}, "
          f"dead {s['dead_fraction']}; {s['latents_for_half_the_difference']} latents carry half the difference")  # fmt: skip
    if s["comparison"]:
        c = s["comparison"]
        print(f"  {c['matched']} latents match one of the crosscoder's {c['chat_only_latents']} chat-only "
              f"latents (|cos| >= {c['match_cosine']})")  # fmt: skip
    print(f"wrote {out}/diff_sae.json" + (" and diff_sae.png" if cfg.figures else ""))
    return 0


def add_refusal_link(actions) -> argparse.ArgumentParser:
    """Add ``crosscoder refusal-link``."""
    p = actions.add_parser(
        "refusal-link",
        help="which crosscoder latents carry a refusal direction, and does ablating them remove refusal",
        description="Cosine of every latent's decoder difference d_f - d_b (and of d_f) with a refusal direction "
        "at the crosscoder's layer, in raw units; names the latents with |cos| >= --threshold with their "
        "Δ, Latent Scaling flag (--latents-json), contexts and logit lens; with --harmful, compares the "
        "fine-tuned model's refusal with those latents removed, with the direction ablated and with random "
        "latents removed at that layer. Writes refusal_link.json and refusal_link.png into --out.",
    )
    p.add_argument("crosscoder", help="crosscoder folder")
    p.add_argument("--direction", required=True,
                   help="direction.safetensors (or its folder): tensor 'direction', metadata 'layer' = block input")  # fmt: skip
    p.add_argument(
        "--store", required=True, help="the activation store the crosscoder was trained on"
    )
    add_out_arg(p, "crosscoder refusal-link", "output folder")
    p.add_argument(
        "--harmful", default=None, help="harmful prompts (.txt/.jsonl/.json/.csv) for the ablation"
    )
    p.add_argument("--refusal-tokens", nargs="+", default=None,
                   help="refusal token ids, or strings whose first token starts a refusal (default: the direction file's refusal_tokens)")  # fmt: skip
    p.add_argument(
        "--latents-json",
        default=None,
        help="a crosscoder analysis latents.json (Latent Scaling flags)",
    )
    p.add_argument(
        "--no-models", action="store_true", help="cosines only: no contexts' text, lens or ablation"
    )
    add_options(p, RefusalLinkConfig)
    p.set_defaults(handler=run_refusal_link)
    return p


def read_direction(path: str):
    """``(direction [d], block-input layer, refusal token ids)`` from a direction file or its folder."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    from diffing.errors import DiffingError

    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "direction.safetensors"
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensor = f.get_tensor("direction").float()
        return (
            tensor,
            int(meta["layer"]),
            [int(t) for t in json.loads(meta.get("refusal_tokens", "[]"))],
        )
    except Exception as err:
        raise DiffingError(
            f"cannot read a refusal direction from {str(file)!r} ({type(err).__name__}: {err}); "
            "pass the direction.safetensors written by `diffing refusal extract`"
        ) from err


def run_refusal_link(args: argparse.Namespace) -> int:
    """Handler of ``diffing crosscoder refusal-link``."""
    from diffing.crosscoder.analyze import pair_from_store
    from diffing.crosscoder.refusal_link import refusal_link
    from diffing.errors import DiffingError
    from diffing.store import ActivationStore

    cfg = config_from_args(args, RefusalLinkConfig)
    direction, block, tokens = read_direction(args.direction)
    store = ActivationStore.open(args.store)
    pair = None if args.no_models else pair_from_store(store)
    if args.refusal_tokens and pair is not None:
        from diffing.refusal.scores import parse_refusal_tokens

        tokens = parse_refusal_tokens(pair.tokenizer, args.refusal_tokens)
    harmful = None
    if args.harmful and pair is not None:
        from diffing.data import load_prompts

        harmful = [str(p) for p in load_prompts(args.harmful) if str(p).strip()]
        if not tokens:
            raise DiffingError("the ablation needs refusal tokens: pass --refusal-tokens (e.g. the word a refusal starts with)")  # fmt: skip
    res = refusal_link(args.crosscoder, direction, block - 1, store=store, pair=pair, harmful=harmful,
                       refusal_tokens=tokens, analysis_latents=args.latents_json, config=cfg, out_dir=args.out)  # fmt: skip
    b = res.summary["best"]
    print(f"layer {block - 1} (input of block {block}): {len(res.refusal_latents)} latents with |cos| >= "
          f"{cfg.threshold}; best latent {b['latent']}: cos(d_f - d_b, r) {b['cos_difference']}, "
          f"cos(d_f, r) {b['cos_finetuned']}, Δ {b['delta']}")  # fmt: skip
    if res.ablation:
        a = res.ablation
        line = ", ".join(f"{k} {a[k]['rate']:.2f} ({a[k]['mean_score']:+.2f})"
                         for k in ("clean", "latents", "direction", "random") if k in a)  # fmt: skip
        print(f"  refusal rate (mean score) on {a['n_prompts']} harmful prompts: {line}")
    print(f"wrote {res.out_dir}/refusal_link.json")
    return 0
