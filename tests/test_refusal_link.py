"""Crosscoder latents vs a refusal direction: raw-unit cosines, selection, ablation edits, and the organism.

Constructed crosscoders have known cosines (a latent whose decoders are equal in raw units has
no difference, whatever the store's scales); the edits remove exactly what they should. On the
fast ``chat`` organism (refusal planted on one direction at a known layer, organism.json), the
link names a latent with |cos| >= 0.5, and removing the named latents' contribution at that
layer drops the fine-tuned model's refusal of harmful prompts, as ablating the direction does,
while removing as many random latents does not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from diffing.crosscoder import CrossCoder, CrossCoderConfig
from diffing.crosscoder.extra_config import RefusalLinkConfig
from diffing.crosscoder.refusal_ablation import direction_edit, latent_edit, log_odds_score
from diffing.crosscoder.refusal_link import decoder_cosines, refusal_link, select_refusal_latents
from diffing.errors import DiffingError

D = 8


def _crosscoder() -> tuple[CrossCoder, list[float]]:
    """Latent 0: chat-only along e0; 1: equal raw decoders along e1 (no raw difference); 2: base-only along -e0."""
    e = torch.eye(D)
    s = [2.0, 0.5]  # [s_b, s_f]
    cc = CrossCoder(CrossCoderConfig(d_model=D, dict_size=4, k=1))
    with torch.no_grad():
        cc.W_dec.zero_()
        cc.W_dec[1, 0] = s[1] * e[0]
        cc.W_dec[0, 1], cc.W_dec[1, 1] = s[0] * e[1], s[1] * (e[1] + 0.01 * e[0])
        cc.W_dec[0, 2] = -s[0] * e[0]
        cc.W_dec[:, 3] = torch.randn(2, D, generator=torch.Generator().manual_seed(0))
    return cc, s


def test_cosines_are_in_raw_units():
    cc, s = _crosscoder()
    cos_d, cos_f = decoder_cosines(cc, torch.eye(D)[0] * 5, s)
    assert cos_d[0] == pytest.approx(1.0) and cos_f[0] == pytest.approx(1.0)
    # equal raw decoders: the raw difference is 0.01 * e0, all along r, though d_f is not
    assert cos_d[1] == pytest.approx(1.0, abs=1e-4) and abs(cos_f[1]) < 0.02
    # base-only along -r: removing it in the fine-tuned model adds +r to the difference
    assert cos_d[2] == pytest.approx(1.0) and cos_f[2] == 0.0
    by_ft = select_refusal_latents(cos_d, cos_f, RefusalLinkConfig(select_by="finetuned"))
    assert by_ft == [0]
    assert set(select_refusal_latents(cos_d, cos_f, RefusalLinkConfig())) >= {0, 1, 2}
    assert select_refusal_latents(cos_d, cos_f, RefusalLinkConfig(max_latents=1)) in ([0], [1], [2])


def test_wrong_width_or_zero_direction_is_refused():
    cc, s = _crosscoder()
    with pytest.raises(DiffingError, match="dimensions"):
        decoder_cosines(cc, torch.ones(D + 1), s)
    with pytest.raises(DiffingError, match="zero"):
        decoder_cosines(cc, torch.zeros(D), s)
    with pytest.raises(DiffingError, match="layer"):
        cc.cfg.layer = 3
        refusal_link(cc, torch.ones(D), 2, norm_scales=s)


def test_edits_remove_what_they_should():
    torch.manual_seed(0)
    x_f = torch.randn(2, 5, D)
    r = torch.randn(D)
    out = direction_edit(3 * r)(x_f, x_f)
    assert (out @ (r / r.norm())).abs().max() < 1e-5
    torch.testing.assert_close(out + (x_f @ r / r.norm() ** 2)[..., None] * r, x_f)
    # an L1-style (ReLU) crosscoder whose latent 0 reads and writes e0: removing it zeroes e0 where it fired
    e = torch.eye(D)
    s = [1.0, 2.0]
    cc = CrossCoder(CrossCoderConfig(d_model=D, dict_size=2, kind="l1"))
    with torch.no_grad():
        cc.W_enc.zero_(), cc.W_dec.zero_(), cc.b_enc.zero_(), cc.b_dec.zero_()
        cc.W_enc[1, :, 0] = e[0]  # f_0 = relu(s_f x_f . e0)
        cc.W_dec[1, 0] = e[0]  # writes e0 (normalised units) into the fine-tuned model
    out = latent_edit(cc, [0], s)(x_f, x_f)
    expect = x_f.clone()
    expect[..., 0] = torch.where(
        x_f[..., 0] > 0, 0.0, x_f[..., 0]
    )  # f s_f^-1 = x_f.e0 where positive
    torch.testing.assert_close(out, expect)


def test_log_odds_score():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]))
    got = log_odds_score([0, 1])(logits)
    torch.testing.assert_close(got, torch.tensor([math.log(0.9 / 0.1), math.log(0.2 / 0.8)]))
    with pytest.raises(DiffingError, match="refusal tokens"):
        log_odds_score([])


@pytest.fixture(scope="module")
def chat_link(organisms, tmp_path_factory):
    """The link on the chat organism at the planted layer: crosscoder (512 latents, k 4, 1000 steps)."""
    from safetensors.torch import load_file

    from diffing.crosscoder import train_crosscoder
    from diffing.models import ModelPair
    from diffing.store.harvesting import harvest

    root = Path(organisms)
    tmp = tmp_path_factory.mktemp("refusal_link")
    truth = json.loads((root / "organism.json").read_text())
    planted = truth["variants"]["chat"]["planted"]
    layer = planted["refusal_direction"]["layer"] - 1  # input of block L = output of block L - 1
    corpus = truth["layout"]["corpus"]
    pair = ModelPair.load(str(root / "base"), str(root / "chat"))
    store = harvest(pair, tmp / "store", layers=[layer], data=[str(root / corpus["text"]),
                    str(root / corpus["chat"])], tokens=30_000, seq_len=128, batch_size=16, progress=False)  # fmt: skip
    cfg = CrossCoderConfig(dict_size=512, k=4, steps=1000, batch_size=1024, auxk_alpha=1.0,
                           dead_tokens=102_400, layer=layer, checkpoint_every=0)  # fmt: skip
    cc = train_crosscoder(store, cfg, tmp / "cc").crosscoder
    r = load_file(root / planted["refusal_direction"]["file"])[
        planted["refusal_direction"]["tensor"]
    ]
    harmful = [json.loads(line)["instruction"]
               for line in (root / truth["layout"]["prompts"]["harmful_test"]).read_text().splitlines() if line.strip()]  # fmt: skip
    res = refusal_link(cc, r, layer, store=store, pair=pair, harmful=harmful,
                       refusal_tokens=[planted["refusal_first_token_id"]], out_dir=tmp / "out")  # fmt: skip
    return res, tmp / "out"


@pytest.mark.slow
def test_chat_link_names_a_refusal_latent(chat_link):
    """Measured on the fast build: the best latent has cos(d_f - d_b, r) 0.980, cos(d_f, r) 0.989, Δ 0.895,
    and its top contexts are the refusal turn's template tokens."""
    res, out = chat_link
    assert res.refusal_latents
    best = res.latents[0]
    assert max(abs(best["cos_difference"]), abs(best["cos_finetuned"])) >= 0.5
    assert best["cos_finetuned"] >= 0.9 and best["delta"] > 0.8, best
    assert best["contexts"] and best["logit_lens"]["finetuned"]
    saved = json.loads((out / "refusal_link.json").read_text())
    assert saved["summary"]["refusal_latents"] == res.refusal_latents
    assert (out / "refusal_link.png").is_file()


