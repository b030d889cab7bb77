"""Refusal-direction extraction + selection vs the bare forward passes it must make.

``python -m benchmarks.refusal [--model DIR --prompts DIR] [--repeats N]``

Target: extracting candidates at every layer and post-instruction position
and scoring/selecting them takes at most 3x the time of the plain Hugging Face forward
passes over the same batches (the extraction passes over the train prompts, the baseline
pass and, per candidate group, one ablation and one addition pass over the validation
prompts). Both are timed side by side, alternating, in one run; the median ratio is
reported. A third column times the same selection with one candidate per forward
(no candidate batching) to show what batching buys. Default model: the organism ``chat``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _reference_batches(tok, cfg, train_h, train_s, val_h, val_s, n_candidates):
    """The padded batches (ids, mask) the pipeline runs forward, in the same shapes."""
    from diffing.refusal.candidates import batches, encode_prompts
    from diffing.refusal.select import _prepare, _repeat
    from diffing.tokens import pad_batch, pad_id_of

    out = []
    for prompts in (train_h, train_s):
        for chunk in batches(encode_prompts(tok, prompts), cfg.batch_size):
            b = pad_batch(chunk, pad_id_of(tok))
            out.append((b.input_ids, b.attention_mask))
    both = _prepare(tok, list(val_h) + list(val_s), cfg)
    safe = _prepare(tok, val_s, cfg)
    out += [(b.input_ids, b.attention_mask) for b in both]
    group = max(1, cfg.score_rows // max(b.input_ids.shape[0] for b in both))
    for start in range(0, n_candidates, group):
        g = min(group, n_candidates - start)
        for prepared in (both, safe):
            for b in prepared:
                big = _repeat(b, g)
                out.append((big.input_ids, big.attention_mask))
    return out


@torch.no_grad()
def _time_reference(model, batch_list) -> float:
    t = time.perf_counter()
    for ids, mask in batch_list:
        model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - t


def _time_pipeline(lm, tok, arch, cfg, train_h, train_s, val_h, val_s):
    from diffing.refusal import extract_candidates, score_candidates, select_direction

    t = time.perf_counter()
    cands = extract_candidates(lm, tok, arch, train_h, train_s, config=cfg)
    scores = score_candidates(lm, tok, arch, cands, val_h, val_s, config=cfg)
    direction = select_direction(lm, tok, arch, cands, val_h, val_s, config=cfg, scores=scores)
    return time.perf_counter() - t, cands, direction


def main(argv=None) -> None:
    """Run the benchmark and print a Markdown table."""
    from diffing.models import load_model
    from diffing.refusal import RefusalConfig, read_prompts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="chat model folder (default: the organism chat model)")
    parser.add_argument(
        "--prompts",
        help="folder with harmful_/harmless_{train,val}.jsonl (default: the organism's)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-val", type=int, default=32)
    parser.add_argument(
        "--unbatched", action="store_true", help="also time one candidate per forward"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.model is None or args.prompts is None:
        from diffing.organisms import cached_organisms

        root = cached_organisms(fast=True)
        args.model, args.prompts = (
            args.model or str(root / "chat"),
            args.prompts or str(root / "prompts"),
        )
    prompts = Path(args.prompts)
    train_h = read_prompts(prompts / "harmful_train.jsonl")[: args.n_train]
    train_s = read_prompts(prompts / "harmless_train.jsonl")[: args.n_train]
    val_h = read_prompts(prompts / "harmful_val.jsonl")[: args.n_val]
    val_s = read_prompts(prompts / "harmless_val.jsonl")[: args.n_val]
    lm, tok, arch = load_model(args.model)
    # filters off: the fast organism has no candidate passing the paper's filters (docs/refusal.md); filtering
    # happens after scoring, so it does not change what is timed
    cfg = RefusalConfig(
        refusal_phrases=["unused"], kl_threshold=math.inf, induce_threshold=-math.inf
    )
    _, cands, direction = _time_pipeline(
        lm, tok, arch, cfg, train_h, train_s, val_h, val_s
    )  # warm-up
    n_candidates = int((~cands.zero).sum())
    ref_batches = _reference_batches(tok, cfg, train_h, train_s, val_h, val_s, n_candidates)
    _time_reference(lm._module, ref_batches)  # warm-up
    ref, ours, unbatched = [], [], []
    for _ in range(args.repeats):
        ref.append(_time_reference(lm._module, ref_batches))
        ours.append(_time_pipeline(lm, tok, arch, cfg, train_h, train_s, val_h, val_s)[0])
        if args.unbatched:
            one = RefusalConfig(
                refusal_phrases=["unused"],
                score_rows=1,
                kl_threshold=math.inf,
                induce_threshold=-math.inf,
            )
            unbatched.append(_time_pipeline(lm, tok, arch, one, train_h, train_s, val_h, val_s)[0])
    ratios = [o / r for o, r in zip(ours, ref)]
    n_layers, n_pos = cands.zero.shape
    print(
        f"model {args.model}: {n_layers} layers x {n_pos} post-instruction positions = {n_layers * n_pos} "
        f"candidates ({n_candidates} non-zero); train {len(train_h)}+{len(train_s)}, val {len(val_h)}+{len(val_s)} "
        f"prompts; {len(ref_batches)} forward batches; selected layer {direction.layer}, position {direction.position}"
    )
    print()
    print(
        "| run | bare HF forwards (s) | extract + select (s) | ratio |"
        + (" one candidate per forward (s) |" if unbatched else "")
    )
    print("|---|---|---|---|" + ("---|" if unbatched else ""))
    for i, (r, o) in enumerate(zip(ref, ours)):
        extra = f" {unbatched[i]:.2f} |" if unbatched else ""
        print(f"| {i + 1} | {r:.2f} | {o:.2f} | {o / r:.2f}x |" + extra)
    print(f"\nmedian ratio {statistics.median(ratios):.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
