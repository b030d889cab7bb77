"""``diffing crosscoder ...``: train (and analyse) crosscoders on an activation store.

``register`` builds the ``crosscoder`` group; each action is added by an
``add_<action>(subparsers)`` function so other modules' actions slot in below.
"""

from __future__ import annotations

import argparse

from diffing.cli.crosscoder_analyze import add_analyze
from diffing.cli.crosscoder_extra import add_extra


def register(sub) -> None:
    """Add the ``crosscoder`` command group and its actions."""
    p = sub.add_parser(
        "crosscoder", help="train and analyse crosscoders on a harvested activation store"
    )
    actions = p.add_subparsers(dest="crosscoder_command", metavar="ACTION")
    add_train(actions)
    # ---- more crosscoder actions (e.g. add_analyze(actions)) are registered here ----
    add_analyze(actions)
    add_extra(actions)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def add_train(actions) -> argparse.ArgumentParser:
    """Add ``crosscoder train`` to the group's subparsers."""
    p = actions.add_parser(
        "train",
        help="train a crosscoder on a store (torchrun --nproc-per-node N for data-parallel)",
        description="Train a BatchTopK or L1 crosscoder on one layer of an activation store. "
        "Writes crosscoder.safetensors, config.json and metrics.json into --out; checkpoints "
        "every --checkpoint-every steps and continues from them with --resume.",
    )
    p.add_argument("store", help="activation store folder (from `diffing harvest`)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--layer", type=int, default=None, help="store layer to train on (default: the only one)"
    )
    p.add_argument(
        "--kind",
        choices=("batchtopk", "l1"),
        default="batchtopk",
        help="activation (default batchtopk)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--dict-size", type=int, default=None, help="number of latents")
    size.add_argument(
        "--expansion", type=int, default=None, help="latents per residual dimension (default 8)"
    )
    p.add_argument(
        "--k", type=int, default=None, help="BatchTopK: active latents per token (default 32)"
    )
    p.add_argument(
        "--l1-coeff", type=float, default=None, help="L1: sparsity coefficient (default 2.0)"
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="training tokens (default: one pass over the store)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides --tokens)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tokens per step over all processes (default 4096)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate (default 2e-4/sqrt(latents/16384))",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="steps between checkpoints (default 1000)",
    )
    p.add_argument(
        "--log-every", type=int, default=None, help="steps between metric logs (default 50)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument(
        "--device",
        default=None,
        help="cpu or cuda (default: cuda if available); with torchrun: cuda:LOCAL_RANK",
    )
    p.add_argument(
        "--model",
        default=None,
        help="FINETUNED model: log its loss with the layer spliced from the reconstruction",
    )
    p.add_argument(
        "--base", default=None, help="base model for --model (default: the store's base model)"
    )
    p.add_argument(
        "--texts",
        default=None,
        help="prompts/text file (.txt/.jsonl) for the spliced loss (needed with --model)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_train)
    return p


def _device(arg: str | None) -> str:
    import os

    import torch

    if arg:
        return arg
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``diffing crosscoder train``."""
    import dataclasses
    import os

    from diffing.crosscoder import CrossCoderConfig, train_crosscoder
    from diffing.errors import DiffingError
    from diffing.store import ActivationStore

    store = ActivationStore.open(args.store)
    overrides = {
        "layer": args.layer, "kind": args.kind, "dict_size": args.dict_size, "expansion": args.expansion,
        "k": args.k, "l1_coeff": args.l1_coeff, "tokens": args.tokens, "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "checkpoint_every": args.checkpoint_every, "log_every": args.log_every,
    }  # fmt: skip
    cfg = dataclasses.replace(
        CrossCoderConfig(), **{k: v for k, v in overrides.items() if v is not None}
    )
    pair, texts = None, None
    if args.model:
        if not args.texts:
            raise DiffingError(
                "--model needs --texts FILE (prompts or plain text) to measure the spliced loss on"
            )
        from diffing.data import load_prompts
        from diffing.models import ModelPair

        base = args.base or next(
            (m.get("ref") for m in store.manifest.get("models", []) if m.get("ref")), None
        )
        if not base:
            raise DiffingError(
                "the store does not name its base model; pass --base BASE with --model"
            )
        pair = ModelPair.load(base, args.model)
        texts = load_prompts(args.texts)[:64]
    res = train_crosscoder(
        store, cfg, args.out, resume=args.resume, pair=pair, spliced_texts=texts,
        device=_device(args.device), progress=not args.quiet,
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports
    m = res.metrics
    fvu = ", ".join(f"{name} {v:.3f}" for name, v in zip(store.model_names, m.get("fvu", [])))
    print(
        f"crosscoder saved to {res.out}: FVU {fvu}; L0 {m.get('l0', 0):.1f}; dead {100 * m.get('dead_frac', 0):.1f}%"
    )
    if "spliced_loss" in m:
        print(f"fine-tuned loss: clean {m['spliced_clean']:.4f}, spliced {m['spliced_loss']:.4f}")
    return 0
