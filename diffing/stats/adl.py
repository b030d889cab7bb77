"""Activation Difference Lens (Minder et al. 2025, "Narrow Finetuning Leaves Clearly Readable
Traces in Activation Differences").

The mean of ``x^f - x^b`` over the first few positions of *unrelated* plain text, at a
middle layer, is read through the fine-tuned model's logit lens (final norm, then
unembedding): its top tokens name what a narrow fine-tune was about. Adding the
difference (scaled) to the fine-tuned model's residual stream at that layer steers it
toward text like its fine-tuning data.

Position 0 (BOS, or the attention sink when a tokenizer has no BOS) is skipped: its
activations are outliers that would dominate the mean. The paper's readout of each
position separately is kept as per-position norms; the readout uses the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.arch import get_module
from diffing.generation import cut_at_eos, generate_ids, prompt_ids, prompt_text
from diffing.remote import input_device, remote_mode, trace_options
from diffing.tokens import pad_id_of
from diffing.traced import traced_logit_lens
from diffing.tracing import residual_output


class ADLResult(NamedTuple):
    """The difference vector and its logit-lens readout."""

    layer: int
    """Layer whose output (residual stream after that block) was differenced."""
    positions: list[int]
    """Token positions averaged (0 is the first token; position 0 itself is skipped)."""
    diff: torch.Tensor
    """``[d_model]`` mean of ``x^f - x^b`` over those positions of all plain-text documents."""
    per_position_norm: list[float]
    """``||mean diff||`` at each of ``positions`` separately."""
    mean_norm_finetuned: float
    """Mean ``||x^f||`` at those positions (the scale used for steering)."""
    documents: int
    """How many documents contributed."""
    promoted: list[dict]
    """Top tokens of the logit lens: ``{token, id, score}``, highest score first."""
    suppressed: list[dict]
    """Bottom tokens of the logit lens: ``{token, id, score}``, lowest score first."""


class ADLAccumulator:
    """Running per-position sums of ``x^f - x^b`` at one layer over the first ``n`` positions after position 0."""

    def __init__(self, layer: int, d_model: int, n_positions: int = 5):
        self.layer = layer
        self.n = n_positions
        self.diff_sum = torch.zeros(n_positions, d_model, dtype=torch.float64)  # [positions, d]
        self.norm_f_sum = torch.zeros(n_positions, dtype=torch.float64)  # [positions]
        self.count = torch.zeros(n_positions, dtype=torch.float64)  # [positions]
        self.documents = 0

    @torch.no_grad()
    def update(
        self, base: torch.Tensor, finetuned: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        """Add plain-text documents: ``base``/``finetuned`` ``[batch, seq, d]``, ``attention_mask`` ``[batch, seq]``."""
        end = min(1 + self.n, base.shape[1])
        if self.diff_sum.device != base.device:  # sums live where the activations are: no copies
            self.diff_sum, self.norm_f_sum, self.count = (
                t.to(base.device) for t in (self.diff_sum, self.norm_f_sum, self.count)
            )
        xb = base[:, 1:end].float()  # [batch, p, d]
        xf = finetuned[:, 1:end].float()  # [batch, p, d]
        mask = attention_mask[:, 1:end].to(base.device, non_blocking=True).bool()  # [batch, p]
        p = xb.shape[1]
        self.diff_sum[:p] += ((xf - xb) * mask[..., None]).sum(0).double()
        self.norm_f_sum[:p] += (xf.norm(dim=-1) * mask).sum(0).double()
        self.count[:p] += mask.sum(0).double()
        if p:  # documents with a position 1, counted on the host (the mask's host copy)
            self.documents += int(attention_mask[:, 1].bool().sum())

    def mean_diff(self) -> torch.Tensor:
        """``[d_model]`` mean difference over all counted (document, position) pairs."""
        self.diff_sum, self.norm_f_sum, self.count = (
            t.cpu() for t in (self.diff_sum, self.norm_f_sum, self.count)
        )
        return (self.diff_sum.sum(0) / self.count.sum().clamp_min(1)).float()

    def result(self, pair, *, top_k: int = 20) -> ADLResult:
        """Finish: the mean difference and its logit-lens readout through the fine-tuned model."""
        diff = self.mean_diff()
        per_pos = [
            float((self.diff_sum[i] / self.count[i]).norm())
            for i in range(self.n)
            if self.count[i] > 0
        ]
        promoted, suppressed = logit_lens_tokens(pair, diff, top_k=top_k)
        norm_f = float(self.norm_f_sum.sum() / self.count.sum().clamp_min(1))
        positions = [1 + i for i in range(self.n) if self.count[i] > 0]
        return ADLResult(
            self.layer, positions, diff, per_pos, norm_f, self.documents, promoted, suppressed
        )


@torch.no_grad()
def logit_lens(pair, vector: torch.Tensor, which: str = "finetuned") -> torch.Tensor:
    """``[vocab]`` logits of a residual-stream vector read through one model's final norm and unembedding."""
    lm = {"base": pair.base, "finetuned": pair.finetuned}[which]
    if remote_mode(lm):  # the weights are on NDIF (or the run simulates it): read it in a trace
        return traced_logit_lens(lm, pair.arch, vector)
    model = pair.hf(which)
    norm = get_module(model, pair.arch.final_norm)
    unembed = get_module(model, pair.arch.unembed)
    param = next(unembed.parameters())
    x = vector.to(device=param.device, dtype=param.dtype).reshape(1, 1, -1)  # [1, 1, d]
    return unembed(norm(x)).reshape(-1).float().cpu()


