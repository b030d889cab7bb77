"""Benchmark: diff-SAE and refusal-link cost against one paired forward pass over the same tokens.

On the fast ``chat`` organism at the layer where its refusal is planted, side by side in one
process, alternating for ``--rounds`` rounds:

- ``paired forward``: both models traced at the layer over the store's own token sequences
  (``diffing.tracing.trace_pair``, batches of 16);
- ``diff-SAE train``: one pass over the store (``--k``, ``--expansion``, batch ``--batch``);
- ``diff-SAE read``: :func:`analyze_diff_sae` over the store (contexts, shares, FVU, no lens);
- ``refusal link``: cosines, contexts of the refusal latents over the store, and the four-condition
  ablation on 64 harmful prompts, against a paired forward over those prompts.

    python -m benchmarks.diff_sae [--tokens 30000] [--rounds 2]

Results: docs/benchmarks/diff_sae.md. CPU time of the process is reported next to wall time
(the build machine is shared, so CPU time is the steadier one).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _sequences(store) -> list[list[int]]:
    """The store's token sequences (as harvested, BOS included), from its shards."""
    seqs = []
    for i in range(len(store.manifest["shards"])):
        sh = store._shard(i)
        toks, starts = sh.array("seq_tokens"), sh.array("seq_starts")
        seqs += [
            toks[int(a) : int(b)].astype("int64").tolist() for a, b in zip(starts[:-1], starts[1:])
        ]
    return seqs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    from safetensors.torch import load_file

    from diffing.crosscoder import CrossCoderConfig, train_crosscoder
    from diffing.crosscoder.diff_sae import train_diff_sae
    from diffing.crosscoder.diff_sae_analysis import analyze_diff_sae
    from diffing.crosscoder.extra_config import DiffSAEConfig
    from diffing.crosscoder.refusal_link import refusal_link
    from diffing.models import ModelPair
    from diffing.organisms import cached_organisms
    from diffing.store.harvesting import harvest
    from diffing.tokens import Encoded, encode_chat, pad_batch, pad_id_of
    from diffing.tracing import trace_pair

    torch.set_num_threads(1)
    root = Path(cached_organisms(fast=True))
    truth = json.loads((root / "organism.json").read_text())
    planted = truth["variants"]["chat"]["planted"]
    layer = planted["refusal_direction"]["layer"] - 1
    corpus = truth["layout"]["corpus"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-diffsae-"))
    pair = ModelPair.load(str(root / "base"), str(root / "chat"))
    store = harvest(pair, tmp / "store", layers=[layer], data=[str(root / corpus["text"]), str(root / corpus["chat"])],
                    tokens=args.tokens, seq_len=128, batch_size=16, progress=False)  # fmt: skip
    pad = pad_id_of(pair.tokenizer)
    seqs = _sequences(store)
    n_seq_tokens = sum(len(s) for s in seqs)
    cc = train_crosscoder(store, CrossCoderConfig(dict_size=512, k=4, steps=300, batch_size=1024, auxk_alpha=1.0,
                          dead_tokens=30_720, layer=layer, checkpoint_every=0)).crosscoder  # fmt: skip
    r = load_file(root / planted["refusal_direction"]["file"])[
        planted["refusal_direction"]["tensor"]
    ]
    harmful = [json.loads(x)["instruction"] for x in (root / truth["layout"]["prompts"]["harmful_test"]).read_text().splitlines() if x.strip()]  # fmt: skip
    prompts = [encode_chat(pair.tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True) for p in harmful]  # fmt: skip
    cfg = DiffSAEConfig(
        k=args.k, expansion=args.expansion, batch_size=args.batch, checkpoint_every=0, figures=False
    )

    def forward(batches):
        def run():
            for i in range(0, len(batches), 16):
                trace_pair(pair, pad_batch(batches[i : i + 16], pad), [layer])

        return run

    store_fwd = forward([Encoded(s, [0] * len(s)) for s in seqs])
    prompt_fwd = forward(prompts)
    out = tmp / "sae"

    def train():
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        train_diff_sae(store, cfg, out)

    def read():
        analyze_diff_sae(out, store, None, config=cfg)

    def link():
        refusal_link(cc, r, layer, store=store, pair=pair, harmful=harmful,
                     refusal_tokens=[planted["refusal_first_token_id"]])  # fmt: skip

    rows = {k: [] for k in ("paired forward (store)", "diff-SAE train", "diff-SAE read",
                            "paired forward (prompts)", "refusal link")}  # fmt: skip
    for _ in range(args.rounds):
        rows["paired forward (store)"].append(_timed(store_fwd))
        rows["diff-SAE train"].append(_timed(train))
        rows["diff-SAE read"].append(_timed(read))
        rows["paired forward (prompts)"].append(_timed(prompt_fwd))
        rows["refusal link"].append(_timed(link))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in rows.items()}
    print(f"store: {store.n_tokens} tokens at layer {layer} ({n_seq_tokens} with BOS), d_model {store.d_model}; "
          f"diff-SAE {args.expansion * store.d_model} latents, k {args.k}, batch {args.batch}; 64 harmful prompts")  # fmt: skip
    print("| step | wall s (best) | CPU s (best) | x paired forward (CPU) |")
    print("|---|---|---|---|")
    for k, (w, c) in best.items():
        ref = best["paired forward (prompts)" if k == "refusal link" else "paired forward (store)"][
            1
        ]
        print(f"| {k} | {w:.2f} | {c:.2f} | {c / ref:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
