"""Crosscoder training speed, side by side: our step vs a dense reference in fp32 / TF32 / bf16, and store reading.

Run from the repository root::

    python -m benchmarks.gpu_crosscoder            # CUDA: 2x2304, 16,384 and 73,728 latents, k 100, batch 4,096
    python -m benchmarks.gpu_crosscoder --small    # seconds on CPU: 2x64, 2,048 and 8,192 latents, k 16, batch 1,024

Prints one JSON object; ``benchmarks/gpu.py`` calls :func:`run` and merges it.

* ``step``: tokens/s of one full training step (forward, backward, gradient clip, Adam)
  of our BatchTopK crosscoder (``decode="auto"``: the path it picks is recorded) and of the
  dense reference (dense ReLU codes, full batch top-k mask, dense ``einsum`` decode,
  autograd through all of it; bf16 = autocast over float32 weights), the two alternating
  in rounds on the same batches. TF32 rows only on CUDA.
* ``decode_paths`` (``--paths``): our step with ``decode="sparse"`` and ``"dense"`` forced,
  in float32 and bfloat16: the measurements ``decode="auto"`` is chosen from.
* ``end_to_end``: ``train_crosscoder`` from a bfloat16 store on disk (reader + prefetch +
  step) vs from the same activations already in memory on the device (step only), both
  the training loop's own ``tokens_per_s`` (bias init and final evaluation excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.crosscoder_train import dense_batchtopk_loss
from diffing.crosscoder import CrossCoder, CrossCoderConfig, train_crosscoder
from diffing.crosscoder.model import compute_dtype, resolve_decode

FULL = {"d_model": 2304, "dict_sizes": [16384, 73728], "k": 100, "batch": 4096,
        "rounds": 3, "steps": 5, "store_tokens": 4096 * 40, "train_steps": 30}  # fmt: skip
"""The measured setting on a GPU (Gemma-2-2B width, the published crosscoder sizes)."""
SMALL = {"d_model": 64, "dict_sizes": [1024, 4096], "k": 16, "batch": 512,
         "rounds": 2, "steps": 2, "store_tokens": 512 * 24, "train_steps": 30}  # fmt: skip
"""A shrunken setting that runs in seconds on a CPU (tests, smoke runs)."""


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _tf32(on: bool):
    """TF32 matmuls on or off for the block (CUDA only; restored after)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _step(cc, opt, x, dense: bool, bf16: bool, device: str) -> None:
    if dense:
        kind = torch.device(device).type
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
            loss = dense_batchtopk_loss(cc, x).float()
    else:
        loss = cc.forward_train(x).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(cc.parameters(), 1.0)
    opt.step()


def step_rates(setting: dict, dict_size: int, precision: str, device: str) -> dict:
    """Tokens/s of our step and the dense reference at one size and precision, alternating in rounds."""
    bf16 = precision == "bf16"
    cfg = CrossCoderConfig(
        d_model=setting["d_model"], dict_size=dict_size, k=setting["k"],
        batch_size=setting["batch"], dtype="bfloat16" if bf16 else "float32",
    ).resolved()  # fmt: skip
    models = {name: CrossCoder(cfg).to(device) for name in ("ours", "dense")}
    opts = {n: torch.optim.Adam(m.parameters(), lr=1e-4) for n, m in models.items()}
    g = torch.Generator().manual_seed(0)
    xs = [
        torch.randn(setting["batch"], 2, setting["d_model"], generator=g).to(device)
        for _ in range(setting["steps"])
    ]
    times: dict[str, list[float]] = {"ours": [], "dense": []}
    with _tf32(precision == "tf32"):
        for name in models:  # warm-up (kernel selection, allocator)
            _step(models[name], opts[name], xs[0], name == "dense", bf16, device)
        for _ in range(setting["rounds"]):
            for name in models:
                _sync(device)
                t = time.perf_counter()
                for x in xs:
                    _step(models[name], opts[name], x, name == "dense", bf16, device)
                _sync(device)
                times[name].append((time.perf_counter() - t) / len(xs))
    ours = setting["batch"] / statistics.median(times["ours"])
    dense = setting["batch"] / statistics.median(times["dense"])
    return {
        "dict_size": dict_size, "precision": precision,
        "decode": resolve_decode("auto", device, compute_dtype(cfg.dtype)),
        "ours_tokens_per_s": ours, "dense_tokens_per_s": dense, "speedup": ours / dense,
    }  # fmt: skip


def decode_paths(setting: dict, dict_size: int, device: str) -> dict:
    """Tokens/s of our step with each decode path forced, in float32 and bfloat16 (what ``auto`` is chosen from)."""
    out = {}
    g = torch.Generator().manual_seed(0)
    xs = [
        torch.randn(setting["batch"], 2, setting["d_model"], generator=g).to(device)
        for _ in range(setting["steps"])
    ]
    for dtype in ("float32", "bfloat16"):
        for decode in ("sparse", "dense"):
            if decode == "sparse" and dtype == "bfloat16" and torch.device(device).type == "cuda":
                continue  # embedding_bag has no CUDA bfloat16 backward
            cfg = CrossCoderConfig(
                d_model=setting["d_model"], dict_size=dict_size, k=setting["k"],
                batch_size=setting["batch"], dtype=dtype, decode=decode,
            ).resolved()  # fmt: skip
            cc = CrossCoder(cfg).to(device)
            opt = torch.optim.Adam(cc.parameters(), lr=1e-4)
            _step(cc, opt, xs[0], False, False, device)  # warm-up
            times = []
            for _ in range(setting["rounds"]):
                _sync(device)
                t = time.perf_counter()
                for x in xs:
                    _step(cc, opt, x, False, False, device)
                _sync(device)
                times.append((time.perf_counter() - t) / len(xs))
            out[f"{decode}_{dtype}"] = setting["batch"] / statistics.median(times)
    return {"dict_size": dict_size, "tokens_per_s": out}


