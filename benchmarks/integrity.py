"""Benchmark: what the integrity checks cost (content hashes, non-finite weight scan, shard header check).

- ``diffing.hashing``: streamed sha256 of a weight-sized file (and blake2b, the
  alternative considered), then the cached lookup a second harvest of the same model pays;
- ``diffing.integrity.first_nonfinite``: one ``torch.isfinite(p).all()`` per parameter,
  over float32 and bfloat16 tensors, on this CPU;
- ``diffing.store.shardcheck.check_header``: checking one shard's header when the reader
  first opens it.

The file is read from the page cache (it was just written), so the hash rates are CPU-bound;
from disk the rate is the lower of this and the disk's read rate.

    python -m benchmarks.integrity [--mib 1024] [--params-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import torch


def _rate(mib: float, seconds: float) -> str:
    return f"{mib / 1024 / seconds:.2f} GiB/s ({seconds:.2f} s)"


def hashing(mib: int, root: Path) -> list[tuple[str, str]]:
    """Rows ``(what, rate)`` for hashing a ``mib`` MiB file."""
    from diffing import hashing as hc

    os.environ["DIFFING_CACHE"] = str(root / "cache")
    path = root / "weights.safetensors"
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(1 << 20))
    rows = []
    t = time.perf_counter()
    hc.stream_sha256(path)
    rows.append(("sha256, streamed (stream_sha256)", _rate(mib, time.perf_counter() - t)))
    t = time.perf_counter()
    h = hashlib.blake2b()
    with open(path, "rb") as fh:
        while block := fh.read(hc.BLOCK):
            h.update(block)
    rows.append(("blake2b, streamed (not used)", _rate(mib, time.perf_counter() - t)))
    t = time.perf_counter()
    hc.content_hash(path)
    rows.append(
        ("content_hash, first call (hash + cache write)", _rate(mib, time.perf_counter() - t))
    )
    t = time.perf_counter()
    for _ in range(100):
        hc.content_hash(path)
    per = (time.perf_counter() - t) / 100
    rows.append(("content_hash, cached (stat + cache read)", f"{per * 1e3:.2f} ms per file"))
    return rows


def nonfinite(mib: int) -> list[tuple[str, str]]:
    """Rows ``(what, rate)`` for scanning ``mib`` MiB of parameters for NaN/inf."""
    from diffing.integrity import first_nonfinite

    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        size = torch.empty(0, dtype=dtype).element_size()
        n = mib * 2**20 // size // 16
        model = torch.nn.Module()
        for i in range(16):  # 16 tensors, as a model has many
            model.register_parameter(f"p{i}", torch.nn.Parameter(torch.randn(n).to(dtype)))
        t = time.perf_counter()
        assert first_nonfinite(model) is None
        rows.append(
            (
                f"first_nonfinite, {str(dtype).removeprefix('torch.')}",
                _rate(mib, time.perf_counter() - t),
            )
        )
    return rows


def header_check(root: Path) -> list[tuple[str, str]]:
    """Row ``(what, time)`` for checking one shard header against the manifest."""
    from diffing.store import write_store
    from diffing.store.format import read_manifest
    from diffing.store.reader import _Shard

    n, d = 4096, 256
    acts = {k: torch.randn(n, 2, d) for k in range(4)}
    write_store(root / "store", acts, torch.zeros(n), torch.arange(n) // 64, torch.arange(n) % 64,
                torch.zeros(n, dtype=torch.int8), shard_tokens=512)  # fmt: skip
    m = read_manifest(root / "store")
    t = time.perf_counter()
    for _ in range(20):
        for info in m.shards:
            _Shard(root / "store", info, m)
    per = (time.perf_counter() - t) / (20 * len(m.shards))
    return [("open one shard (containment, size, header check)", f"{per * 1e3:.2f} ms per shard")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="size of the file to hash (MiB)")
    ap.add_argument("--params-mib", type=int, default=1024, help="parameters to scan (MiB)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rows = hashing(args.mib, Path(tmp)) + nonfinite(args.params_mib) + header_check(Path(tmp))
    print(f"| check ({args.mib} MiB file, {args.params_mib} MiB of parameters, 1 thread) | cost |")
    print("|---|---|")
    for what, cost in rows:
        print(f"| {what} | {cost} |")


if __name__ == "__main__":
    main()
