"""Latent Scaling on hand-built crosscoders whose answers are known by construction.

Three chat-only latents (base decoder zero) read three directions u0, u1, u2:
u0 exists only in the fine-tuned activations (genuine); u1 is also in the base
activations but nothing reconstructs it there (complete shrinkage); u2 is also in
the base and a separate base-only latent rebuilds it there (latent decoupling).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from diffing.crosscoder.latent_scaling import (
    LatentScalingAccumulator,
    ScalingThresholds,
    latent_scaling,
)


class _ReluCrossCoder(torch.nn.Module):
    """Fallback with the CrossCoder interface (used only while diffing.crosscoder.model is absent)."""

    def __init__(self, d: int, n: int):
        super().__init__()
        self.W_enc = torch.nn.Parameter(torch.zeros(2, d, n))
        self.b_enc = torch.nn.Parameter(torch.zeros(n))
        self.W_dec = torch.nn.Parameter(torch.zeros(2, n, d))
        self.b_dec = torch.nn.Parameter(torch.zeros(2, d))

    def encode(self, x):  # x [B, 2, d] -> [B, n]
        return torch.relu(torch.einsum("bmd,mdn->bn", x, self.W_enc) + self.b_enc)

    def decode(self, f):  # [B, n] -> [B, 2, d]
        return torch.einsum("bn,mnd->bmd", f, self.W_dec) + self.b_dec


def _new_crosscoder(d: int, n: int):
    try:
        from diffing.crosscoder import CrossCoder, CrossCoderConfig
    except ImportError:
        return _ReluCrossCoder(d, n)
    return CrossCoder(CrossCoderConfig(n_models=2, d_model=d, dict_size=n, kind="l1"))


def _hand_crosscoder(d: int = 16, n: int = 8):
    """A ReLU crosscoder with planted weights; latents 4.. read and write shared noise-free directions."""
    cc = _new_crosscoder(d, n)
    eye = torch.eye(d)
    with torch.no_grad():
        for p in (cc.W_enc, cc.b_enc, cc.W_dec, cc.b_dec):
            p.zero_()
        for j in range(
            3
        ):  # chat-only latents: read u_j from the fine-tuned model, write only there
            cc.W_enc[1, :, j] = eye[j]
            cc.W_dec[1, j] = eye[j]
        cc.W_enc[0, :, 3] = eye[2]  # base-only latent 3 rebuilds u2 in the base
        cc.W_dec[0, 3] = eye[2]
        for j in range(4, n):  # shared latents on directions 3.. (same direction in both models)
            cc.W_enc[0, :, j] = 0.5 * eye[j - 1]
            cc.W_enc[1, :, j] = 0.5 * eye[j - 1]
            cc.W_dec[0, j] = eye[j - 1]
            cc.W_dec[1, j] = eye[j - 1]
    return cc


def _data(n_tokens: int = 4000, d: int = 16, seed: int = 0) -> torch.Tensor:
    """``[n_tokens, 2, d]`` activations: u0 in chat only; u1 and u2 in both models."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n_tokens, 2, d)
    for j in range(3):
        on = torch.rand(n_tokens, generator=g) < 0.3
        a = 1 + torch.rand(n_tokens, generator=g)
        x[:, 1, j] = on * a
        if j > 0:
            x[:, 0, j] = on * a
    shared = torch.rand(n_tokens, 4, generator=g) * (torch.rand(n_tokens, 4, generator=g) < 0.5)
    x[:, :, 3:7] = shared[:, None, :]
    return x


def test_planted_flags():
    cc = _hand_crosscoder()
    x = _data()
    res = latent_scaling(cc, x.split(512), [0, 1, 2, 3], [1, 1, 1, 0])
    assert res.flags == ["genuine", "complete_shrinkage", "latent_decoupling", "latent_decoupling"]
    # exact answers: each latent is reconstructed perfectly in its own model, so β_ε^own = 1
    assert torch.allclose(res.beta_error[1, :3], torch.ones(3), atol=1e-4)
    assert abs(float(res.beta_error[0, 3]) - 1) < 1e-4
    # genuine: the base carries nothing of u0
    assert abs(float(res.nu_error[0])) < 1e-4 and abs(float(res.nu_recon[0])) < 1e-4
    # shrinkage: the base error holds all of u1 (ν_ε = 1), the base reconstruction none of it
    assert abs(float(res.nu_error[1]) - 1) < 1e-4 and abs(float(res.nu_recon[1])) < 1e-4
    # decoupling: base reconstruction without latent 2 rebuilds u2 fully (β_r^b = 1, β_r^f = 0 floored)
    assert abs(float(res.beta_recon[0, 2]) - 1) < 1e-4 and abs(float(res.beta_recon[1, 2])) < 1e-4
    assert abs(float(res.nu_error[2])) < 1e-4
    assert res.reliable.all()


def test_streaming_equals_brute_force_least_squares():
    """The vectorised one-pass sums equal the per-latent least-squares fit done explicitly."""
    torch.manual_seed(1)
    d, n = 12, 10
    W_dec = torch.randn(2, n, d)
    b_dec = torch.randn(2, d)
    x = torch.randn(300, 2, d)
    f = torch.relu(torch.randn(300, n))
    x_hat = torch.einsum("bn,mnd->bmd", f, W_dec) + b_dec
    latents, own = torch.tensor([0, 3, 7]), torch.tensor([1, 0, 1])
    acc = LatentScalingAccumulator(W_dec, latents, own)
    for s in range(0, 300, 70):
        acc.update(x[s : s + 70], x_hat[s : s + 70], f[s : s + 70])
    res = acc.result(ScalingThresholds(min_active=1))
    for i, (j, o) in enumerate(zip(latents.tolist(), own.tolist())):
        dj = W_dec[o, j]
        for m in range(2):
            fj = f[:, j : j + 1]  # [T, 1]
            y_err = x[:, m] - x_hat[:, m] + fj * W_dec[m, j]
            y_rec = x_hat[:, m] - fj * W_dec[m, j]
            pred = fj * dj  # [T, d]: β multiplies this
            for y, got in ((y_err, res.beta_error[m, i]), (y_rec, res.beta_recon[m, i])):
                beta = (pred * y).sum() / (pred * pred).sum()
                assert abs(float(beta) - float(got)) < 1e-4 * max(1.0, abs(float(beta)))


def test_few_active_tokens_marked_unreliable():
    cc = _hand_crosscoder()
    x = _data(n_tokens=60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = latent_scaling(cc, [x], [0, 1], [1, 1], thresholds=ScalingThresholds(min_active=50))
    assert not res.reliable.any()
    assert (res.n_active < 50).all() and (res.n_active > 0).all()
    assert any("fewer than 50" in str(w.message) for w in caught)


def test_never_active_latent_is_inactive():
    cc = _hand_crosscoder()
    x = _data(n_tokens=100)
    x[:, 1, 0] = 0  # u0 never present: latent 0 never fires
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = latent_scaling(cc, [x], [0], [1])
    assert res.flags == ["inactive"] and torch.isnan(res.beta_error[:, 0]).all()


@pytest.mark.parametrize("bad", [[8], [-9]])
def test_out_of_range_latent(bad):
    from diffing.crosscoder.analysis import check_latents
    from diffing.errors import DiffingError

    with pytest.raises(DiffingError, match="out of range"):
        check_latents(bad, 8)
