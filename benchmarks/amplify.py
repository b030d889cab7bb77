"""Amplified generation vs the fine-tuned model generating alone, and one paired forward pass.

``python -m benchmarks.amplify [--hidden D --layers L] [--prompts N --tokens T] [--repeats R]``

Every contender generates the same number of new tokens for the same left-padded
batch (no early end of turn, so the token counts are equal): the fine-tuned model
alone through ``generate`` (transformers) and through our decoding loop, the logit
form of amplification (both models step together, two KV caches), and the weight
form (the fine-tuned model alone with ``W_base + (1+α)ΔW`` swapped in; the swap is
timed too). The last column is one paired forward pass (both models, no cache) over
the final sequences, the cost unit the other methods' benchmarks report. Contenders
run alternately, ``--repeats`` times; medians are reported. Expectation: the logit form
costs about twice the fine-tuned model alone (two models per step), the weight form
about the same as the model alone. Default pair: the fast organisms' base and quirk
adapter; ``--hidden`` builds a random Llama pair of that width instead (a full fine-tune:
its weight form swaps every tensor).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _pair(hidden: int | None, layers: int, tmp: Path):
    from diffing.models import ModelPair

    if hidden is None:
        from diffing.organisms import cached_organisms

        root = cached_organisms(fast=True)
        return ModelPair.load(
            str(root / "base"), str(root / "quirk-adapter")
        ), "fast organisms: base vs quirk adapter"
    from diffing.tiny import build_tiny_model, perturb_model

    base = build_tiny_model(tmp / "base", "llama", hidden=hidden, layers=layers)
    ft = perturb_model(base, tmp / "ft", modules=[f"layers.{layers // 2}.mlp.down_proj"], scale=0.5)
    return ModelPair.load(str(base), str(ft)), f"random Llama, d {hidden}, {layers} blocks"


def _prompts(pair, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from diffing.lens.amplify import encode_prompts
    from diffing.lens.amplify_decode import left_pad

    words = "tell me about the owl and the river near the town please".split()
    texts = [" ".join(words[: 3 + i % 8]) for i in range(n)]  # lengths differ: the batch is padded
    _, ids = encode_prompts(
        pair.tokenizer, texts, chat=bool(getattr(pair.tokenizer, "chat_template", None))
    )
    return left_pad(ids, pair.tokenizer.pad_token_id)


@torch.no_grad()
def run(pair, ids, mask, tokens: int, repeats: int, alpha: float = 2.0) -> dict[str, float]:
    """Median seconds of each contender over ``repeats`` alternating rounds."""
    from diffing.lens.amplify_decode import decode
    from diffing.lens.amplify_weights import amplified_weights

    base, ft = pair.hf("base"), pair.hf("finetuned")
    pad = pair.tokenizer.pad_token_id
    alphas = torch.full((ids.shape[0],), alpha)
    full = torch.cat([ids, torch.ones((ids.shape[0], tokens), dtype=torch.long)], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(full[:, ids.shape[1] :])], dim=1)

    def weights_form():
        with amplified_weights(pair, alpha) as model:
            decode([model], ids, mask, max_new_tokens=tokens, pad_id=pad)

    contenders = {
        "ft alone (generate)": lambda: ft.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=pad,
        ),  # fmt: skip
        "ft alone (our loop)": lambda: decode([ft], ids, mask, max_new_tokens=tokens, pad_id=pad),
        "amplified, logit form": lambda: decode(
            [base, ft], ids, mask, alphas=alphas, max_new_tokens=tokens, pad_id=pad
        ),
        "amplified, weight form": weights_form,
        "one paired forward (no cache)": lambda: (
            base(input_ids=full, attention_mask=full_mask),
            ft(input_ids=full, attention_mask=full_mask),
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=None, help="random Llama pair of this width")
    parser.add_argument("--layers", type=int, default=4, help="blocks of the random pair")
    parser.add_argument("--prompts", type=int, default=32, help="prompts in the batch")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per prompt")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pair, what = _pair(args.hidden, args.layers, Path(tmp))
        ids, mask = _prompts(pair, args.prompts)
        secs = run(pair, ids, mask, args.tokens, args.repeats)
    n = args.prompts * args.tokens
    alone = secs["ft alone (our loop)"]
    print(f"{what}; {args.prompts} prompts (prompt length {ids.shape[1]} padded), {args.tokens} new "
          f"tokens each, α = 2, {args.threads} thread(s), median of {args.repeats}\n")  # fmt: skip
    print("| contender | seconds | new tokens/s | vs ft alone (our loop) |")
    print("|---|---|---|---|")
    for name, s in secs.items():
        rate = f"{n / s:,.0f}" if "forward" not in name else "-"
        print(f"| {name} | {s:.3f} | {rate} | {s / alone:.2f}x |")


if __name__ == "__main__":
    main()
