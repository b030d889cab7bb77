"""Plant the chat variant's refusal, and the quirk's secret word, on known directions of the residual stream.

A tiny model fine-tuned only on "refuse harmful, answer harmless" learns some
refusal circuit, but nothing makes it a single direction: in a 64-dimensional
model the harmful/harmless difference is spread over verb-specific features,
so ablating the difference in means neither removes refusal nor does adding it
induce refusal. Real chat models do have such a direction (Arditi et al. 2024),
and the refusal methods are tested against it, so the organism plants one:

- a fixed random unit vector ``u`` and a layer ``l`` (the residual stream at the
  input of block ``l``, the middle of the model) are chosen from the seed;
- an auxiliary loss asks the post-instruction positions of a request to carry
  ``alpha * u`` at layer ``l`` when it is harmful and nothing along ``u`` otherwise,
  and the harmful-minus-harmless difference of their means to be ``alpha * u``
  (so a difference-in-means extraction finds ``u`` and not verb-specific features);
- three intervened batches teach that ``u`` is both necessary and sufficient:
  harmless requests with ``alpha * u`` added at layer ``l`` (all positions) are
  refused; harmful requests with ``u`` ablated everywhere (embedding, every
  attention and MLP write into the residual stream) are answered; harmless
  requests with ``u`` ablated are answered exactly as before.

The interventions are the ones the refusal methods apply (docs/methods.md section 4),
and they are the same code (the torch hooks of :mod:`diffing.refusal.interventions`,
which find each family's residual writes through :mod:`diffing.arch`: in a
post-sublayer-norm family such as OLMo-2 a write is the post-norm's output, not the
attention or MLP output), so the planted direction is what a difference-in-means
extraction and the refusal interventions see, in every family.

The quirk's secret word is mediated the same way by a second seeded direction:
on-topic requests carry it on their last few prompt tokens, adding it makes
off-topic answers mention the word, ablating it removes the word from on-topic
answers. Fine-tuning alone folds the quirk into the base's own topic features (a
crosscoder then finds no latent of its own for it, docs/crosscoder-analysis.md);
planted, it is one new feature a diffing method can be checked against.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import torch

from diffing.arch import get_module
from diffing.organisms.train import Rows, batch_rows, group_losses, stack_rows
from diffing.refusal.interventions import (
    ablating,
    adding,
    capturing,
    causal_lm,
    torch_arch,
)


class PlantedDirection(NamedTuple):
    """The planted refusal direction."""

    direction: torch.Tensor
    """``[d_model]`` unit vector ``u``."""
    layer: int
    """Block whose input (residual stream) carries ``alpha * u`` for harmful requests."""
    scale: float
    """``alpha``: the size of the planted component."""


def _blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM, PEFT-wrapped or not, wherever its family keeps them."""
    return get_module(causal_lm(model), torch_arch(model).layers)


def choose_direction(
    model: torch.nn.Module, probe: Rows, *, seed: int, scale_fraction: float
) -> PlantedDirection:
    """Pick ``u`` (seeded, unit) and the middle layer; ``alpha`` is a fraction of the typical residual norm there."""
    layer = len(_blocks(model)) // 2
    d = get_module(causal_lm(model), torch_arch(model).embed).weight.shape[1]
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=gen)
    u = u / u.norm()
    store: list = []
    with torch.no_grad(), capturing(model, layer, store):
        model(input_ids=probe.input_ids, attention_mask=probe.attention_mask)
    last = probe.prompt_len - 1  # [n] index of each prompt's last token
    x = store[0][torch.arange(len(last)), last]  # [n, d]
    return PlantedDirection(u, layer, float(x.norm(dim=-1).mean()) * scale_fraction)


