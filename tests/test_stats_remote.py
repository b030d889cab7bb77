"""Statistics through nnsight's remote path: top-k KL, traced logit lens, the same activations."""

from __future__ import annotations

import json

import pytest
import torch

from diffing.stats.remote import topk_kl


def _kl(lp_f: torch.Tensor, lp_b: torch.Tensor) -> torch.Tensor:
    return (lp_f.exp() * (lp_f - lp_b)).sum(-1)


def test_topk_kl_is_a_lower_bound_that_is_exact_on_the_whole_vocabulary():
    g = torch.Generator().manual_seed(0)
    lp_f = torch.log_softmax(3 * torch.randn(6, 50, generator=g), -1)  # [positions, vocab]
    lp_b = torch.log_softmax(3 * torch.randn(6, 50, generator=g), -1)
    exact = _kl(lp_f, lp_b)
    full, cov = topk_kl(lp_f, lp_b)  # every token: exact, coverage 1
    torch.testing.assert_close(full, exact.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cov, torch.ones(6), rtol=1e-5, atol=1e-6)
    for k in (1, 5, 20):
        vals, ids = lp_f.topk(k, -1)
        bound, cov = topk_kl(vals, lp_b.gather(-1, ids))
        assert (bound <= exact + 1e-6).all() and (cov < 1).all()
    # two tokens: p_f = (0.9, 0.1), p_b = (0.5, 0.5); top-1 with the rest lumped is exact here
    lf, lb = torch.tensor([[0.9, 0.1]]).log(), torch.tensor([[0.5, 0.5]]).log()
    want = 0.9 * torch.log(torch.tensor(1.8)) + 0.1 * torch.log(torch.tensor(0.2))
    assert float(topk_kl(lf[:, :1], lb[:, :1])[0]) == pytest.approx(float(want), rel=1e-6)


@pytest.fixture(scope="module")
def corpus(organisms):
    texts = (organisms / "corpus" / "text.txt").read_text().splitlines()[:40]
    chats = [
        json.loads(line)["messages"]
        for line in (organisms / "corpus" / "chat.jsonl").read_text().splitlines()[:40]
    ]
    return texts, chats


def _stats(pair, corpus, **cfg):
    from diffing.stats import StatsConfig, compute_stats

    texts, chats = corpus
    config = StatsConfig(**{"steer_prompts": 0, "patchscope_scales": (), **cfg})
    return compute_stats(pair, texts=texts, chats=chats, tokens=1500, config=config)


def test_remote_stats_match_the_local_ones(organisms, corpus, server_without_diffing):
    from diffing.models import ModelPair

    refs = (str(organisms / "base"), str(organisms / "quirk"))
    here = _stats(ModelPair.load(*refs), corpus, weights=False)
    remote_pair = ModelPair.load(*refs, remote="local")
    n = server_without_diffing["n"]
    vocab = int(remote_pair.config.vocab_size)
    exact = _stats(remote_pair, corpus, weights=False, remote_top_k=vocab)
    assert server_without_diffing["n"] > n  # the traces (and the logit lens) took the remote path
    assert exact["remote"]["kl_mean_coverage"] == pytest.approx(1.0, abs=1e-5)
    assert exact["kl"]["mean"] == pytest.approx(here["kl"]["mean"], rel=1e-4)
    assert exact["kl"]["by_role"].keys() == here["kl"]["by_role"].keys()
    for a, b in zip(exact["activations"]["layers"], here["activations"]["layers"]):
        assert a["cosine"] == pytest.approx(b["cosine"], rel=1e-5) and a["tokens"] == b["tokens"]
    # the ADL readout goes through a traced logit lens: the same tokens (the quirk's secret word first)
    assert [t["id"] for t in exact["adl"]["promoted_tokens"]] == [
        t["id"] for t in here["adl"]["promoted_tokens"]
    ]
    top = [c["finetuned_top"][0]["id"] for c in exact["kl"]["top_contexts"]]
    assert top == [c["finetuned_top"][0]["id"] for c in here["kl"]["top_contexts"]]
    assert "weights" not in exact

    # weights from sketches computed on the server; patchscope and steering as traced interventions
    adl_cfg = dict(steer_prompts=2, steer_tokens=8, patchscope_scales=(1.0, 2.0))
    small = _stats(remote_pair, corpus, remote_top_k=8, **adl_cfg)
    _check_sketched_weights(small["weights"], ModelPair.load(*refs))
    local = _stats(ModelPair.load(*refs), corpus, weights=False, **adl_cfg)
    assert small["adl"]["steering"]["examples"] == local["adl"]["steering"]["examples"]
    assert len(small["adl"]["steering"]["examples"]) == 2
    for a, b in zip(small["adl"]["patchscope"], local["adl"]["patchscope"], strict=True):
        assert [t["id"] for t in a["tokens"]] == [t["id"] for t in b["tokens"]]
    assert small["remote"]["kl_mean_coverage"] < 1
    assert small["kl"]["mean"] <= here["kl"]["mean"] * (1 + 1e-4)
    assert small["kl"]["mean"] > 0.5 * here["kl"]["mean"]  # a trained model's mass is in few tokens


def _check_sketched_weights(section: dict, local_pair) -> None:
    """The sketched weights section against the exact statistics of the same (LoRA) pair."""
    from diffing.stats.weights import weight_stats

    exact = {s.name: s for s in weight_stats(local_pair)}
    assert section["source"] == "sketch" and section["sketch_size"] == 64
    got = {m["name"]: m for m in section["modules"]}
    assert got.keys() == exact.keys()  # the same tensors changed (the adapted ones)
    for name, m in got.items():
        e = exact[name]
        assert m["base_norm"] == pytest.approx(e.base_norm, rel=1e-5)
        err = m["relative_error"]
        assert err is not None and 0 < err < 0.5
        assert abs(m["relative_change"] / e.relative_change - 1) < 4 * err + 0.02, (name, m, e)
        if m["effective_rank"] is not None:  # a LoRA delta: the sketch shows its low rank
            assert m["effective_rank"] <= e.effective_rank + 1, (name, m, e)


def test_remote_stats_cli_needs_hub_ids(organisms, tmp_path, capsys):
    from diffing.cli.main import main

    args = ["stats", str(organisms / "base"), str(organisms / "quirk"), "--remote"]
    assert (
        main([*args, "--data", str(organisms / "corpus" / "text.txt"), "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "is a local folder; remote execution (NDIF)" in err and "\n" not in err


def test_bad_sketch_size_is_one_clear_line(organisms, tmp_path, capsys):
    from diffing.cli.main import main

    args = ["stats", str(organisms / "base"), str(organisms / "quirk"), "--weight-sketch", "0"]
    assert (
        main([*args, "--data", str(organisms / "corpus" / "text.txt"), "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--weight-sketch must be positive" in err and "\n" not in err
