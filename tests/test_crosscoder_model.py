"""CrossCoder module: shapes, initialisation, sparse training math vs a dense reference, save/load, interop."""

from __future__ import annotations

import json

import pytest
import torch

from diffing.crosscoder import CrossCoder, CrossCoderConfig
from diffing.crosscoder.interop import load_dictionary_learning, to_dictionary_learning
from diffing.errors import DiffingError


def _cc(kind="batchtopk", d=16, n=64, k=4, seed=0, **kw) -> CrossCoder:
    return CrossCoder(
        CrossCoderConfig(d_model=d, dict_size=n, k=k, kind=kind, seed=seed, **kw).resolved()
    )


def _randomise(cc: CrossCoder, seed: int = 1) -> None:
    """Untie encoder and decoder (and give the biases values) so tests see every term."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_interface_shapes_and_init():
    cc = _cc(d=8, n=32)
    assert cc.W_enc.shape == (2, 8, 32) and cc.W_dec.shape == (2, 32, 8)
    assert cc.b_enc.shape == (32,) and cc.b_dec.shape == (2, 8) and cc.threshold.shape == ()
    # decoder vectors start at norm 0.1 in each model; encoder = decoder transpose
    assert torch.allclose(cc.decoder_norms(), torch.full((2, 32), 0.1), atol=1e-6)
    assert torch.equal(cc.W_enc, cc.W_dec.transpose(1, 2))
    x = torch.randn(5, 2, 8)
    x_hat, f = cc(x)
    assert x_hat.shape == (5, 2, 8) and f.shape == (5, 32)
    assert torch.allclose(
        cc.pre_acts(x), torch.einsum("bmd,mdn->bn", x, cc.W_enc) + cc.b_enc, atol=1e-5
    )
    with pytest.raises(DiffingError, match="expects activations"):
        cc(torch.randn(5, 2, 9))


def _dense_reference_loss(cc: CrossCoder, x: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """Straightforward dense BatchTopK + AuxK loss (the formula in docs/methods.md section 2)."""
    cfg, b = cc.cfg, x.shape[0]
    f = torch.relu(cc.pre_acts(x))  # [B, n]
    score = f * cc.decoder_norms().sum(0)
    keep = torch.zeros(f.numel())
    keep[score.flatten().topk(cfg.k * b).indices] = 1
    x_hat = cc.decode(f * keep.view_as(f))
    recon = (x - x_hat).pow(2).sum((1, 2)).mean()
    fd = f[:, dead]
    top = fd.topk(min(cfg.k_aux, fd.shape[1]), dim=1)
    f_aux = torch.zeros_like(fd).scatter(1, top.indices, 1.0) * fd
    e_hat = torch.einsum("bn,mnd->bmd", f_aux, cc.W_dec[:, dead])
    aux = ((x - x_hat).detach() - e_hat).pow(2).sum((1, 2)).mean()
    return recon + cfg.auxk_alpha * aux


@pytest.mark.parametrize("decode", ["sparse", "dense"])
def test_batchtopk_matches_dense_reference_forward_and_backward(decode):
    cc = _cc(d=16, n=64, k=4, decode=decode)
    _randomise(cc)
    x = torch.randn(48, 2, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    out = cc.forward_train(x, dead=dead)
    assert out.l0 == pytest.approx(4.0)  # exactly k per token on average
    out.loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in cc.named_parameters()}
    cc.zero_grad()
    ref = _dense_reference_loss(cc, x, dead)
    ref.backward()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for name, p in cc.named_parameters():
        assert torch.allclose(sparse_grads[name], p.grad, atol=1e-5), name


def _loss_and_grads(decode: str, dtype: str, x, dead):
    cc = _cc(d=16, n=64, k=4, decode=decode, dtype=dtype)
    _randomise(cc)
    out = cc.forward_train(x, dead=dead)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in cc.named_parameters()}


def test_sparse_and_dense_paths_give_the_same_loss_and_gradients():
    x = torch.randn(64, 2, 16, generator=torch.Generator().manual_seed(3))
    dead = torch.zeros(64, dtype=torch.bool)
    dead[1::4] = True
    sparse, g_sparse = _loss_and_grads("sparse", "float32", x, dead)
    dense, g_dense = _loss_and_grads("dense", "float32", x, dead)
    assert sparse.loss.item() == pytest.approx(dense.loss.item(), rel=1e-6)
    assert sparse.aux.item() == pytest.approx(dense.aux.item(), rel=1e-6) and sparse.aux > 0
    assert torch.equal(sparse.active, dense.active) and sparse.l0 == dense.l0 == 4.0
    for name in g_sparse:
        assert torch.allclose(g_sparse[name], g_dense[name], atol=1e-6, rtol=1e-5), name
    # bfloat16 compute (fp32 master weights): the same step to bf16 precision, grads stay fp32
    bf16, g_bf16 = _loss_and_grads("auto", "bfloat16", x, dead)
    assert bf16.loss.item() == pytest.approx(sparse.loss.item(), rel=0.02)
    for name in g_sparse:
        assert g_bf16[name].dtype == torch.float32
        rel = (g_bf16[name] - g_sparse[name]).norm() / g_sparse[name].norm()
        assert rel < 0.1, (name, float(rel))  # measured <= 0.064 (bf16 can swap marginal picks)


def test_decode_rule_per_device_and_dtype():
    from diffing.crosscoder.model import resolve_decode

    assert resolve_decode("auto", "cpu", torch.float32) == "sparse"
    assert (
        resolve_decode("auto", "cpu", torch.bfloat16) == "sparse"
    )  # CPU bf16: sparse measured faster
    assert resolve_decode("auto", "cuda:0", torch.float32) == "dense"
    assert resolve_decode("sparse", "cuda", torch.float32) == "sparse"
    assert resolve_decode("dense", "cpu", torch.float32) == "dense"
    with pytest.raises(DiffingError, match="decode='dense'"):
        resolve_decode("sparse", "cuda", torch.bfloat16)
    with pytest.raises(DiffingError, match="decode 'fast' is unknown"):
        CrossCoderConfig(decode="fast")


def test_l1_loss_is_reconstruction_plus_decoder_weighted_l1():
    cc = _cc(kind="l1", d=8, n=32)
    _randomise(cc)
    x = torch.randn(20, 2, 8)
    out = cc.forward_train(x, l1_coeff=0.5)
    f = torch.relu(torch.einsum("bmd,mdn->bn", x, cc.W_enc) + cc.b_enc)
    x_hat = torch.einsum("bn,mnd->bmd", f, cc.W_dec) + cc.b_dec
    recon = (x - x_hat).pow(2).sum((1, 2)).mean()
    l1 = (f * cc.W_dec.norm(dim=-1).sum(0)).sum(1).mean()
    assert out.loss.item() == pytest.approx((recon + 0.5 * l1).item(), rel=1e-5)
    assert out.sparsity.item() == pytest.approx(l1.item(), rel=1e-5)
    assert float(cc.threshold) == 0.0


def test_threshold_encoding_rule():
    cc = _cc(d=8, n=32, k=3)
    _randomise(cc)
    x = torch.randn(30, 2, 8)
    # before a threshold is learned (-1): batch top-k, exactly k*B active
    assert int((cc.encode(x) > 0).sum()) == 3 * 30
    # with a threshold: f kept iff f * sum_m ||d_j^m|| > threshold, values unscaled
    f = torch.relu(cc.pre_acts(x))
    score = f * cc.decoder_norms().sum(0)
    cc.threshold.fill_(float(score[score > 0].median().detach()))
    enc = cc.encode(x)
    assert torch.equal(enc, f * (score > cc.threshold))
    # forward decodes what encode returns
    x_hat, f2 = cc(x)
    assert torch.allclose(x_hat, cc.decode(f2))


def test_save_load_roundtrip(tmp_path):
    cc = _cc(d=8, n=32)
    _randomise(cc)
    cc.threshold.fill_(0.7)
    cc.cfg.layer, cc.cfg.store_manifest = 3, {"models": [{"ref": "a"}, {"ref": "b"}], "d_model": 8}
    cc.save(tmp_path / "cc", metrics={"fvu": [0.1, 0.2]})
    assert json.loads((tmp_path / "cc" / "metrics.json").read_text())["fvu"] == [0.1, 0.2]
    back = CrossCoder.load(tmp_path / "cc")
    assert back.cfg.layer == 3 and back.cfg.store_manifest["d_model"] == 8
    x = torch.randn(10, 2, 8)
    assert torch.equal(back(x)[0], cc(x)[0]) and float(back.threshold) == pytest.approx(0.7)


# ---- dictionary_learning interop ---------------------------------------------------------------


def _their_forward(sd: dict, x: torch.Tensor, *, use_threshold: bool = True) -> torch.Tensor:
    """science-of-finetuning dictionary_learning's BatchTopKCrossCoder.forward (CROSSCODER code normalisation),
    re-typed from dictionary.py: CrossCoderEncoder sums per-layer projections then ReLU; BatchTopK keeps f where
    f * sum_l ||W_dec[l, j]|| > threshold (batch top-k on that score when threshold < 0); decoder einsum + bias."""
    f = torch.relu(
        torch.einsum("bld,ldf->blf", x, sd["encoder.weight"]).sum(1) + sd["encoder.bias"]
    )
    if "threshold" in sd:
        code_norm = sd["decoder.weight"].norm(dim=2).sum(dim=0, keepdim=True)  # [1, n]
        f_scaled = f * code_norm
        if use_threshold and sd["threshold"].item() >= 0:
            f = f * (f_scaled > sd["threshold"])
        else:
            idx = f_scaled.flatten().topk(int(sd["k"]) * x.shape[0], sorted=False).indices
            f = torch.zeros(f.numel()).scatter_(-1, idx, f.flatten()[idx]).reshape(f.shape)
    return torch.einsum("bf,lfd->bld", f, sd["decoder.weight"]) + sd["decoder.bias"]


def _their_state(m=2, d=8, n=40, k=3, threshold=None) -> dict:
    g = torch.Generator().manual_seed(7)
    sd = {
        "encoder.weight": torch.randn(m, d, n, generator=g) * 0.3,
        "encoder.bias": torch.randn(n, generator=g) * 0.1,
        "decoder.weight": torch.randn(m, n, d, generator=g) * 0.3,
        "decoder.bias": torch.randn(m, d, generator=g),
        "code_normalization_id": torch.tensor(1),
    }
    if threshold is not None:
        sd.update(threshold=torch.tensor(threshold), k=torch.tensor(k, dtype=torch.int))
    return sd


@pytest.mark.parametrize("threshold", [None, -1.0, 0.4])
def test_dictionary_learning_layout_decodes_identically(tmp_path, threshold):
    from safetensors.torch import save_file

    sd = _their_state(threshold=threshold)
    folder = tmp_path / "dl"
    folder.mkdir()
    save_file(sd, str(folder / "model.safetensors"))
    cfg = {
        "activation_dim": 8,
        "dict_size": 40,
        "num_encoder_layers": 2,
        "code_normalization": "CROSSCODER",
    }
    if threshold is not None:
        cfg["k"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    cc = CrossCoder.load(folder)  # dispatches to the interop loader
    assert cc.cfg.kind == ("l1" if threshold is None else "batchtopk")
    x = torch.randn(25, 2, 8)
    assert torch.allclose(cc(x)[0], _their_forward(sd, x), atol=1e-5)
    back = to_dictionary_learning(cc)
    assert torch.equal(back["decoder.weight"], sd["decoder.weight"])


def test_dictionary_learning_pickle_needs_opt_in_and_other_normalisation_refused(tmp_path):
    sd = _their_state(threshold=0.2)
    torch.save(sd, tmp_path / "model_final.pt")
    with pytest.raises(DiffingError, match="allow_pickle"):
        load_dictionary_learning(tmp_path / "model_final.pt")
    cc = load_dictionary_learning(tmp_path / "model_final.pt", allow_pickle=True)
    x = torch.randn(9, 2, 8)
    assert torch.allclose(cc(x)[0], _their_forward(sd, x), atol=1e-5)
    sd["code_normalization_id"] = torch.tensor(2)  # SAE normalisation
    torch.save(sd, tmp_path / "sae.pt")
    with pytest.raises(DiffingError, match="only CROSSCODER"):
        load_dictionary_learning(tmp_path / "sae.pt", allow_pickle=True)


def test_missing_crosscoder_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DiffingError, match="cannot find crosscoder"):
        CrossCoder.load("nobody/no-such-crosscoder-xyz")