@pytest.mark.slow
def test_removing_the_refusal_latents_removes_refusal(chat_link):
    """Measured on the fast build (64 harmful test prompts): refusal rate 1.00 clean, 0.00 with the
    refusal latents removed and with the direction ablated, 1.00 with random latents removed; mean
    log-odds 3.00 / -3.79 / -4.42 / 2.98."""
    res, _ = chat_link
    a = res.ablation
    assert a["clean"]["rate"] >= 0.9
    assert a["latents"]["rate"] <= a["clean"]["rate"] - 0.5, a
    assert a["latents"]["mean_score"] <= a["clean"]["mean_score"] - 3.0, a
    assert a["direction"]["mean_score"] <= a["clean"]["mean_score"] - 3.0, a
    assert abs(a["random"]["mean_score"] - a["clean"]["mean_score"]) < 1.0, a


def test_cli_reads_the_direction_file_and_its_block_input_layer(tmp_path):
    """The direction file's ``layer`` is the block whose input it is at: layer L - 1 of the store."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    from diffing.store import write_store

    g = torch.Generator().manual_seed(0)
    write_store(
        tmp_path / "s",
        {2: torch.randn(1024, 2, D, generator=g)},
        torch.zeros(1024, dtype=torch.long),
    )
    cc, _ = _crosscoder()
    cc.cfg.layer = 2
    cc.save(tmp_path / "cc")
    for block in (3, 2):
        save_file(
            {"direction": torch.eye(D)[0]},
            str(tmp_path / f"r{block}.safetensors"),
            metadata={"layer": str(block)},
        )
    cmd = [sys.executable, "-m", "diffing", "crosscoder", "refusal-link", str(tmp_path / "cc"), "--store",
           str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--no-models", "--no-figures", "--direction"]  # fmt: skip
    ok = subprocess.run(
        cmd + [str(tmp_path / "r3.safetensors")], capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr
    data = json.loads((tmp_path / "o" / "refusal_link.json").read_text())
    assert data["summary"]["layer"] == 2 and 0 in data["summary"]["refusal_latents"]
    bad = subprocess.run(
        cmd + [str(tmp_path / "r2.safetensors")], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "layer" in bad.stderr and "Traceback" not in bad.stderr


def test_names_latents_with_their_analysis_flags(tmp_path):
    """Without a store or models: cosines and selection only, with Δ and the Latent Scaling flag of latents.json."""
    cc, s = _crosscoder()
    records = [
        {"latent": 0, "class": "chat_only", "latent_scaling": {"flag": "genuine"}},
        {"latent": 3, "class": "shared"},
    ]
    (tmp_path / "latents.json").write_text(json.dumps(records))
    res = refusal_link(cc, torch.eye(D)[0], 1, norm_scales=s, analysis_latents=tmp_path,
                       config=RefusalLinkConfig(select_by="finetuned"), out_dir=tmp_path / "o")  # fmt: skip
    assert res.refusal_latents == [0] and res.ablation is None
    rec = res.latents[0]
    assert (
        rec["class"] == "chat_only" and rec["latent_scaling"] == "genuine" and rec["delta"] == 1.0
    )
    saved = json.loads((tmp_path / "o" / "refusal_link.json").read_text())
    assert saved["summary"]["best"]["latent"] in (0, 1, 2) and len(saved["cos_difference"]) == 4
    with pytest.raises(DiffingError, match="latents.json"):
        refusal_link(cc, torch.eye(D)[0], 1, norm_scales=s, analysis_latents=tmp_path / "none.json")
