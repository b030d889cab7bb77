"""The diff-SAE on the quirk organism: its top latents name the planted secret word; on null, none do.

Data: the organism's own plain text (the quirk's planted activation-difference trace lives there;
docs/lens.md), read at the trace's layer from organism.json. The secret word is the build's
``secret_token_id``, never written here. Measured on the fast build (128 latents, k 4, 400 steps,
20k tokens): the two latents holding the most of the quirk's difference (shares 0.148, 0.109) both
read the secret word first through the fine-tuned logit lens; null's top five read function words.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TOP_LATENTS = 5
"""Latents, largest share of the difference first, whose logit lenses are searched."""


def _top_lens_ids(root: Path, variant: str, layer: int, text: Path, out: Path) -> list[set[int]]:
    from diffing.crosscoder.diff_sae import train_diff_sae
    from diffing.crosscoder.diff_sae_analysis import analyze_diff_sae
    from diffing.crosscoder.extra_config import DiffSAEConfig
    from diffing.models import ModelPair
    from diffing.store.harvesting import harvest

    pair = ModelPair.load(str(root / "base"), str(root / variant))
    store = harvest(pair, out / "store", layers=[layer], data=[str(text)], tokens=20_000,
                    seq_len=128, batch_size=16, progress=False)  # fmt: skip
    cfg = DiffSAEConfig(dict_size=128, k=4, steps=400, batch_size=512, checkpoint_every=0,
                        context_latents=TOP_LATENTS, figures=False)  # fmt: skip
    train_diff_sae(store, cfg, out / "sae")
    res = analyze_diff_sae(out / "sae", store, out / "read", pair=pair, config=cfg)
    return [{t["id"] for t in r["logit_lens"]["finetuned"]} for r in res.latents[:TOP_LATENTS]]


def test_diff_sae_top_latents_name_the_quirks_secret_word_not_nulls(organisms, tmp_path):
    from diffing.organisms import load_manifest

    root = Path(organisms)
    manifest = load_manifest(root)
    planted = manifest["variants"]["quirk"]["planted"]
    secret = int(planted["secret_token_id"])
    layer = planted["activation_difference_trace"]["layer"]
    text = root / manifest["layout"]["corpus"]["text"]
    quirk = _top_lens_ids(root, "quirk", layer, text, tmp_path / "quirk")
    null = _top_lens_ids(root, "null", layer, text, tmp_path / "null")
    assert any(secret in ids for ids in quirk), quirk
    assert not any(secret in ids for ids in null), null
