"""Diff-SAE: the difference view of a store, training (and resume), the chat-only comparison, and the organism.

Synthetic stores have known answers: the view yields exactly ``s * (x_ft - x_base)`` in raw
units with ``s`` making the mean squared norm d_model; a fine-tune that adds sparse multiples of
known directions gives a diff-SAE whose latents are those directions. On the fast ``chat``
organism (refusal planted on one direction at a known layer, organism.json), the diff-SAE at that
layer has a latent along the planted direction, and it matches the crosscoder's refusal latent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffing.crosscoder import CrossCoder, CrossCoderConfig
from diffing.crosscoder.diff_sae import DiffStore, difference_scale, load_diff_sae, train_diff_sae
from diffing.crosscoder.diff_sae_analysis import analyze_diff_sae, match_chat_only
from diffing.crosscoder.extra_config import DiffSAEConfig
from diffing.errors import DiffingError
from diffing.store import ActivationStore, write_store

D = 16
N_DIRS = 6


def _synthetic(path: Path, n: int = 8192, seed: int = 0):
    """Base activations random; fine-tuned = base + a constant shift + sparse multiples of N_DIRS unit directions."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(N_DIRS, D, generator=g), dim=-1)  # [k, d]
    base = torch.randn(n, D, generator=g)
    on = torch.rand(n, N_DIRS, generator=g) < 0.15
    coef = on * (1 + torch.rand(n, N_DIRS, generator=g))  # [n, k]
    shift = 4 * torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    ft = base + shift + coef @ dirs  # the shift gives the two models different norm scales
    acts = torch.stack([base, ft], 1)  # [n, 2, d]
    write_store(path, {3: acts}, torch.zeros(n, dtype=torch.long), torch.arange(n) // 64)
    return ActivationStore.open(path), dirs, acts


def test_difference_view_is_the_scaled_raw_difference(tmp_path):
    store, _, acts = _synthetic(tmp_path / "s")
    s_b, s_f = store.norm_scales(3).tolist()
    assert s_b / s_f > 1.3  # the two models' own scales differ
    s = difference_scale(store, 3, tokens=100_000)
    raw = acts[:, 1] - acts[:, 0]  # [n, d]
    assert s == pytest.approx((D / raw.pow(2).sum(-1).mean()).sqrt().item(), rel=1e-4)
    view = DiffStore(store, 3, s)
    got = view.read_tokens(10, 20).acts  # [10, 1, d]
    assert got.shape == (10, 1, D)
    torch.testing.assert_close(got[:, 0], s * raw[10:20])
    assert view.n_models == 1 and view.norm_scales().tolist() == [pytest.approx(s)]
    batch = next(iter(view.iter_batches(256, seed=0)))  # [256, 1, d]
    assert batch.pow(2).sum(-1).mean() == pytest.approx(D, rel=0.3)
    assert difference_scale(store, 3, "finetuned") == pytest.approx(s_f)
    assert difference_scale(store, 3, "none") == 1.0


def test_identical_models_have_no_difference(tmp_path):
    x = torch.randn(512, D)
    write_store(tmp_path / "s", {0: torch.stack([x, x], 1)}, torch.zeros(512, dtype=torch.long))
    with pytest.raises(DiffingError, match="identical"):
        difference_scale(ActivationStore.open(tmp_path / "s"), 0)


def test_diff_sae_recovers_the_planted_difference_directions(tmp_path):
    store, dirs, _ = _synthetic(tmp_path / "s")
    cfg = DiffSAEConfig(dict_size=24, k=2, steps=400, batch_size=256, checkpoint_every=0)
    res = train_diff_sae(store, cfg, tmp_path / "sae")
    sae = load_diff_sae(tmp_path / "sae")
    assert sae.cfg.n_models == 1 and sae.cfg.layer == 3
    assert sae.cfg.extra["diff_scale"] == pytest.approx(difference_scale(store, 3))
    cos = torch.nn.functional.normalize(sae.W_dec[0].detach(), dim=-1) @ dirs.T  # [n, k]
    assert cos.max(0).values.min() > 0.9, cos.max(0).values  # every planted direction has a latent
    assert res.metrics["fvu"][0] < 0.25
    out = analyze_diff_sae(sae, store, tmp_path / "an", config=cfg)
    data = json.loads((tmp_path / "an" / "diff_sae.json").read_text())
    assert (tmp_path / "an" / "diff_sae.png").is_file()
    assert data["summary"]["fvu"] == pytest.approx(out.fvu, rel=1e-4) and out.fvu < 0.25
    # the six planted directions carry the difference: few latents hold half of it
    assert out.summary["latents_for_half_the_difference"] <= N_DIRS


def test_resume_gives_the_uninterrupted_weights(tmp_path):
    store, _, _ = _synthetic(tmp_path / "s", n=4096)
    cfg = DiffSAEConfig(dict_size=16, k=2, steps=60, batch_size=256, checkpoint_every=20)
    whole = train_diff_sae(store, cfg, tmp_path / "a").crosscoder
    first = train_diff_sae(store, cfg, tmp_path / "b", max_steps=30)
    assert not first.finished
    with pytest.raises(DiffingError, match="resume"):
        train_diff_sae(store, cfg, tmp_path / "b")
    resumed = train_diff_sae(store, cfg, tmp_path / "b", resume=True).crosscoder
    torch.testing.assert_close(resumed.W_dec, whole.W_dec)


def test_load_refuses_a_two_model_crosscoder(tmp_path):
    CrossCoder(CrossCoderConfig(d_model=D, dict_size=8, k=2)).save(tmp_path / "cc")
    with pytest.raises(DiffingError, match="not a diff-SAE"):
        load_diff_sae(tmp_path / "cc")


def test_chat_only_match_reads_decoder_differences_in_raw_units():
    """Latent 0 is chat-only along v; latent 1 is shared with equal raw decoders (difference 0 in raw
    units, but not in normalised units because s_b != s_f): only latent 0 may match."""
    v, w = torch.eye(D)[0], torch.eye(D)[1]
    s_b, s_f = 2.0, 0.5
    cc = CrossCoder(CrossCoderConfig(d_model=D, dict_size=2, k=1))
    with torch.no_grad():
        cc.W_dec.zero_()
        cc.W_dec[1, 0] = s_f * v  # chat-only
        cc.W_dec[0, 1], cc.W_dec[1, 1] = s_b * w, s_f * w  # same raw vector in both models
    m = match_chat_only(torch.stack([v, w, v + w]), cc, [s_b, s_f], chat_only_above=0.9)
    assert m.chat_only == [0]
    torch.testing.assert_close(m.max_cosine, torch.tensor([1.0, 0.0, 2**-0.5]))
    assert m.per_chat_only[0]["best_sae_latent"] == 0


@pytest.mark.slow
def test_chat_organism_diff_sae_finds_the_planted_refusal_direction(organisms, tmp_path):
    """At the planted layer, a diff-SAE latent is the planted direction (|cos| >= 0.8) and matches the
    crosscoder latent most aligned with it. Measured on the fast build: 0.884 with the direction,
    0.868 with the crosscoder's refusal latent (Δ 0.895, hence the 0.8 chat-only band here)."""
    from safetensors.torch import load_file

    from diffing.crosscoder import train_crosscoder
    from diffing.models import ModelPair
    from diffing.store.harvesting import harvest

    root = Path(organisms)
    truth = json.loads((root / "organism.json").read_text())
    planted = truth["variants"]["chat"]["planted"]["refusal_direction"]
    layer = planted["layer"] - 1  # the input of block `layer` is the output of block layer - 1
    corpus = truth["layout"]["corpus"]
    pair = ModelPair.load(str(root / "base"), str(root / "chat"))
    store = harvest(pair, tmp_path / "store", layers=[layer], data=[str(root / corpus["text"]),
                    str(root / corpus["chat"])], tokens=30_000, seq_len=128, batch_size=16, progress=False)  # fmt: skip
    cc = train_crosscoder(store, CrossCoderConfig(dict_size=512, k=4, steps=1000, batch_size=1024, auxk_alpha=1.0,
                          dead_tokens=102_400, layer=layer, checkpoint_every=0)).crosscoder  # fmt: skip
    cfg = DiffSAEConfig(
        dict_size=256, k=4, steps=600, batch_size=1024, checkpoint_every=0, chat_only_above=0.8
    )
    train_diff_sae(store, cfg, tmp_path / "sae")
    res = analyze_diff_sae(
        tmp_path / "sae", store, tmp_path / "an", pair=pair, crosscoder=cc, config=cfg
    )
    u = load_file(root / planted["file"])[planted["tensor"]].float()
    sae = load_diff_sae(tmp_path / "sae")
    cos_u = torch.nn.functional.cosine_similarity(
        sae.W_dec[0].detach(), u[None], dim=-1
    ).abs()  # [n]
    j = int(cos_u.argmax())
    assert cos_u[j] >= 0.8, cos_u.topk(3)
    cc_cos = torch.nn.functional.cosine_similarity(cc.W_dec[1].detach(), u[None], dim=-1).abs()
    refusal_cc = int(cc_cos.argmax())
    rec = {r["latent"]: r for r in res.summary["comparison"]["chat_only"]}
    assert refusal_cc in rec, (refusal_cc, res.summary["comparison"])
    assert rec[refusal_cc]["cosine"] >= 0.8 and rec[refusal_cc]["best_sae_latent"] == j
    # the planted direction's latent is among those holding the most difference, with contexts and a lens
    top = {r["latent"]: r for r in res.latents}
    assert j in top and top[j]["contexts"] and top[j]["logit_lens"]["finetuned"]


@pytest.mark.slow
def test_cli_trains_and_reads(tmp_path):
    """``diffing crosscoder diff-sae STORE --out DIR`` writes the SAE and diff_sae.json (flags from the config)."""
    import subprocess
    import sys

    _synthetic(tmp_path / "s", n=4096)
    cmd = [sys.executable, "-m", "diffing", "crosscoder", "diff-sae", str(tmp_path / "s"), "--out",
           str(tmp_path / "o"), "--dict-size", "16", "--k", "2", "--steps", "60", "--batch-size", "256",
           "--no-models", "--quiet", "--no-figures"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "o" / "diff_sae.json").read_text())
    assert data["summary"]["n_latents"] == 16 and len(data["share"]) == 16
    assert data["summary"]["config"]["k"] == 2 and not (tmp_path / "o" / "diff_sae.png").exists()
    assert load_diff_sae(tmp_path / "o").cfg.steps == 60
    bad = subprocess.run(cmd[:-3] + ["--k", "0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--k" in bad.stderr