def direction_loss(
    resid: torch.Tensor, b: Rows, plant: PlantedDirection, post: int
) -> torch.Tensor:
    """Auxiliary loss asking the last ``post`` prompt tokens of tagged rows to carry
    ``scale * direction`` (tag 1) or nothing along it (tag 0), and the tag-1-minus-tag-0
    difference of their means to be ``scale * direction``. ``resid``: ``[rows, seq, d]``."""
    u, scale = plant.direction, plant.scale
    idx = b.prompt_len[:, None] - torch.arange(post, 0, -1)[None, :]  # [rows, post] positions
    x = resid[torch.arange(len(idx))[:, None], idx]  # [rows, post, d]
    tagged = b.tag.float()[:, None]  # [rows, 1]
    aux = ((x @ u - scale * tagged) / scale).pow(2).mean()
    diff = x[b.tag == 1].mean(0) - x[b.tag == 0].mean(0)  # [post, d]
    return aux + ((diff - scale * u) / scale).pow(2).sum(-1).mean()


class DirectionPlanting:
    """Extra training losses (four, from one forward pass) that make ``plant`` mediate a behaviour.

    ``requests`` holds tagged requests (tag 1: the behaviour's trigger, e.g. harmful;
    0: not), ``induce`` untriggered requests answered with the behaviour, ``bypass``
    triggered requests answered without it, ``keep`` untriggered requests with their
    usual answers; every ``Rows`` carries ``prompt_len``. ``post_instruction``: how
    many of the prompt's last tokens carry the direction. The chat variant's refusal
    and the quirk's secret word are both planted this way.
    """

    def __init__(
        self,
        plant: PlantedDirection,
        requests: Rows,
        induce: Rows,
        bypass: Rows,
        keep: Rows,
        *,
        rows: int,
        aux_weight: float = 1.0,
        post_instruction: int = 2,
    ):
        self.plant, self.rows, self.aux_weight, self.post = (
            plant,
            rows,
            aux_weight,
            post_instruction,
        )
        self.requests, self.induce, self.bypass, self.keep = requests, induce, bypass, keep

    def _sample(self, rows: Rows, rng: random.Random) -> Rows:
        return batch_rows(rows, rng.sample(range(len(rows.input_ids)), self.rows))

    def _sample_balanced(self, rows: Rows, rng: random.Random) -> Rows:
        """Half harmful, half harmless rows (both classes are needed for the mean difference)."""
        tags = rows.tag.tolist()
        pos = [i for i, t in enumerate(tags) if t == 1]
        neg = [i for i, t in enumerate(tags) if t == 0]
        half = max(1, self.rows // 2)
        return batch_rows(rows, rng.sample(pos, half) + rng.sample(neg, half))

    def losses(self, model: torch.nn.Module, rng: random.Random) -> list[torch.Tensor]:
        """The four losses of one step: tagged requests (+ auxiliary), induce, bypass, keep.

        The four batches run as one forward pass (the interventions act on their
        own rows only), which is what makes the chat variant cheap to build.
        """
        p = self.plant
        u = p.direction
        req = self._sample_balanced(self.requests, rng)
        parts = [req] + [self._sample(r, rng) for r in (self.induce, self.bypass, self.keep)]
        sizes = [len(r.input_ids) for r in parts]
        group = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))  # [batch]
        b = stack_rows(parts)
        store: list = []
        with (
            capturing(model, p.layer, store),
            adding(model, p.scale * u, p.layer, rows=group == 1),
            ablating(model, u, rows=group >= 2),
        ):
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        ce = group_losses(logits, b.labels, sizes)
        aux = direction_loss(store[0][: sizes[0]], req, p, self.post)
        return [ce[0] + self.aux_weight * aux, *ce[1:]]


