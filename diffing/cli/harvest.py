"""``diffing harvest``: fill an activation store from a model pair (see docs/store.md).

Also ``diffing store-info STORE`` (summary, ``--verify`` checksums). Under
``torchrun --nproc-per-node N diffing harvest ...`` each process harvests its part
of the data and rank 0 writes the manifest.
"""

from __future__ import annotations

import argparse
import os

from diffing.cli.common import (
    add_pair_args,
    add_remote_arg,
    load_pair_from_args,
    out_dir,
    positive_float,
    positive_int,
    print_json,
    probability,
    token_count,
)


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--layers takes comma-separated integers, got {text!r}"
        ) from err


def register(sub) -> None:
    """Add ``harvest`` and ``store-info``."""
    p = sub.add_parser(
        "harvest",
        help="store both models' activations at some layers over a corpus",
        description="Run BASE and FINETUNED over the same tokens and store their residual streams at --layers "
        "(resumable: rerun the same command to continue; torchrun splits the data across processes).",
    )
    add_pair_args(p)
    p.add_argument(
        "--layers",
        type=_layers,
        required=True,
        help="comma-separated layer indices, e.g. 6,13 (negative counts from the end)",
    )
    p.add_argument(
        "--data",
        required=True,
        help="SPEC[,SPEC...]: .txt/.jsonl/.parquet file, folder, hf:NAME[:split], organism:text, organism:chat",
    )
    p.add_argument("--tokens", type=token_count, required=True, help="tokens to harvest (e.g. 1M)")
    p.add_argument(
        "--out",
        type=out_dir,
        required=True,
        help="store folder (created; an unfinished one is resumed)",
    )
    p.add_argument(
        "--seq-len", type=positive_int, default=1024, help="longest sequence (default 1024)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=8, help="sequences per forward pass (default 8)"
    )
    p.add_argument(
        "--store-dtype",
        default=None,
        help="float32, bfloat16 or float16 (default: the models' --dtype, else float32)",
    )
    p.add_argument(
        "--chat-fraction",
        type=probability,
        default=0.5,
        help="share of tokens from chat data (default 0.5)",
    )
    p.add_argument(
        "--keep-bos",
        action="store_true",
        help="keep position 0 of each sequence (dropped by default)",
    )
    p.add_argument(
        "--keep-outliers",
        action="store_true",
        help="keep attention-sink outlier positions (dropped by default)",
    )
    p.add_argument(
        "--outlier-factor",
        type=positive_float,
        default=10.0,
        help="outlier = norm above this multiple of the median (default 10)",
    )
    p.add_argument(
        "--pack",
        action="store_true",
        help="concatenate plain-text documents (EOS-separated) into full --seq-len sequences: "
        "no padding, faster on GPUs; a document's first tokens then see the previous one's tail",
    )
    p.add_argument(
        "--shard-tokens",
        type=positive_int,
        default=None,
        help="tokens per shard (default: ~128 MiB shards)",
    )
    add_remote_arg(p, "both models")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_harvest)

    q = sub.add_parser(
        "store-info",
        help="summarise an activation store",
        description="Print a store's manifest summary.",
    )
    q.add_argument("store", help="store folder")
    q.add_argument("--verify", action="store_true", help="recompute every shard's sha256")
    q.set_defaults(handler=run_info)


def _init_distributed() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; gloo process group only when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
    return rank, world


def run_harvest(args: argparse.Namespace) -> int:
    """Handler of ``diffing harvest``."""
    import torch

    from diffing.store import harvest

    if "organism" in str(args.data):
        import diffing.organisms  # noqa: F401 - registers the organism:NAME data specs

    rank, world = _init_distributed()
    if world > 1 and args.device is None and torch.cuda.is_available():
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    store_dtype = args.store_dtype or (
        args.dtype if args.dtype in ("float32", "bfloat16", "float16") else "float32"
    )
    pair = load_pair_from_args(args)
    store = harvest(
        pair,
        args.out,
        layers=pair.check_layers(args.layers),
        data=args.data,
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        dtype=store_dtype,
        chat_fraction=args.chat_fraction,
        drop_bos=not args.keep_bos,
        drop_outliers=not args.keep_outliers,
        outlier_factor=args.outlier_factor,
        shard_tokens=args.shard_tokens,
        pack=args.pack,
        progress=not args.no_progress,
        rank=rank,
        world_size=world,
    )
    if rank == 0:
        print(
            f"{store.n_tokens} tokens, layers {store.layers}, d_model {store.d_model}, {len(store.manifest['shards'])} shards -> {args.out}"
        )
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Handler of ``diffing store-info``."""
    from diffing.store import ActivationStore

    store = ActivationStore.open(args.store)
    if args.verify:
        store.verify()
    m = store.manifest
    print_json(
        {
            "path": str(store.path),
            "n_tokens": store.n_tokens,
            "layers": store.layers,
            "d_model": store.d_model,
            "dtype": m["dtype"],
            "models": m["models"],
            "data": m["data"],
            "norm_scales": m["norm_scales"],
            "shards": len(m["shards"]),
            "verified": bool(args.verify),
        }
    )
    return 0