def logit_lens_tokens(
    pair, vector: torch.Tensor, *, top_k: int = 20, which: str = "finetuned"
) -> tuple[list, list]:
    """``(promoted, suppressed)``: the ``top_k`` highest and lowest logit-lens tokens as ``{token, id, score}``."""
    logits = logit_lens(pair, vector, which)
    if not torch.isfinite(logits).all() or float(vector.norm()) == 0.0:
        return [], []
    k = min(top_k, logits.numel())
    tok = pair.tokenizer

    def rows(vals, ids):
        return [
            {"token": tok.decode([i]), "id": i, "score": float(v)}
            for v, i in zip(vals.tolist(), ids.tolist())
        ]

    return rows(*logits.topk(k)), rows(*_bottom(logits, k))


def _bottom(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    vals, ids = (-logits).topk(k)
    return -vals, ids


IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
"""Patchscope's identity prompt (Ghandeharioun et al. 2024): the model repeats what sits at ``?``."""


@torch.no_grad()
def patchscope(
    pair,
    vector: torch.Tensor,
    layer: int,
    *,
    norms: Sequence[float],
    prompt: str = IDENTITY_PROMPT,
    top_k: int = 10,
) -> list[dict]:
    """Patchscope readout of a direction: the fine-tuned model's next token after ``prompt`` when the
    last position's residual stream at ``layer`` is replaced by the unit ``vector`` scaled to each norm.

    Returns one ``{norm, tokens: [{token, id, prob}]}`` per norm. The ADL paper reads its
    difference vectors this way besides the logit lens.
    """
    lm, arch, tok = pair.finetuned, pair.arch, pair.tokenizer
    device = input_device(lm)
    ids = torch.tensor(
        [tok(prompt, add_special_tokens=True)["input_ids"]], device=device
    )  # [1, seq]
    unit = vector.float() / vector.float().norm().clamp_min(1e-12)  # [d]
    k = min(top_k, int(pair.config.vocab_size))
    out = []
    for norm in norms:  # a traced forward (local or on NDIF): the placeholder's stream is replaced
        patch = float(norm) * unit  # [d]
        with lm.trace(
            {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, **trace_options(lm)
        ):
            hidden = residual_output(lm, arch, layer)  # [1, seq, d]
            hidden[:, -1] = patch.to(device=hidden.device, dtype=hidden.dtype)
            probs = torch.softmax(lm.output.logits[0, -1].float(), -1)  # [vocab]
            p, top = probs.topk(k)
            p, top = p.save(), top.save()
        p, top = (getattr(t, "value", t).cpu() for t in (p, top))
        tokens = [
            {"token": tok.decode([i]), "id": i, "prob": float(q)}
            for q, i in zip(p.tolist(), top.tolist())
        ]
        out.append({"norm": float(norm), "tokens": tokens})
    return out


def _generate(
    lm,
    arch,
    ids: torch.Tensor,
    vector: torch.Tensor | None,
    layer: int,
    *,
    steered: slice = slice(None),
    max_new_tokens: int,
    pad_token_id: int,
    do_sample: bool = False,
) -> torch.Tensor:
    """Greedy ids ``[batch, prompt + new]`` of the unpadded ``ids``, adding ``vector`` to block
    ``layer``'s output in rows ``steered`` at every step (``do_sample`` must stay False)."""
    if do_sample:
        raise ValueError("steering examples are greedy")
    step = None
    if vector is not None:

        def step() -> None:
            hidden = residual_output(lm, arch, layer)  # [batch, seq, d]
            v = vector.to(device=hidden.device, dtype=hidden.dtype)
            hidden[steered] = hidden[steered] + v

    new = generate_ids(
        lm, ids, torch.ones_like(ids), max_new_tokens=max_new_tokens, pad_id=pad_token_id, step=step
    )  # [batch, new]
    return torch.cat([ids.cpu(), new], dim=1)


def _generate_both(lm, arch, ids: torch.Tensor, vector: torch.Tensor, layer: int, **kwargs):
    """Greedy ids ``[prompt + new]`` of two generations: plain, then steered by ``vector`` at ``layer``.

    A local model generates both rows in one batch (the same prompt twice, so no padding):
    half the decoding steps. A remote trace keeps two generations, as NDIF runs them.
    """
    if remote_mode(lm):
        return [_generate(lm, arch, ids, v, layer, **kwargs)[0] for v in (None, vector)]
    both = ids.expand(2, -1)  # [2, prompt]
    return list(_generate(lm, arch, both, vector, layer, steered=slice(1, None), **kwargs))


@torch.no_grad()
def steer(
    pair,
    diff: torch.Tensor,
    layer: int,
    prompts: Sequence,
    *,
    scale: float,
    max_new_tokens: int = 24,
) -> list[dict]:
    """Greedy generations of the fine-tuned model with and without ``scale * diff`` added at ``layer``.

    ``prompts`` are strings or message lists (formatted with the chat template and a
    generation prompt). The addition applies at every position of the block's output,
    prompt and generated tokens alike, at every decoding step (an nnsight intervention, so
    it runs the same on NDIF).
    """
    lm, tok = pair.finetuned, pair.tokenizer
    device = input_device(lm)
    vector = scale * diff.float()  # [d]
    pad = pad_id_of(tok)
    eos = [] if tok.eos_token_id is None else [tok.eos_token_id]
    out = []
    for prompt in prompts:  # strings as plain text, message lists with the chat template
        ids = prompt_ids(tok, prompt, chat=False)
        x = torch.tensor([ids], device=device)  # [1, prompt]
        gen = _generate_both(
            lm, pair.arch, x, vector, layer, max_new_tokens=max_new_tokens, pad_token_id=pad
        )
        gens = {
            name: tok.decode(
                cut_at_eos([gen[row][x.shape[1] :].tolist()], eos, keep_eos=True)[0],
                skip_special_tokens=False,
            )
            for row, name in enumerate(("unsteered", "steered"))
        }
        out.append({"prompt": prompt_text(prompt), **gens})
    return out
