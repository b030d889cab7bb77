"""``diffing crosscoder ...``: train (and analyse) crosscoders on an activation store.

``register`` builds the ``crosscoder`` group; each action is added by an
``add_<action>(subparsers)`` function so other modules' actions slot in below.
"""

from __future__ import annotations

import argparse

from diffing.cli.common import device, out_dir, token_count
from diffing.cli.crosscoder_analyze import add_analyze
from diffing.cli.crosscoder_extra import add_extra
from diffing.cli.options import add_options
from diffing.crosscoder.config import CrossCoderConfig

TRAIN_INTERNAL = ("n_models", "d_model", "store_manifest", "extra")
"""CrossCoderConfig fields the command fills in itself (from the store) or keeps for provenance."""


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
    p.add_argument("--out", type=out_dir, required=True, help="output folder")
    add_options(
        p,
        CrossCoderConfig,
        exclude=TRAIN_INTERNAL,
        types={"tokens": token_count},
        title="crosscoder (fields of CrossCoderConfig)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into --out even if it holds other files or a finished crosscoder (replaced)",
    )
    p.add_argument(
        "--device",
        type=device,
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
    p.set_defaults(handler=run_train)
    return p


def _device(arg: str | None) -> str:
    import os

    import torch

    if arg and arg != "auto":
        return arg
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``diffing crosscoder train``."""
    import os

    from diffing.cli.options import config_from_args
    from diffing.crosscoder import train_crosscoder
    from diffing.crosscoder.train import check_device
    from diffing.errors import DiffingError
    from diffing.store import ActivationStore

    # invalid values (--steps 0, --lr nan, ...) fail here, before the store is read
    cfg = config_from_args(args, CrossCoderConfig)
    device = check_device(_device(args.device))
    store = ActivationStore.open(args.store)
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
        device=device, progress=not args.quiet, force=args.force,
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
