"""Random-init model pairs and corpora for the throughput benchmarks (no downloads).

A pair is a randomly initialised Llama of a given size saved to a folder (safetensors), and a
copy with small noise added to every weight, sharing the tiny test tokenizer (its ids fit in any
vocabulary). The corpus is random words from a small lexicon, long enough per document that
packed text sequences fill ``seq_len``.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

WORDS = (
    "the quick brown fox jumps over the lazy dog a model reads text and predicts the next token "
    "tell me how to bake bread here is a short answer about rivers mountains and cities"
).split()
"""The corpus lexicon (the tiny tokenizer was trained on these words)."""


def build_llama_pair(
    root: str | Path,
    *,
    hidden: int,
    layers: int,
    vocab: int = 32000,
    intermediate: int | None = None,
    heads: int | None = None,
    kv_heads: int | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> tuple[str, str]:
    """Save a random Llama of the given size and a perturbed copy under ``root``; returns both folders."""
    import transformers as tf

    from diffing.tiny import tiny_tokenizer

    root = Path(root)
    heads = heads or max(4, hidden // 64)
    cfg = tf.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or int(hidden * 8 / 3 // 64 * 64),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=4096,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(cfg, torch_dtype=getattr(torch, dtype))
    base, ft = root / "base", root / "ft"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            p.add_((0.05 * p.float().std().clamp_min(1e-3) * noise).to(p.dtype))
    model.save_pretrained(ft)
    tok.save_pretrained(ft)
    return str(base), str(ft)


def write_corpus(
    path: str | Path, n_docs: int, *, min_words: int = 50, max_words: int = 400
) -> Path:
    """A text file of ``n_docs`` random-word documents (one a line), deterministic."""
    rng = random.Random(0)
    path = Path(path)
    lines = (
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
        for _ in range(n_docs)
    )
    path.write_text("\n".join(lines) + "\n")
    return path
