"""Arguments shared by commands that load a model pair."""

from __future__ import annotations

import argparse
import json


def add_pair_args(p: argparse.ArgumentParser) -> None:
    """``BASE FINETUNED`` plus the loading options every pair command takes."""
    p.add_argument("base", help="base model: Hugging Face id or local folder")
    p.add_argument(
        "finetuned", help="fine-tuned model: Hugging Face id, local folder, or PEFT adapter folder"
    )
    p.add_argument("--adapter", help="PEFT adapter folder applied on top of FINETUNED")
    p.add_argument(
        "--dtype",
        default=None,
        help="float32, bfloat16, float16 or auto (default: float32 on CPU, auto on GPU)",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N, or auto (device_map='auto' across GPUs)"
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the checkpoint (off by default)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow .bin/.pt weights (loaded with weights_only=True)",
    )


def add_remote_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--remote``: run every trace of the command on NDIF (nnsight remote execution)."""
    p.add_argument(
        "--remote",
        action="store_true",
        help=f"trace {what} on NDIF (nnsight remote execution; hub ids it serves; see docs/scaling.md)",
    )


def load_pair_from_args(args: argparse.Namespace):
    """A :class:`~diffing.models.ModelPair` from the arguments :func:`add_pair_args` added."""
    from diffing.models import ModelPair

    return ModelPair.load(
        args.base,
        args.finetuned,
        adapter=args.adapter,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        remote=getattr(args, "remote", False),
    )


def print_json(obj) -> None:
    """Print an object as indented JSON."""
    print(json.dumps(obj, indent=2, default=str))