def end_to_end(setting: dict, device: str, folder: Path) -> dict:
    """Training-loop rate from a bfloat16 store on disk vs from the same data in device memory."""
    from diffing.store import ActivationStore, write_store

    n, d = setting["store_tokens"], setting["d_model"]
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(n, 2, d, generator=g)
    write_store(
        folder / "store", {0: acts}, torch.zeros(n, dtype=torch.long),
        norm_scales={0: [1.0, 1.0]}, dtype="bfloat16", shard_tokens=max(4096, n // 8),
    )  # fmt: skip
    store = ActivationStore.open(folder / "store")
    cfg = CrossCoderConfig(
        dict_size=setting["dict_sizes"][0], k=setting["k"], batch_size=setting["batch"],
        steps=setting["train_steps"], log_every=10**9, checkpoint_every=0,
    )  # fmt: skip
    in_memory = acts.to(torch.bfloat16).float().to(device)  # the same values, already on the device
    rates: dict[str, list[float]] = {"store": [], "step_only": []}
    waits = []
    quiet = logging.getLogger("diffing.crosscoder.train")
    level, _ = quiet.level, quiet.setLevel(logging.ERROR)  # short runs warn by design
    try:
        for _ in range(2):  # alternate, so warm-up and machine noise hit both alike
            m = train_crosscoder(in_memory, cfg, device=device).metrics
            rates["step_only"].append(m["tokens_per_s"])
            m = train_crosscoder(store, cfg, device=device).metrics
            rates["store"].append(m["tokens_per_s"])
            waits.append(m["data_wait_s"])
    finally:
        quiet.setLevel(level)
    store_rate, step_rate = max(rates["store"]), max(rates["step_only"])
    reader = reader_rate(store, cfg, device)
    return {
        "store_dtype": "bfloat16", "store_tokens": n, "steps": setting["train_steps"],
        "store_tokens_per_s": store_rate, "store_data_wait_s": min(waits),
        "step_only_tokens_per_s": step_rate, "ratio": store_rate / step_rate,
        "reader_tokens_per_s": reader,
        # what reading in line (no prefetch) would give: the two times add up
        "inline_estimate_tokens_per_s": 1 / (1 / step_rate + 1 / reader),
    }  # fmt: skip


def reader_rate(store, cfg, device: str) -> float:
    """Tokens/s of reading, widening and normalising batches alone (no training step)."""
    from diffing.crosscoder import distributed as ddp
    from diffing.crosscoder.prefetch import prepare

    cfg = ddp.resolve_config(store, cfg)
    scales = store.norm_scales(cfg.layer)
    stream = ddp.stream(store, cfg, cfg.batch_size, 0, 1, 0, raw=True)
    t = time.perf_counter()
    for _ in range(cfg.steps):
        prepare(next(stream), scales, device)
    _sync(device)
    return cfg.steps * cfg.batch_size / (time.perf_counter() - t)


def run(
    small: bool = False,
    device: str | None = None,
    *,
    steps: bool = True,
    paths: bool = False,
    **overrides,
) -> dict:
    """All measurements as one JSON-ready dict (``small``: the CPU-sized setting).

    ``steps=False`` skips the step comparison; ``paths=True`` adds each decode path forced
    (``decode_paths``); ``overrides`` replace entries of the setting.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    setting = {**(SMALL if small else FULL), **overrides}
    cuda = torch.device(device).type == "cuda"
    precisions = ["fp32", "tf32", "bf16"] if cuda else ["fp32", "bf16"]
    report = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "setting": {k: v for k, v in setting.items()},
        "step": [step_rates(setting, n, p, device) for n in setting["dict_sizes"] for p in precisions]
        if steps else [],
    }  # fmt: skip
    if paths:
        report["decode_paths"] = [decode_paths(setting, n, device) for n in setting["dict_sizes"]]
    with tempfile.TemporaryDirectory(prefix="diffing-bench-cc-") as tmp:
        report["end_to_end"] = end_to_end(setting, device, Path(tmp))
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="CPU-sized setting (seconds)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--skip-step", action="store_true", help="only the end-to-end measurement")
    p.add_argument("--paths", action="store_true", help="also time each decode path forced")
    for key in ("d_model", "batch", "k", "store_tokens", "train_steps"):
        p.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help="override the setting"
        )
    p.add_argument("--dict-sizes", type=int, nargs="+", default=None, help="override the setting")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keys = ("d_model", "batch", "k", "store_tokens", "train_steps", "dict_sizes")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    report = run(
        small=args.small,
        device=args.device,
        steps=not args.skip_step,
        paths=args.paths,
        **overrides,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
