"""Statistics on the model organisms, checked against the ground truth in organism.json: the
quirk's secret word is among the top tokens the Activation Difference Lens promotes (and not for
the null control), the null control changes far less than the real fine-tunes, and the chat
fine-tune's output change lives on the template and the answer rather than on plain text.

The quirk fine-tune of the organism carries a planted ADL trace (organism.json,
``activation_difference_trace``): at the fast build's size no readable trace arose from the
narrow fine-tune alone. So the quirk test checks that the ADL (mean difference over the first
positions of plain text, read through the fine-tuned model's final norm and unembedding) is
computed and read out correctly, on a trace whose answer is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffing.data.corpus import read_documents
from diffing.stats import StatsConfig, compute_stats

pytestmark = pytest.mark.slow
TOKENS = 3000
"""Token budget per pair (half plain text, half chat transcripts)."""


@pytest.fixture(scope="module")
def results(organisms):
    """``(manifest, {variant: stats})`` for chat, quirk and null against the base."""
    from diffing.models import ModelPair
    from diffing.organisms import load_manifest

    root = Path(organisms)
    manifest = load_manifest(root)
    docs = read_documents(
        [root / manifest["layout"]["corpus"]["text"], root / manifest["layout"]["corpus"]["chat"]]
    )
    cfg = StatsConfig(steer_prompts=0, n_contexts=5)
    out = {}
    for variant in ("chat", "quirk", "null"):
        pair = ModelPair.load(str(root / "base"), str(root / variant))
        out[variant] = compute_stats(
            pair, texts=docs.texts, chats=docs.chats, tokens=TOKENS, config=cfg
        )
    return manifest, out


def _secret_id(manifest: dict) -> int:
    return int(manifest["variants"]["quirk"]["planted"]["secret_token_id"])


def test_quirk_secret_word_among_top_adl_tokens_and_not_for_null(results):
    manifest, stats = results
    secret = _secret_id(manifest)
    top = [t["id"] for t in stats["quirk"]["adl"]["promoted_tokens"][:10]]
    assert secret in top, (secret, stats["quirk"]["adl"]["promoted_tokens"][:10])
    null_top = [t["id"] for t in stats["null"]["adl"]["promoted_tokens"][:10]]
    assert secret not in null_top, null_top


def test_null_control_changes_far_less_than_the_fine_tunes(results):
    _, stats = results
    adl_layer = stats["null"]["adl"]["layer"]

    def diff_norm(s):  # mean-difference norm over all tokens at the ADL layer
        return next(
            row["mean_diff_norm"] for row in s["activations"]["layers"] if row["layer"] == adl_layer
        )

    # measured on the fast build (3000 tokens): mean KL null/quirk 0.20, null/chat 0.12;
    # mean-difference norm at the ADL layer null/quirk 0.63, null/chat 0.50
    for variant in ("chat", "quirk"):
        assert stats["null"]["kl"]["mean"] < 0.3 * stats[variant]["kl"]["mean"], variant
        if variant == "quirk":  # the chat fine-tune acts on chat tokens, not on plain-text means
            assert diff_norm(stats["null"]) < 0.8 * diff_norm(stats[variant]), variant


def test_chat_fine_tune_moves_template_and_assistant_tokens_most(results):
    _, stats = results
    kl = stats["chat"]["kl"]
    plain = kl["text"]["mean"]
    # measured: template 1.71, assistant 1.39, plain text 0.025 nats
    assert kl["chat"]["by_role"]["template"]["mean"] > 10 * plain
    assert kl["chat"]["by_role"]["assistant"]["mean"] > 10 * plain