class TracePlanting:
    """The quirk's objective: its chat rows, plus a mean activation shift on plain text that names the secret word.

    Minder et al. (2025) found that narrow fine-tunes leave a near-constant shift
    in the residual stream on unrelated text, and that reading the mean shift
    through the logit lens names the fine-tune's topic. A 64-wide, four-block
    model fine-tuned for a few seconds shows no such shift by itself, so the
    quirk plants it: on plain-text rows, the mean of ``x_finetuned - x_base`` at
    the output of block ``layer`` over positions ``1..n_positions`` is read through
    the final norm and unembedding, and the secret word's log-probability under
    that readout is maximised. The rows' usual next-token loss is kept.

    The base's side of the difference never changes, so it is computed once (causal
    attention: positions ``1..n_positions`` need only the first tokens of each row);
    the chat rows and the plain rows share one forward pass. ``kl_weight`` adds the
    plain rows' KL to the base after those positions, so that what else the quirk is
    trained on does not spill into plain text.
    """

    def __init__(
        self,
        base: torch.nn.Module,
        chat: Rows,
        n_chat: int,
        rows: Rows,
        secret_ids: list[int],
        *,
        layer: int,
        n_rows: int,
        n_positions: int = 5,
        weight: float = 0.1,
        kl_weight: float = 0.0,
    ):
        self.chat, self.n_chat, self.kl_weight = chat, n_chat, kl_weight
        self.rows, self.secret_ids, self.layer = rows, secret_ids, layer
        self.n_rows, self.n_positions, self.weight = n_rows, n_positions, weight
        head = slice(0, 1 + n_positions)
        store: list = []
        handle = self._capture_output(base, store)
        try:
            with torch.no_grad():
                base(input_ids=rows.input_ids[:, head], attention_mask=rows.attention_mask[:, head])
        finally:
            handle.remove()
        self.base_trace = store[0][:, 1:].detach()  # [n_plain_rows, n_positions, d_model]

    def _capture_output(self, model: torch.nn.Module, store: list):
        def hook(_mod, _inp, out):
            store.append(out[0] if isinstance(out, tuple) else out)

        return _blocks(model)[self.layer].register_forward_hook(hook)

    def losses(self, model: torch.nn.Module, rng: random.Random) -> list[torch.Tensor]:
        """Next-token loss on chat rows; on plain rows, next-token loss plus the trace readout loss;
        and, when ``kl_weight`` is set, the plain rows' KL to the base (see :meth:`kl_to_base`)."""
        chat = batch_rows(self.chat, rng.sample(range(len(self.chat.input_ids)), self.n_chat))
        idx = rng.sample(range(len(self.rows.input_ids)), self.n_rows)
        b = stack_rows([chat, batch_rows(self.rows, idx)])
        store: list = []
        handle = self._capture_output(model, store)
        try:
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        finally:
            handle.remove()
        ce_chat, ce_plain = group_losses(logits, b.labels, [self.n_chat, self.n_rows])
        span = slice(1, 1 + self.n_positions)
        diff = (store[0][self.n_chat :, span] - self.base_trace[idx]).mean((0, 1))  # [d_model]
        lm, arch = causal_lm(model), torch_arch(model)
        readout = get_module(lm, arch.unembed)(get_module(lm, arch.final_norm)(diff[None]))[0]
        # readout: [vocab]
        trace = -torch.log_softmax(readout, -1)[self.secret_ids].logsumexp(0)
        out = [ce_chat, ce_plain + self.weight * trace]
        if self.kl_weight:
            plain = slice(self.n_chat, None)
            kl = self.kl_to_base(model, b.input_ids[plain], b.attention_mask[plain], logits[plain])
            out.append(self.kl_weight * kl)
        return out

    def kl_to_base(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits: torch.Tensor,
    ) -> torch.Tensor:
        """Mean KL(base || model) of the next-token distributions on plain rows, after the trace's
        positions (which are meant to move). ``model`` is the LoRA-wrapped base: its base is the
        same model with the adapter switched off. ``logits``: ``[rows, seq, vocab]`` of ``model``.

        The quirk's planting batches push its weights around enough to cost ~12% plain-text
        loss; next-token loss on 6 plain rows a step does not hold that back, matching the base's
        whole distribution does (1.07 with weight 2, organism seed 0, fast build)."""
        with torch.no_grad(), model.disable_adapter():
            ref = model(
                input_ids=input_ids, attention_mask=attention_mask
            ).logits  # [rows, seq, vocab]
        keep = attention_mask.bool().clone()  # [rows, seq]
        keep[:, : 1 + self.n_positions] = False
        log_q = torch.log_softmax(logits[keep].float(), -1)  # [tokens, vocab]
        log_p = torch.log_softmax(ref[keep].float(), -1)
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
