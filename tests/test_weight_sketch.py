"""Weight statistics from random sketches (remote weights): the signs, the estimator, the pair path."""

from __future__ import annotations

import pytest
import torch

from diffing.stats import weight_sketch as ws


def _fmix32(x: int) -> int:
    """MurmurHash3's finaliser on Python ints: an independent reference for the tensor version."""
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & m
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & m
    return x ^ (x >> 16)


def test_signs_are_the_integer_hash_balanced_and_nearly_orthogonal():
    rows = torch.tensor([0, 1, 2, 12345, 2**31 + 7])
    got = ws.signs(rows, 5, salt=77)
    for a, i in enumerate(rows.tolist()):
        for j in range(5):
            h = _fmix32(_fmix32(i ^ 77) ^ (((j + 1) * 0x9E3779B9) & 0xFFFFFFFF))
            assert got[a, j] == (1.0 if (h >> 15) & 1 == 0 else -1.0)
    s = ws.signs(torch.arange(4096), 64, salt=1)  # [4096, 64]
    assert set(s.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(s.mean())) < 0.01
    gram = s.T @ s / 4096  # near the identity: independent columns
    assert float((gram - torch.eye(64, dtype=gram.dtype)).abs().max()) < 0.1
    assert not torch.equal(ws.signs(torch.arange(64), 8, 1), ws.signs(torch.arange(64), 8, 2))


def test_sketch_is_linear_and_chunking_changes_nothing(monkeypatch):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 24, generator=g, dtype=torch.float64)  # float64: a + b is exact enough
    b = torch.randn(40, 24, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        ws.sketch_matrix(a + b, 8), ws.sketch_matrix(a, 8) + ws.sketch_matrix(b, 8)
    )
    whole = ws.sketch_matrix(a, 8)
    monkeypatch.setattr(ws, "_CHUNK", 24 * 3)  # three rows at a time
    torch.testing.assert_close(ws.sketch_matrix(a, 8), whole, rtol=1e-12, atol=1e-12)
    # stacked matrices (e.g. experts [n, out, in]) are sketched as [n * out, in]
    c = torch.randn(5, 8, 6, generator=g)
    torch.testing.assert_close(ws.sketch_matrix(c, 8), ws.sketch_matrix(c.reshape(40, 6), 8))


@pytest.mark.parametrize(("kind", "tol"), [("full", 0.03), ("rank1", 0.12)])
def test_norm_estimate_is_unbiased_and_its_error_estimate_calibrated(kind, tol):
    g = torch.Generator().manual_seed(1)
    d, k = 256, 32
    w = (
        torch.randn(d, d, generator=g)
        if kind == "full"
        else torch.randn(d, 1, generator=g) @ torch.randn(1, d, generator=g)
    )
    exact = float(w.norm())
    ratios, ses = [], []
    for seed in range(40):
        s = ws.sketch_matrix(w, k, seed)
        ratios.append(float(s.norm()) / k / exact)
        ses.append(ws.relative_error(s))
    r = torch.tensor(ratios)
    assert float(r.pow(2).mean()) == pytest.approx(1.0, abs=tol)  # E ||S||^2 / k^2 = ||W||^2
    spread, claimed = float(r.std()), sum(ses) / len(ses)
    assert 0.6 * claimed < spread < 1.6 * claimed, (spread, claimed)
    if kind == "full":  # a spread-out delta: error ~1/k, far below a rank-1 delta's ~1/sqrt(k)
        assert spread < 0.03


def test_low_rank_delta_keeps_its_rank_and_a_full_rank_one_is_unresolved():
    from diffing.stats.weights import WeightStatsConfig, effective_rank

    g = torch.Generator().manual_seed(2)
    low = torch.randn(128, 3, generator=g) @ torch.randn(3, 96, generator=g)  # rank 3
    rank, _ = effective_rank(ws.sketch_matrix(low, 32), 0.9)
    assert rank <= 3 and rank >= effective_rank(low, 0.9)[0] - 1
    full = torch.randn(128, 96, generator=g)
    sketched, _ = effective_rank(ws.sketch_matrix(full, 32), 0.9)
    assert sketched > 32 // ws.RANK_RESOLVED  # so sketched_weight_stats reports None for it
    assert WeightStatsConfig().energy == 0.9


def test_sketched_pair_statistics_match_the_exact_ones_through_the_remote_path(
    tmp_path, server_without_diffing
):
    """A pair whose fine-tune changed two MLPs (one by a rank-2 delta) and one norm gain: sketched
    through nnsight's remote path with ``diffing`` unimportable there, as on NDIF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diffing.models import ModelPair
    from diffing.stats.weights import weight_stats
    from diffing.tiny import build_tiny_model

    base = build_tiny_model(tmp_path / "base", hidden=32, layers=2)
    model = AutoModelForCausalLM.from_pretrained(base)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        mlp0, mlp1 = model.model.layers[0].mlp, model.model.layers[1].mlp
        mlp0.down_proj.weight.add_(
            0.02 * torch.randn(32, 2, generator=g) @ torch.randn(2, 64, generator=g)
        )
        mlp1.up_proj.weight.add_(0.01 * torch.randn(64, 32, generator=g))
        model.model.layers[1].post_attention_layernorm.weight.add_(0.05)
    model.save_pretrained(tmp_path / "ft")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "ft")

    refs = (str(base), str(tmp_path / "ft"))
    exact = {s.name: s for s in weight_stats(ModelPair.load(*refs))}
    n = server_without_diffing["n"]
    sketched = ws.sketched_weight_stats(ModelPair.load(*refs, remote="local"), k=32)
    assert server_without_diffing["n"] == n + 2  # one job per model
    got = {s.name: s for s in sketched}
    assert (
        got.keys()
        == exact.keys()
        == {
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.mlp.up_proj.weight",
            "model.layers.1.post_attention_layernorm.weight",
        }
    )
    norm = got["model.layers.1.post_attention_layernorm.weight"]  # a vector: exact
    assert norm.rank_exact and norm.relative_error is None
    assert norm.relative_change == pytest.approx(exact[norm.name].relative_change, rel=1e-6)
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.up_proj.weight"):
        s, e = got[name], exact[name]
        assert not s.rank_exact and 0 < s.relative_error < 0.5
        assert s.base_norm == pytest.approx(e.base_norm, rel=1e-6)  # computed exactly there
        assert abs(s.relative_change / e.relative_change - 1) < 4 * s.relative_error + 0.02
    assert got["model.layers.0.mlp.down_proj.weight"].effective_rank in (1, 2)  # planted rank 2
    assert got["model.layers.1.mlp.up_proj.weight"].effective_rank is None  # full rank: unresolved
