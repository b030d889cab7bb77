"""``compute_stats``: all feature-change statistics of a pair in one pass over the data.

Each batch is traced once per model (every requested layer plus the logits in the
same forward), and that one pair of forwards feeds the activation statistics, the
per-token KL and the Activation Difference Lens together; weights are compared
tensor by tensor. On a local pair the forwards use plain hooks and every statistic
accumulates on the models' device, so no batch waits for the host (docs/benchmarks/stats.md). The result is the ``stats.json`` dictionary (fields in docs/stats.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from diffing.errors import DiffingError
from diffing.io import write_json
from diffing.progress import bar as progress_bar
from diffing.stats.activations import ActivationAccumulator
from diffing.stats.adl import ADLAccumulator, patchscope, steer
from diffing.stats.config import StatsConfig
from diffing.stats.outputs import KLAccumulator, token_kl
from diffing.stats.remote import trace_pair_remote
from diffing.stats.weight_sketch import sketched_weight_stats
from diffing.stats.weights import (
    WeightStatsConfig,
    per_layer_change,
    stats_to_json,
    weight_stats,
    weight_stats_from_files,
)
from diffing.tokens import Encoded, encode_chat, encode_text, pad_batch, pad_id_of
from diffing.tracing import forward_layers

log = logging.getLogger(__name__)


def _take(docs: Sequence, encoder, budget: int, max_length: int) -> tuple[list[Encoded], int]:
    """Encode documents in order until ``budget`` tokens; the last is cut to fit. Skips documents under 2 tokens."""
    out, used = [], 0
    for doc in docs:
        if used >= budget:
            break
        enc = encoder(doc, max_length)
        n = min(len(enc.input_ids), budget - used)
        if n < 2:
            continue
        out.append(Encoded(enc.input_ids[:n], enc.roles[:n]))
        used += n
    return out, used


def encode_documents(
    tokenizer, texts: Sequence[str] | None, chats: Sequence | None, tokens: int, max_length: int
):
    """``(text_docs, chat_docs)`` encoded within a total budget of ``tokens`` (half each when both kinds are given)."""
    if tokens is None or int(tokens) <= 0:
        raise DiffingError(
            f"`tokens` must be a positive number of tokens, got {tokens}", fields=("tokens",)
        )
    if max_length < 2:
        raise DiffingError(f"max_length must be at least 2 tokens, got {max_length}")
    texts, chats = (
        list(texts or []),
        [c["messages"] if isinstance(c, dict) else c for c in (chats or [])],
    )
    text_budget = tokens // 2 if (texts and chats) else tokens
    text_docs, used = _take(
        texts, lambda t, m: encode_text(tokenizer, t, max_length=m), text_budget, max_length
    )
    chat_docs, _ = _take(
        chats, lambda c, m: encode_chat(tokenizer, c, max_length=m), tokens - used, max_length
    )
    if not text_docs and not chat_docs:
        raise DiffingError(
            f"the data yielded no tokens ({len(texts)} texts, {len(chats)} chats, none with 2 or more tokens); "
            "pass non-empty plain text (`data`: a .txt/.jsonl file) or chat transcripts",
            fields=("data",),
        )
    return text_docs, chat_docs


def _batches(docs: list[Encoded], size: int, pad_id: int):
    docs = sorted(docs, key=lambda e: -len(e.input_ids))  # similar lengths together: less padding
    for i in range(0, len(docs), size):
        yield pad_batch(docs[i : i + size], pad_id)


def _steer_prompts(tokenizer, texts, chats, n: int) -> list:
    if chats:
        prompts = []
        for chat in chats[:n]:
            msgs = chat["messages"] if isinstance(chat, dict) else chat
            first_user = next((i for i, m in enumerate(msgs) if m.get("role") == "user"), None)
            if first_user is not None:
                prompts.append(list(msgs[: first_user + 1]))
        return prompts
    return [
        tokenizer.decode(tokenizer(t)["input_ids"][:8], skip_special_tokens=True)
        for t in (texts or [])[:n]
    ]


@torch.no_grad()
def compute_stats(
    pair,
    *,
    texts: Sequence[str] | None = None,
    chats: Sequence | None = None,
    tokens: int = 100_000,
    layers: Sequence[int] | None = None,
    adl_layer: int | None = None,
    out_dir: str | Path | None = None,
    config: StatsConfig | None = None,
    progress: bool = False,
) -> dict:
    """Weights, activations, KL and ADL statistics of ``pair`` on up to ``tokens`` tokens of data.

    ``texts`` are plain documents, ``chats`` message lists (or ``{"messages": ...}``);
    ``layers`` defaults to every layer, ``adl_layer`` to the middle one. With
    ``out_dir`` the result is written as ``stats.json``, the ADL vector as
    ``adl_diff.safetensors``, and the figures as PNGs. ``progress`` draws a tqdm bar
    over the tokens (stderr). Returns the ``stats.json`` dict.
    """
    cfg = config or StatsConfig()
    layers = pair.check_layers(range(pair.n_layers) if layers is None else layers)
    adl_layer = pair.check_layers([pair.n_layers // 2 if adl_layer is None else adl_layer])[0]
    text_docs, chat_docs = encode_documents(pair.tokenizer, texts, chats, tokens, cfg.max_length)
    traced = sorted(set(layers) | {adl_layer})
    acts = ActivationAccumulator(layers, pair.d_model)
    kl = KLAccumulator(
        pair.tokenizer,
        n_contexts=cfg.n_contexts,
        context_tokens=cfg.context_tokens,
        max_offset=cfg.max_offset,
    )
    adl = ADLAccumulator(adl_layer, pair.d_model, cfg.adl_positions)
    adl_kind = "text" if text_docs else "chat"
    pad = pad_id_of(pair.tokenizer)
    remote = bool(pair.remote)
    device = torch.device("cpu") if remote else next(pair.hf("base").parameters()).device
    pin = device.type == "cuda"
    coverage: list[torch.Tensor] = []  # remote: fine-tuned mass covered by the top-k KL
    n_total = sum(len(e.input_ids) for e in text_docs + chat_docs)
    weights = _start_weights(pair, cfg, device)  # on a GPU: alongside the forwards
    bar = progress_bar(total=n_total, unit="tok", desc="stats", enabled=progress)
    for kind, docs in (("text", text_docs), ("chat", chat_docs)):
        for batch in _batches(docs, cfg.batch_size, pad):
            real = batch.attention_mask.bool()  # [batch, seq] (host)
            keep = real.clone()
            keep[:, 0] = False  # BOS / attention sink: an outlier in every model
            if remote:  # only small tensors come back: top-k KL (stats/remote.py)
                r = trace_pair_remote(
                    pair, batch.input_ids, batch.attention_mask, traced, k=cfg.remote_top_k
                )
                layers_b, layers_f, tok_kl = r.base, r.finetuned, r.kl
                preds_b, preds_f = r.base_top, r.finetuned_top
                coverage.append(r.coverage[real])
                ids, roles = batch.input_ids, batch.roles
            else:  # queued on the device back to back: nothing below waits for it
                ids, mask, roles, keep = (
                    (t.pin_memory() if pin else t).to(device, non_blocking=True)
                    for t in (batch.input_ids, batch.attention_mask, batch.roles, keep)
                )
                padded = bool((batch.attention_mask == 0).any())  # host check: no device sync
                b, f = (
                    forward_layers(
                        lm._module, pair.arch, ids, mask if padded else None, traced, logits=True
                    )
                    for lm in pair.models
                )
                layers_b, layers_f, tok_kl = b.layers, f.layers, token_kl(f.logits, b.logits)
                preds_b, preds_f = b.logits, f.logits
                real = mask.bool()
            acts.update(layers_b, layers_f, keep, roles)
            kl.update(kind, tok_kl, real, roles, ids, preds_b, preds_f)
            if kind == adl_kind:
                adl.update(layers_b[adl_layer], layers_f[adl_layer], batch.attention_mask)
            bar.update(int(batch.attention_mask.sum()))
    bar.close()
    n_text = sum(len(e.input_ids) for e in text_docs)
    n_chat = sum(len(e.input_ids) for e in chat_docs)
    result: dict = {
        "pair": {
            "base": pair.base_ref,
            "finetuned": pair.finetuned_ref,
            "family": pair.config.model_type,
            "n_layers": pair.n_layers,
            "d_model": pair.d_model,
        },
        "config": {**asdict(cfg), "tokens": int(tokens), "layers": layers, "adl_layer": adl_layer},
        "tokens": {
            "total": n_text + n_chat,
            "text": n_text,
            "chat": n_chat,
            "documents": {"text": len(text_docs), "chat": len(chat_docs)},
        },
    }
    if remote:
        result["remote"] = {
            "mode": "ndif" if pair.remote is True else "simulated (remote='local')",
            "kl": f"top-{cfg.remote_top_k} lower bound (stats/remote.py); exact when the coverage is 1",
            "kl_mean_coverage": float(torch.cat(coverage).double().mean()) if coverage else None,
            "weights": (
                "not computed"
                if not cfg.weights
                else "exact, streamed from the checkpoints' files"
                if cfg.weights_from_files
                else f"sketched on the server ({cfg.weight_sketch} x {cfg.weight_sketch} per matrix;"
                " weight_sketch.py): relative changes are estimates with a standard error"
            ),
        }
    if cfg.weights:
        log.info("stats: weight deltas and effective ranks")
        result["weights"] = weights()
    result["activations"] = {"layers": acts.result()}
    result["kl"] = kl.result()
    log.info("stats: Activation Difference Lens readout, Patchscope and steering")
    result["adl"] = _adl_section(pair, adl, adl_kind, texts, chats, cfg)
    if out_dir is not None:
        save_stats(result, out_dir, adl_diff=adl.mean_diff())
    return result


def _start_weights(pair, cfg: StatsConfig, device: torch.device) -> Callable[[], dict | None]:
    """Start the weight statistics; returns a function giving their section (None when off).

    On a GPU they run on a thread with their own CUDA stream while the main thread queues
    the forwards: the eigenvalue solves are latency-bound and the forwards throughput-bound,
    so they overlap. Elsewhere they run when asked for, as before (a CPU has no idle units).
    """
    if not cfg.weights:
        return lambda: None
    if device.type != "cuda" or pair.remote:
        return lambda: weights_section(pair, cfg)
    from concurrent.futures import ThreadPoolExecutor

    def on_side_stream() -> dict:
        stream = torch.cuda.Stream(device=device)
        with torch.cuda.stream(stream):
            out = weights_section(pair, cfg)
        stream.synchronize()
        return out

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weight-stats")
    future = pool.submit(on_side_stream)
    pool.shutdown(wait=False)
    return future.result


def weights_section(pair, cfg: StatsConfig) -> dict:
    """``stats.json["weights"]``: exact (loaded models, adapter deltas or files) or sketched (remote pair)."""
    wcfg = WeightStatsConfig(energy=cfg.energy)
    extra: dict = {}
    if cfg.weights_from_files:  # exact, streamed from the checkpoints (downloads them if remote)
        stats, source = weight_stats_from_files(pair.base_ref, pair.finetuned_ref, wcfg), "files"
    elif pair.remote:  # the weights stay on the server: sketches come back
        stats = sketched_weight_stats(pair, wcfg, k=cfg.weight_sketch)
        source, extra = "sketch", {"sketch_size": cfg.weight_sketch}
    else:
        stats = weight_stats(pair, wcfg)
        source = "adapter" if pair.adapter is not None else "memory"
    return {
        "source": source,
        **extra,
        "energy": cfg.energy,
        "modules": stats_to_json(stats),
        "layers": per_layer_change(stats, pair.n_layers),
    }


def _adl_section(pair, adl: ADLAccumulator, kind: str, texts, chats, cfg: StatsConfig) -> dict:
    res = adl.result(pair, top_k=cfg.adl_top_k)
    norm = float(res.diff.norm())
    section = {
        "layer": res.layer,
        "positions": res.positions,
        "source": kind,
        "documents": res.documents,
        "diff_norm": norm,
        "per_position_norm": res.per_position_norm,
        "mean_norm_finetuned": res.mean_norm_finetuned,
        "promoted_tokens": res.promoted,
        "suppressed_tokens": res.suppressed,
        "steering": {"scale": cfg.steer_scale, "examples": []},
        "patchscope": [],
    }
    if norm > 0 and math.isfinite(norm) and cfg.patchscope_scales:
        norms = [s * res.mean_norm_finetuned for s in cfg.patchscope_scales]
        section["patchscope"] = patchscope(pair, res.diff, res.layer, norms=norms)
    prompts = _steer_prompts(pair.tokenizer, texts, chats, cfg.steer_prompts)
    if prompts and norm > 0 and math.isfinite(norm):
        vector = (
            res.diff / norm * res.mean_norm_finetuned
        )  # unit direction at the layer's typical norm
        section["steering"]["examples"] = steer(
            pair, vector, res.layer, prompts, scale=cfg.steer_scale, max_new_tokens=cfg.steer_tokens
        )
    return section


def save_stats(result: dict, out_dir: str | Path, *, adl_diff: torch.Tensor | None = None) -> Path:
    """Write ``stats.json``, ``adl_diff.safetensors`` and the figures into ``out_dir``; returns the JSON path."""
    from diffing.stats.figures import write_figures

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if adl_diff is not None:
        from safetensors.torch import save_file

        save_file(
            {"diff": adl_diff.contiguous()},
            str(out / "adl_diff.safetensors"),
            metadata={"layer": str(result["adl"]["layer"])},
        )
    result["figures"] = write_figures(result, out)
    # an infinite relative change (a zero base tensor) or a NaN is written as null and listed
    return write_json(out / "stats.json", result, non_finite="null")
