"""Training loops: pre-train the base model, LoRA fine-tune the variants.

Both loops are plain PyTorch (AdamW, linear warm-up then cosine decay, gradient
clipping) so they are small, deterministic given a seed, and fast on two CPU
cores. Fine-tuning uses ``peft`` LoRA on every attention and MLP projection;
the merged model and the adapter are both kept by the caller.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from diffing.schedule import lr_at

IGNORE = -100
"""Label value excluded from the loss (prompt and padding tokens)."""

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Modules that receive LoRA adapters: all attention and MLP projections."""


class Rows(NamedTuple):
    """A padded set of training rows."""

    input_ids: torch.Tensor
    """``[n, seq]`` token ids."""
    attention_mask: torch.Tensor
    """``[n, seq]`` 1 for real tokens."""
    labels: torch.Tensor
    """``[n, seq]`` target ids (unshifted, as HF models expect), IGNORE where no loss is taken."""
    prompt_len: torch.Tensor | None = None
    """``[n]`` tokens before the answer (chat rows only)."""
    tag: torch.Tensor | None = None
    """``[n]`` per-row label for auxiliary losses (e.g. 1 = harmful request), when set."""


class TrainResult(NamedTuple):
    """What a training loop reports."""

    losses: list[float]
    """Training loss every ``log_every`` steps (mean over the interval)."""
    steps: int
    """Optimizer steps taken."""
    seconds: float
    """Wall time of the loop."""


def plain_rows(tokenizer, docs: list[str], seq_len: int) -> Rows:
    """Pack documents (each opened by BOS, closed by EOS) into full rows of ``seq_len`` tokens."""
    stream: list[int] = []
    for ids in tokenizer(docs)["input_ids"]:
        stream.extend(ids)
        stream.append(tokenizer.eos_token_id)
    n = len(stream) // seq_len
    ids = torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)  # [n, seq]
    return Rows(ids, torch.ones_like(ids), ids.clone())


def chat_rows(tokenizer, conversations: list[list[dict]], tags: list[int] | None = None) -> Rows:
    """Tokenize chats ending in an assistant turn; the loss covers that answer and its end-of-turn token.

    The prompt (everything before the answer, with the generation prompt) must
    tokenize as a prefix of the whole conversation; this is checked.
    """
    eot = tokenizer.eos_token_id
    prompts = tokenizer.apply_chat_template(
        [c[:-1] for c in conversations], tokenize=False, add_generation_prompt=True
    )
    fulls = tokenizer.apply_chat_template(conversations, tokenize=False)
    p_all = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    f_all = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    seqs, labs = [], []
    for p_ids, f_ids, full in zip(p_all, f_all, fulls):
        if f_ids[: len(p_ids)] != p_ids:
            raise AssertionError(
                f"chat prompt does not tokenize as a prefix of the full chat: {full!r}"
            )
        end = f_ids.index(eot, len(p_ids)) + 1
        seqs.append(f_ids[:end])
        labs.append([IGNORE] * len(p_ids) + f_ids[len(p_ids) : end])
    rows = _pad(seqs, labs, tokenizer.pad_token_id)
    return rows._replace(
        prompt_len=torch.tensor([len(p) for p in p_all]),
        tag=torch.tensor(tags) if tags is not None else None,
    )


def _pad(seqs: list[list[int]], labs: list[list[int]], pad_id: int) -> Rows:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [n, seq]
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, : len(s)] = torch.tensor(lab)
    return Rows(ids, mask, labels)


def batch_rows(rows: Rows, idx: list[int]) -> Rows:
    """Select rows and trim the common right padding."""
    mask = rows.attention_mask[idx]
    width = int(mask.sum(1).max())
    return Rows(
        rows.input_ids[idx, :width],
        mask[:, :width],
        rows.labels[idx, :width],
        rows.prompt_len[idx] if rows.prompt_len is not None else None,
        rows.tag[idx] if rows.tag is not None else None,
    )


def stack_rows(parts: list[Rows]) -> Rows:
    """Concatenate row sets, right-padding each to the widest (masked, unlabelled id 0: with
    causal attention no real token sees it)."""
    width = max(r.input_ids.shape[1] for r in parts)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return Rows(
        torch.cat([pad(r.input_ids, 0) for r in parts]),
        torch.cat([pad(r.attention_mask, 0) for r in parts]),
        torch.cat([pad(r.labels, IGNORE) for r in parts]),
    )


def group_losses(
    logits: torch.Tensor, labels: torch.Tensor, sizes: list[int]
) -> list[torch.Tensor]:
    """Mean next-token loss of each consecutive group of rows (what ``labels=`` gives per group)."""
    tok = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="none"
    ).view(labels.shape[0], -1)  # [batch, seq - 1]
    counted = (labels[:, 1:] != IGNORE).float()  # [batch, seq - 1]
    out, start = [], 0
    for n in sizes:
        part = slice(start, start + n)
        out.append(tok[part].sum() / counted[part].sum().clamp(min=1))
        start += n
    return out


def train_loop(
    model: torch.nn.Module,
    sources: list[tuple[Rows, int]],
    *,
    steps: int,
    lr: float,
    seed: int,
    warmup: int = 20,
    log_every: int = 10,
    on_step: Callable[[int, float], None] | None = None,
    extra: Callable[[torch.nn.Module, random.Random], list[torch.Tensor]] | None = None,
) -> TrainResult:
    """Train ``model``'s trainable parameters for ``steps`` steps.

    Each step draws ``k`` random rows from every ``(rows, k)`` source; the
    sources run as one forward pass and each source's mean loss counts equally
    (so a source of long rows does not outweigh one of short rows).
    ``extra(model, rng)`` returns further losses (e.g. batches run under an
    intervention), each weighted like one source; with no sources, its losses
    are the whole objective.
    ``on_step(step, loss)`` is called after every step (for progress bars).
    """
    import time

    start = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(f"batches-{seed}")
    torch.manual_seed(seed)
    model.train()
    losses, window = [], []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, shape="cosine", floor=0.1)
        n_terms = len(sources) or 1
        parts = [batch_rows(rows, rng.sample(range(len(rows.input_ids)), k)) for rows, k in sources]
        if not parts:
            terms = []
        elif len(parts) == 1:
            b = parts[0]
            terms = [
                model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
            ]
        else:  # one forward pass over all sources, each source's loss averaged on its own
            b = stack_rows(parts)
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            terms = group_losses(logits, b.labels, [len(r.input_ids) for r in parts])
        if extra is not None:
            terms += extra(model, rng)
        loss = sum(terms) / n_terms
        loss.backward()
        total = float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        window.append(total)
        if len(window) == log_every or step == steps - 1:
            losses.append(round(sum(window) / len(window), 4))
            window = []
        if on_step is not None:
            on_step(step, total)
    model.eval()
    return TrainResult(losses, steps, time.perf_counter() - start)


def add_lora(
    model: torch.nn.Module, rank: int, alpha: float, layers: tuple[int, ...] | None = None
):
    """Wrap ``model`` with LoRA adapters on :data:`LORA_TARGETS` of ``layers`` (all when None); only those train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(LORA_TARGETS),
        layers_to_transform=list(layers) if layers is not None else None,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, cfg)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, rows: Rows, batch_size: int = 32) -> float:
    """Mean next-token loss over ``rows`` (token-weighted)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows.input_ids), batch_size):
        idx = list(range(i, min(i + batch_size, len(rows.input_ids))))
        b = batch_rows(rows, idx)
        n = int((b.labels[:, 1:] != IGNORE).sum())
        out = model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels)
        total += float(out.loss) * n
        count += n
    return total / max(count, 1)
