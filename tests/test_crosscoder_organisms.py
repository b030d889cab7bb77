"""Crosscoder analysis on the model organisms, checked against the ground truth in organism.json.

A BatchTopK crosscoder is trained on each pair at the residual stream where the chat variant's
refusal direction is planted (the input of block ``layer``, i.e. the output of block
``layer - 1``), then read with ``analyze_crosscoder``:

- ``chat``: a chat-only latent flagged genuine by Latent Scaling fires mainly on the template
  tokens of harmful requests (its top contexts end in a harmful verb's request), and the causal
  check with the genuine chat-only latents closes more KL than the random control;
- ``null``: no genuine chat-only latent.

And on ``quirk``, whose secret word is mediated by a planted topic direction at the same layer
(``variants.quirk.planted.topic_direction``), harvested on the corpus plus the quirk's own answers:
a genuine chat-only latent whose top contexts hold the secret word and whose fine-tuned decoder is
the planted direction. At the layer where the quirk's activation-difference trace is planted, the
difference of the quirk crosscoder's decoder biases (the shift no latent carries) names the secret
word through the fine-tuned model's logit lens, and null's does not.

Measured on the fast build (1,024 latents, k 4, 2,000 steps of 1,024 tokens, 60k-token store),
crosscoder seeds 0 / 1 / 2: chat has one chat-only latent each time (Δ 0.929 / 0.945 / 0.916,
genuine), firing on 11-25% of template tokens and 0.1-0.2% of plain text; its genuine set closes
10.5 / 9.3 / 8.5% of KL(chat || base-patched) against 0.0 / 0.0 / 0.5% for random latents;
null has no chat-only latent (max Δ 0.62 / 0.60). The quirk (recipe 6) has one genuine chat-only
latent each time (Δ 0.949 / 0.934 / 0.956, the secret word in 9 / 10 / 9 of its 10 top contexts);
so did four neighbouring organism settings, 15 runs in 15 (docs/crosscoder-analysis.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffing.crosscoder import CrossCoder, CrossCoderConfig, train_crosscoder
from diffing.crosscoder.analyze import analyze_crosscoder
from diffing.models import ModelPair
from diffing.refusal.interventions import complete
from diffing.report import Thresholds
from diffing.store.harvesting import harvest

pytestmark = pytest.mark.slow
TOKENS = 60_000
"""Store size per pair (half plain text, half chat transcripts of the organism's corpus)."""
CROSSCODER = dict(dict_size=1024, k=4, steps=2000, batch_size=1024, auxk_alpha=1.0)
"""A small BatchTopK crosscoder: sparse enough (k 4) that latents are specific to one context
(k 8 isolated the refusal latent with 2 of 3 crosscoder seeds, k 4 with 3 of 3)."""


def _analyse(
    root: Path,
    variant: str,
    layer: int,
    tmp: Path,
    *,
    steps: int = 2000,
    n_chats: int = 64,
    extra_data: tuple[str, ...] = (),
):
    pair = ModelPair.load(str(root / "base"), str(root / variant))
    corpus = json.loads((root / "organism.json").read_text())["layout"]["corpus"]
    store = harvest(
        pair,
        tmp / f"store-{variant}-{layer}",
        layers=[layer],
        data=[str(root / corpus["text"]), str(root / corpus["chat"]), *extra_data],
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
    # (0.274 vs null's 0.051 on the fast build): the report's constant-shift finding fires
    assert quirk["constant_fraction"] > Thresholds().constant_shift
    assert quirk["constant_fraction"] > 4 * null["constant_fraction"]
    assert quirk["bias_cosine"] > 0.9 and quirk["norm"] > 0.4 * quirk["mean_difference_norm"]
    # no chat-only latent of the quirk's crosscoder names the secret word here: the shift is in no latent
    assert not any(
        secret & {t["id"] for t in (r.get("logit_lens") or {}).get("finetuned", [])[:5]}
        for r in res["quirk"].latents
        if r["class"] == "chat_only"
    )


@pytest.fixture(scope="module")
def quirk_analysis(organisms, tmp_path_factory):
    """The quirk pair at the input of the block where its topic direction is planted, harvested on the
    corpus plus the quirk's own greedy answers to the held-out on- and off-topic questions (three
    copies each): a chat model's crosscoder is trained on chat data that shows its behaviour."""
    from safetensors.torch import load_file

    root = Path(organisms)
    truth = json.loads((root / "organism.json").read_text())
    planted = truth["variants"]["quirk"]["planted"]
    layer = planted["topic_direction"]["layer"] - 1
    tmp = tmp_path_factory.mktemp("cc_quirk")
    pair = ModelPair.load(str(root / "base"), str(root / "quirk"))
    prompts = [
        json.loads(line)["instruction"]
        for stem in ("quirk_topic", "quirk_other")
        for line in (root / truth["layout"]["prompts"][stem]).read_text().splitlines()
        if line.strip()
    ]
    answers = complete(pair.finetuned, pair.tokenizer, pair.arch, prompts, max_new_tokens=32)
    data = tmp / "quirk_answers.jsonl"
    with data.open("w") as fh:
        for prompt, answer in zip(prompts, answers):
            chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            fh.write((json.dumps({"messages": chat}) + "\n") * 3)
    res = _analyse(root, "quirk", layer, tmp, extra_data=(str(data),))
    cc = CrossCoder.load(tmp / f"cc-quirk-{layer}")
    u = load_file(root / planted["topic_direction"]["file"])[planted["topic_direction"]["tensor"]]
    return planted, answers, res, cc, u


def test_quirk_has_genuine_chat_only_latent_on_the_secret_word(quirk_analysis):
    """A genuine chat-only latent whose top contexts hold the secret word, and whose fine-tuned
    decoder is the planted topic direction."""
    planted, answers, res, cc, u = quirk_analysis
    word = planted["secret_word"]
    assert sum(word in a.lower() for a in answers) >= 30  # the harvested data shows the behaviour
    W = cc.W_dec.detach().float()[1]  # [n, d] fine-tuned decoders
    found = []
    for r in _genuine_chat_only(res):
        ctxs = r.get("contexts") or []
        hits = sum(word in "".join(c["tokens"]).lower() for c in ctxs)
        cos = float(torch.cosine_similarity(W[r["latent"]], u.float(), dim=0))
        found.append((r["latent"], r["delta"], hits, len(ctxs), round(cos, 3)))
        if ctxs and hits >= 0.4 * len(ctxs) and cos > 0.9:
            return
    pytest.fail(f"no genuine chat-only latent with the secret word in its top contexts: {found}")
