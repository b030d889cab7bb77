"""Known answers on synthetic data: the streaming PCA recovers planted directions, the NMF planted
clusters, the context tracker the true top positions; on a pair whose two models are the same
checkpoint every difference is zero and nothing is mined."""

from __future__ import annotations

import json

import pytest
import torch

from diffing.errors import DiffingError
from diffing.lens import MiningConfig, PCAConfig
from diffing.lens.contexts import TopContexts
from diffing.lens.covariance import SecondMoments
from diffing.lens.nmf import nmf


def _unit(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v / v.norm()


def _stream(x: torch.Tensor, chunk: int = 97) -> SecondMoments:
    acc = SecondMoments(x.shape[1])
    for i in range(0, x.shape[0], chunk):
        acc.update(x[i : i + chunk])
    return acc


def test_planted_rank_one_variation_is_the_first_centred_component():
    d, n = 32, 4000
    g = torch.Generator().manual_seed(1)
    u, shift = _unit(d, 2), 0.3 * _unit(d, 3)
    coef = 2.0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    x = shift + coef * u + 0.02 * torch.randn(n, d, generator=g, dtype=torch.float64)  # [n, d]
    dec = _stream(x).decompose(3)
    assert abs(float(dec.components[0].double() @ u)) > 0.999
    assert float(dec.variance_ratio[0]) > 0.98  # noise variance 32 * 0.02^2 against 4
    assert torch.allclose(dec.mean.double(), x.mean(0), atol=1e-5)
    # the streamed covariance equals the one computed at once
    full = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).flip(0)[:3]
    assert torch.allclose(dec.variance.double(), full, rtol=1e-6, atol=1e-9)


def test_constant_shift_is_the_uncentred_direction_with_the_mean_holding_the_energy():
    d, n = 16, 2000
    g = torch.Generator().manual_seed(4)
    u = _unit(d, 5)
    x = 3.0 * u + 0.05 * torch.randn(n, d, generator=g, dtype=torch.float64)
    dec = _stream(x).decompose(2)
    assert float(dec.first.double() @ u) > 0.999  # signed toward the mean
    assert dec.mean_share > 0.99 and dec.first_ratio > 0.99
    assert all(float(c.double() @ dec.mean.double()) >= 0 for c in dec.components)


def test_nmf_recovers_planted_clusters():
    g = torch.Generator().manual_seed(0)
    groups = [range(0, 5), range(5, 10), range(10, 15)]
    h = torch.zeros(3, 15)
    for r, cols in enumerate(groups):
        h[r, list(cols)] = 1.0 + torch.rand(len(cols), generator=g)
    owner = torch.arange(90) % 3
    w = torch.zeros(90, 3)
    w[torch.arange(90), owner] = 0.5 + torch.rand(90, generator=g)
    a = w @ h  # [90, 15]
    res = nmf(a, 3, iterations=500, seed=0)
    assert res.relative_error < 0.02
    found = res.w.argmax(1)  # [90]
    # each found cluster is one planted cluster: same partition up to relabelling
    mapping = {int(found[i]): int(owner[i]) for i in range(90)}
    assert len(set(mapping.values())) == 3
    assert all(mapping[int(found[i])] == int(owner[i]) for i in range(90))
    for r in range(3):
        top = set(res.h[r].topk(5).indices.tolist())
        assert top == set(groups[mapping[r]])
    again = nmf(a, 3, iterations=500, seed=0)
    assert torch.equal(res.w, again.w)  # fixed seed: reproducible


def test_nmf_refuses_negative_input():
    with pytest.raises(DiffingError, match="non-negative"):
        nmf(torch.tensor([[1.0, -1.0]]), 1)


def test_top_contexts_keeps_the_highest_scores_across_batches():
    tc = TopContexts(3, window=1)
    ids = torch.arange(12).reshape(2, 6)
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[:, 0] = False
    tc.update(torch.tensor([[0.0, 1, 9, 2, 3, 4], [0, 5, 1, 1, 1, 8]]), ids, keep, keep | True)
    tc.update(torch.tensor([[0.0, 7, 0, 0, 0, 0], [99, 0, 0, 0, 0, 0]]), ids, keep, keep | True)
    assert [s for s, _, _ in tc.kept] == [9.0, 8.0, 7.0]  # the 99 sits at position 0: skipped
    window, at = tc.kept[0][1], tc.kept[0][2]
    assert window == [1, 2, 3] and window[at] == 2


def test_configs_reject_out_of_range_values():
    with pytest.raises(DiffingError, match="n_components"):
        PCAConfig(n_components=0)
    with pytest.raises(DiffingError, match="k must"):
        MiningConfig(k=0)


TEXTS = ["the cat sat on the mat and looked at the dog", "a bird flew over the river at dawn"] * 3


def test_same_checkpoint_twice_gives_zero_differences_and_mines_nothing(tiny_pair_dirs, tmp_path):
    from diffing.lens.mining import diff_mining
    from diffing.lens.output import mining_json, pca_json, save_pca
    from diffing.lens.pca import diff_pca
    from diffing.models import ModelPair

    pair = ModelPair.load(str(tiny_pair_dirs[0]), str(tiny_pair_dirs[0]))
    res = diff_pca(pair, texts=TEXTS, config=PCAConfig(tokens=1000, n_components=2))
    lengths = [len(pair.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert res.positions == sum(n - 1 for n in lengths)  # every real position but the first
    dec = res.layers[0].decomposition
    assert float(dec.mean.norm()) == 0.0 and dec.total_variance == 0.0
    assert dec.mean_share == 0.0
    json.dumps(pca_json(res), allow_nan=False)  # strict JSON even for an all-zero difference
    save_pca(res, tmp_path)
    assert (tmp_path / "pca_explained_variance.png").stat().st_size > 0
    mined = diff_mining(pair, texts=TEXTS, config=MiningConfig(tokens=1000))
    assert mined.top_tokens == [] and mined.clusters == []
    json.dumps(mining_json(mined), allow_nan=False)


def test_second_pass_by_retracing_matches_the_cached_one(tiny_pair):
    from diffing.lens.pca import diff_pca

    cfg = dict(tokens=1000, layers=[0, 1], n_components=2, n_contexts=3)
    cached = diff_pca(tiny_pair, texts=TEXTS, config=PCAConfig(**cfg))
    traced = diff_pca(tiny_pair, texts=TEXTS, config=PCAConfig(**cfg, cache_mb=0.0))
    for a, b in zip(cached.layers, traced.layers):
        assert a.decomposition.count == b.decomposition.count > 0
        for da, db in zip(a.directions, b.directions):
            assert da.by_role == db.by_role
            assert [c["score"] for c in da.top_contexts] == [c["score"] for c in db.top_contexts]
