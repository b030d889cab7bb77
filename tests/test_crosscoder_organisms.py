"""Crosscoder analysis on the model organisms, checked against the ground truth in organism.json.

A BatchTopK crosscoder is trained on each pair at the residual stream where the chat variant's
refusal direction is planted (the input of block ``layer``, i.e. the output of block
``layer - 1``), then read with ``analyze_crosscoder``:

- ``chat``: a chat-only latent flagged genuine by Latent Scaling fires mainly on the template
  tokens of harmful requests (its top contexts end in a harmful verb's request), and the causal
  check with the genuine chat-only latents closes more KL than the random control;
- ``null``: no genuine chat-only latent.

And at the layer where the quirk's activation-difference trace is planted: the difference of the
quirk crosscoder's decoder biases (the shift no latent carries) names the secret word through the
fine-tuned model's logit lens, and null's does not.

Measured on the fast build (1,024 latents, k 4, 2,000 steps of 1,024 tokens, 60k-token store),
crosscoder seeds 0 / 1 / 2: chat has one chat-only latent each time (Δ 0.929 / 0.945 / 0.916,
genuine), firing on 11-25% of template tokens and 0.1-0.2% of plain text; its genuine set closes
10.5 / 9.3 / 8.5% of KL(chat || base-patched) against 0.0 / 0.0 / 0.5% for random latents;
null has no chat-only latent (max Δ 0.62 / 0.60).

Not asserted (issue 6 leaves it open): on ``quirk``, a genuine chat-only latent naming the secret
word. The quirk's bird-question latent at the last layer has the secret word first in its
fine-tuned logit lens, but Δ 0.84 ("other"): the base's own representation of those template
tokens is merged into it. With the quirk's own answers in the data, one crosscoder seed out of two
found it chat-only (Δ 0.915); see docs/crosscoder-analysis.md. The secret word does show in the
quirk crosscoder's decoder-bias difference (asserted below), which is not a latent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffing.crosscoder import CrossCoderConfig, train_crosscoder
from diffing.crosscoder.analyze import analyze_crosscoder
from diffing.models import ModelPair
from diffing.store.harvesting import harvest

pytestmark = pytest.mark.slow
TOKENS = 60_000
"""Store size per pair (half plain text, half chat transcripts of the organism's corpus)."""
CROSSCODER = dict(dict_size=1024, k=4, steps=2000, batch_size=1024, auxk_alpha=1.0)
"""A small BatchTopK crosscoder: sparse enough (k 4) that latents are specific to one context
(k 8 isolated the refusal latent with 2 of 3 crosscoder seeds, k 4 with 3 of 3)."""


def _analyse(
    root: Path, variant: str, layer: int, tmp: Path, *, steps: int = 2000, n_chats: int = 64
):
    pair = ModelPair.load(str(root / "base"), str(root / variant))
    corpus = json.loads((root / "organism.json").read_text())["layout"]["corpus"]
    store = harvest(
        pair,
        tmp / f"store-{variant}-{layer}",
        layers=[layer],
        data=[str(root / corpus["text"]), str(root / corpus["chat"])],
        tokens=TOKENS,
        seq_len=128,
        batch_size=16,
        progress=False,
    )
    cfg = CrossCoderConfig(
        **{**CROSSCODER, "steps": steps},
        layer=layer,
        lr_warmup_steps=100,
        threshold_start_step=100,
        checkpoint_every=0,
    )
    cc = train_crosscoder(store, cfg, tmp / f"cc-{variant}-{layer}").crosscoder
    lines = (root / corpus["chat"]).read_text().splitlines()[:n_chats]
    chats = [json.loads(line) for line in lines]
    return analyze_crosscoder(
        cc, store, tmp / f"analysis-{variant}-{layer}", pair=pair, top=10, causal_texts=chats
    )


@pytest.fixture(scope="module")
def analyses(organisms, tmp_path_factory):
    """``(truth, {variant: AnalysisResult})`` for chat and null at the planted layer."""
    root = Path(organisms)
    truth = json.loads((root / "organism.json").read_text())
    layer = truth["variants"]["chat"]["planted"]["refusal_direction"]["layer"] - 1
    tmp = tmp_path_factory.mktemp("cc_organisms")
    return truth, {v: _analyse(root, v, layer, tmp) for v in ("chat", "null")}


def _genuine_chat_only(res) -> list[dict]:
    return [
        r
        for r in res.latents
        if r["class"] == "chat_only" and (r.get("latent_scaling") or {}).get("flag") == "genuine"
    ]


def _harmful_request_context(ctx: dict, harmful: list[str], harmless: list[str]) -> bool:
    """The marked token is a template token right after a user request that names a harmful verb."""
    at, roles, toks = ctx["index_in_window"], ctx["roles"], ctx["tokens"]
    if roles[at] != "template":
        return False
    i = at - 1
    while i >= 0 and roles[i] == "template":  # e.g. the end-of-turn token before the marker
        i -= 1
    request = []
    while i >= 0 and roles[i] == "user":
        request.insert(0, toks[i])
        i -= 1
    words = set("".join(request).lower().replace(".", " ").replace("?", " ").split())
    return bool(words & set(harmful)) and not words & set(harmless)


def test_chat_has_genuine_chat_only_latent_on_harmful_request_templates(analyses):
    truth, res = analyses
    planted = truth["variants"]["chat"]["planted"]
    harmful, harmless = planted["harmful_verbs"], planted["harmless_verbs"]
    genuine = _genuine_chat_only(res["chat"])
    assert genuine, res["chat"].summary["classes"]
    found = []
    for r in genuine:
        by_role = r["frequency_by_role"]
        ctxs = r.get("contexts") or []
        hits = sum(_harmful_request_context(c, harmful, harmless) for c in ctxs)
        found.append((r["latent"], r["delta"], by_role, hits, len(ctxs)))
        if (
            ctxs
            and hits >= 0.8 * len(ctxs)
            and by_role["template"] > 5 * max(by_role["text"], by_role["assistant"])
        ):
            return
    pytest.fail(f"no genuine chat-only latent fires mainly on harmful-request templates: {found}")


def test_causal_check_genuine_latents_beat_random(analyses):
    _, res = analyses
    closed = res["chat"].summary["causal"]["fraction_closed"]
    assert closed["chat_only_genuine"] > closed["random"] + 0.03, closed


def test_null_has_no_genuine_chat_only_latents(analyses):
    _, res = analyses
    assert len(_genuine_chat_only(res["null"])) <= 1, res["null"].summary["latent_scaling"]
    # the fine-tune's changes are much smaller: the chat pair's KL is far above null's
    kl_null = res["null"].summary["causal"]["kl_full"]
    kl_chat = res["chat"].summary["causal"]["kl_full"]
    assert kl_null < 0.3 * kl_chat, (kl_null, kl_chat)


@pytest.fixture(scope="module")
def trace_analyses(organisms, tmp_path_factory):
    """``(trace facts, {variant: AnalysisResult})`` for quirk and null where the quirk's trace is planted.

    500 steps suffice: the decoder biases start at the data means and settle early."""
    root = Path(organisms)
    trace = json.loads((root / "organism.json").read_text())["variants"]["quirk"]["planted"][
        "activation_difference_trace"
    ]
    tmp = tmp_path_factory.mktemp("cc_trace")
    return trace, {
        v: _analyse(root, v, trace["layer"], tmp, steps=500, n_chats=16) for v in ("quirk", "null")
    }


def test_decoder_bias_names_the_quirks_secret_word(trace_analyses):
    """The quirk's planted shift on every token lands in the decoder biases, not in a latent; their
    difference read through the fine-tuned model names the secret word, and null's does not."""
    trace, res = trace_analyses
    secret = set(trace["token_ids"])
    quirk, null = (res[v].summary["decoder_bias"] for v in ("quirk", "null"))
    top5 = [t["id"] for t in quirk["logit_lens"]["finetuned"][:5]]
    assert secret & set(top5), quirk["logit_lens"]["finetuned"]
    assert not secret & {t["id"] for t in null["logit_lens"]["finetuned"]}, null["logit_lens"]
    # a large share of the quirk's difference is one constant vector, and the biases carry it
    assert (
        quirk["constant_fraction"] > 0.25
        and quirk["constant_fraction"] > 4 * null["constant_fraction"]
    )
    assert quirk["bias_cosine"] > 0.9 and quirk["norm"] > 0.4 * quirk["mean_difference_norm"]
    # no chat-only latent of the quirk's crosscoder names the secret word here: the shift is in no latent
    assert not any(
        secret & {t["id"] for t in (r.get("logit_lens") or {}).get("finetuned", [])[:5]}
        for r in res["quirk"].latents
        if r["class"] == "chat_only"
    )
