"""``diffing harvest``: fill an activation store from a model pair (see docs/store.md).

Also ``diffing store-info STORE`` (summary, ``--verify`` checksums). Under
``torchrun --nproc-per-node N diffing harvest ...`` each process harvests its part
of the data and rank 0 writes the manifest.
"""

from __future__ import annotations

import argparse
import os

from diffing.cli.common import (
    add_out_arg,
    add_pair_args,
    add_remote_arg,
    load_pair_from_args,
    print_json,
    token_count,
)
from diffing.cli.options import add_options
from diffing.store.config import HarvestConfig

FLAGS = {"dtype": "--store-dtype"}
"""HarvestConfig fields whose flag is not the field's name."""
OFF_FLAGS = {"drop_bos": "--keep-bos", "drop_outliers": "--keep-outliers"}
"""HarvestConfig booleans (on by default) and the flag that turns each off."""
INTERNAL = ("world_size",)
"""HarvestConfig fields the command sets itself (from torchrun's environment)."""


def register(sub) -> None:
    """Add ``harvest`` and ``store-info``."""
    p = sub.add_parser(
        "harvest",
        help="store both models' activations at some layers over a corpus",
        description="Run BASE and FINETUNED over the same tokens and store their residual streams at --layers "
        "(resumable: rerun the same command to continue; torchrun splits the data across processes).",
    )
    add_pair_args(p)
    add_options(
        p,
        HarvestConfig,
        exclude=INTERNAL,
        flags=FLAGS,
        off_flags=OFF_FLAGS,
        types={"tokens": token_count},
        title="harvest (fields of HarvestConfig)",
    )
    add_out_arg(p, "harvest", "store folder (created; an unfinished one is resumed)")
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
    from dataclasses import asdict

    import torch

    from diffing.cli.options import given_options
    from diffing.store import harvest

    rank, world = _init_distributed()
    if world > 1 and args.device is None and torch.cuda.is_available():
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    given = given_options(args, HarvestConfig, FLAGS)
    if "dtype" not in given:  # the store keeps the models' precision unless told otherwise
        given["dtype"] = (
            args.dtype if args.dtype in ("float32", "bfloat16", "float16") else "float32"
        )
    cfg = HarvestConfig(**given, world_size=world)  # bad values fail here, before loading
    pair = load_pair_from_args(args)
    fields = {k: v for k, v in asdict(cfg).items() if k != "world_size"}
    fields["layers"] = pair.check_layers(cfg.layers)
    store = harvest(
        pair,
        args.out,
        **fields,
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
