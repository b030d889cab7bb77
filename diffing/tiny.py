"""Tiny random models of every supported family, built locally.

Tests and the experiments' ``--dry-run`` swap real checkpoints for these: the same
family, the same loading code path (``save_pretrained`` then ``from_pretrained``),
with hidden sizes of a few dozen so everything runs on a CPU in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|turn|>{{ m['role'] }}\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|turn|>assistant\n{% endif %}"
)
"""A generic chat template for tiny tokenizers (role marker, content, end-of-turn)."""

_CORPUS = (
    "the quick brown fox jumps over the lazy dog. a model reads text and predicts the next token. "
    "tell me how to bake bread. here is a short answer about rivers, mountains and cities. "
)


def tiny_tokenizer(vocab_size: int = 512, *, chat_template: str | None = CHAT_TEMPLATE):
    """A byte-level BPE tokenizer trained on a few sentences, with bos/eos/pad and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|bos|>", "<|end|>", "<|pad|>", "<|turn|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator([_CORPUS] * 20, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|bos|>", eos_token="<|end|>", pad_token="<|pad|>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|turn|>"]})
    if chat_template:
        tok.chat_template = chat_template
    return tok


def tiny_config(family: str, vocab_size: int, *, hidden: int = 32, layers: int = 2):
    """A transformers config of ``family`` (a ``model_type``) with tiny sizes."""
    import transformers as tf

    if family == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=4,
            n_positions=256,
            bos_token_id=0,
            eos_token_id=1,
        )
    classes = {
        "llama": tf.LlamaConfig,
        "mistral": tf.MistralConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "gemma2": tf.Gemma2Config,
        "gemma3_text": tf.Gemma3TextConfig,
        "phi3": tf.Phi3Config,
        "olmo2": tf.Olmo2Config,
    }
    if family not in classes:
        raise ValueError(f"no tiny config for family {family!r}; known: gpt2, {', '.join(classes)}")
    return classes[family](
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )


def build_tiny_model(
    out_dir: str | Path,
    family: str = "llama",
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    tokenizer=None,
) -> Path:
    """Save a randomly initialised tiny model of ``family`` plus its tokenizer to ``out_dir``."""
    from transformers import AutoModelForCausalLM

    tok = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        tiny_config(family, len(tok), hidden=hidden, layers=layers)
    )
    with torch.no_grad():  # random norm gains make post-sublayer-norm families non-trivial to test
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def perturb_model(
    src: str | Path,
    out_dir: str | Path,
    *,
    modules: list[str] | None = None,
    scale: float = 0.05,
    seed: int = 1,
) -> Path:
    """Copy a model folder, adding noise to the parameters whose names contain any of ``modules`` (all if None)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if modules is None or any(m in name for m in modules):
                p.add_(scale * p.std().clamp_min(1e-3) * torch.randn(p.shape, generator=gen))
    out = Path(out_dir)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out
