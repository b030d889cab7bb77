"""Crosscoder training: recovery of planted features, BatchTopK L0 and threshold, AuxK revival,
determinism, resume, 2-process DDP, stores, bad input, CLI, spliced loss."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from diffing.crosscoder import CrossCoder, CrossCoderConfig, train_crosscoder
from diffing.errors import DiffingError

N_FT_ONLY, N_BASE_ONLY = 8, 8
FVU_BOUND_ORGANISM = 0.25  # measured 0.13 / 0.14 (base / chat) with this recipe


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: one intra-op thread is faster, and far faster on a shared, oversubscribed CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synthetic(d=16, n_true=32, n_tokens=16384, density=2, seed=0):
    """Activations built from sparse ground-truth features: ``[n_tokens, 2, d]`` and the dictionary ``[2, n_true, d]``.

    Features 0-7 exist only in model 1 (fine-tuned), 8-15 only in model 0 (base), the rest are
    shared with the same direction in both. Normalised so the mean squared norm per model is about d.
    """
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(2, n_true, d, generator=g)
    true = true / true.norm(dim=-1, keepdim=True)
    true[1, N_FT_ONLY + N_BASE_ONLY :] = true[0, N_FT_ONLY + N_BASE_ONLY :]
    true[0, :N_FT_ONLY] = 0
    true[1, N_FT_ONLY : N_FT_ONLY + N_BASE_ONLY] = 0
    on = torch.rand(n_tokens, n_true, generator=g) < density / n_true
    codes = on.float() * (torch.rand(n_tokens, n_true, generator=g) + 0.5)
    x = torch.einsum("tn,mnd->tmd", codes, true)
    return x * (d**0.5 / x.pow(2).sum(-1).mean().sqrt()), true


def small_cfg(**kw) -> CrossCoderConfig:
    # 64 latents for 32 planted features: many latents are rightly dead here, so the AuxK weight
    # is Gao et al.'s 1/32; the default (1.0) is chosen for real data in tests/test_dead_latents.py
    base = dict(
        dict_size=64, k=2, batch_size=128, steps=300, lr=5e-3, lr_warmup_steps=10,
        threshold_start_step=20, threshold_beta=0.98, log_every=50, dead_tokens=3000,
        auxk_alpha=1 / 32,
    )  # fmt: skip
    return CrossCoderConfig(**{**base, **kw})


def _delta(cc: CrossCoder) -> torch.Tensor:
    n = cc.decoder_norms().detach()
    return 0.5 * ((n[1] - n[0]) / n.max(0).values + 1)


@pytest.mark.slow
def test_batchtopk_recovers_planted_features_and_their_model():
    x, true = synthetic()
    res = train_crosscoder(x, small_cfg())
    h = res.history
    assert h[-1]["loss"] < 0.5 * h[0]["loss"]
    assert all(h_["l0"] == pytest.approx(2.0) for h_ in h)  # training L0 is exactly k
    assert max(res.metrics["fvu"]) < 0.1
    assert res.metrics["l0"] == pytest.approx(2.0, rel=0.2)  # the learned threshold keeps L0 near k
    cc = res.crosscoder
    dec = torch.cat([cc.W_dec[0], cc.W_dec[1]], -1).detach()
    tru = torch.cat([true[0], true[1]], -1)
    cos = (tru / tru.norm(dim=-1, keepdim=True)) @ (dec / dec.norm(dim=-1, keepdim=True)).T
    best, idx = cos.max(1)  # per true feature: closest latent
    assert (best > 0.9).float().mean() >= 0.9
    assert best[: N_FT_ONLY + N_BASE_ONLY].min() > 0.9
    delta = _delta(cc)[idx]
    assert delta[:N_FT_ONLY].min() > 0.9  # fine-tuned-only features: Delta near 1
    assert delta[N_FT_ONLY : N_FT_ONLY + N_BASE_ONLY].max() < 0.1  # base-only: near 0
    assert (delta[N_FT_ONLY + N_BASE_ONLY :] - 0.5).abs().median() < 0.05  # shared: near 1/2


@pytest.mark.slow
def test_l1_crosscoder_learns_sparse_reconstruction():
    x, _ = synthetic()
    res = train_crosscoder(x, small_cfg(kind="l1", l1_coeff=0.3, steps=200, lr=1e-2, log_every=5))
    assert res.history[-1]["recon"] < 0.3 * res.history[0]["recon"]
    assert max(res.metrics["fvu"]) < 0.25
    assert res.metrics["l0"] < 20  # the penalty makes codes sparse (dense would be 64)
    assert res.history[0]["l1_coeff"] < res.history[-1]["l1_coeff"] == pytest.approx(0.3)


def test_auxk_revives_dead_latents():
    x, _ = synthetic(n_tokens=4096)
    cfg = small_cfg(steps=60, dead_tokens=256, log_every=60).resolved(d_model=16, n_models=2)
    start = CrossCoder(cfg)
    dead = torch.arange(0, 64, 2)  # half the latents: decoder norm 1e-4, never win the top-k
    with torch.no_grad():
        start.W_dec[:, dead] *= 1e-3
    revived = {}
    for alpha in (0.0, 1 / 32):
        res = train_crosscoder(
            x,
            small_cfg(steps=60, dead_tokens=256, log_every=60, auxk_alpha=alpha),
            crosscoder=start,
        )
        f = res.crosscoder.encode(x[:2048])
        revived[alpha] = float((f[:, dead] > 0).any(0).float().mean())
    assert revived[0.0] == 0.0  # no gradient ever reaches them without the auxiliary loss
    assert revived[1 / 32] >= 0.5


def _weights(cc: CrossCoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cc.state_dict().items()}


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path):
    x, _ = synthetic(n_tokens=4096)
    cfg = small_cfg(steps=40, checkpoint_every=20, log_every=10)
    a = train_crosscoder(x, cfg, tmp_path / "a")
    b = train_crosscoder(x, cfg)
    for k, v in _weights(a.crosscoder).items():
        assert torch.equal(v, _weights(b.crosscoder)[k]), k
    part = train_crosscoder(x, cfg, tmp_path / "r", max_steps=25)
    assert not part.finished and (tmp_path / "r" / "checkpoint" / "state.safetensors").is_file()
    with pytest.raises(DiffingError, match="`resume=True`"):
        train_crosscoder(x, cfg, tmp_path / "r")
    with pytest.raises(DiffingError, match="another config.*k: checkpoint 2 vs now 3"):
        train_crosscoder(
            x, small_cfg(steps=40, checkpoint_every=20, k=3), tmp_path / "r", resume=True
        )
    done = train_crosscoder(x, cfg, tmp_path / "r", resume=True)
    assert done.finished and not (tmp_path / "r" / "checkpoint").exists()
    for k, v in _weights(a.crosscoder).items():
        assert torch.equal(v, _weights(done.crosscoder)[k]), k
    saved = CrossCoder.load(tmp_path / "r")
    assert torch.equal(saved.W_dec, a.crosscoder.W_dec)
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["steps"] == 40 and len(metrics["fvu"]) == 2


def _ddp_worker(rank, world, port, x, cfgs, outs):
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    # one process group for both runs (train_crosscoder joins an existing group and leaves it up)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=300),
    )  # fmt: skip
    try:
        for cfg, out in zip(cfgs, outs):
            train_crosscoder(x, cfg, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    x, _ = synthetic(n_tokens=4096)
    cfgs = [small_cfg(kind="l1", l1_coeff=0.3, steps=30), small_cfg(steps=30)]
    outs = [tmp_path / "ddp_l1", tmp_path / "ddp_topk"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.spawn(_ddp_worker, args=(2, port, x, cfgs, outs), nprocs=2, join=False)
    for _ in range(600):  # never hang the suite: fail after 10 minutes
        if ctx.join(timeout=1):
            break
    else:
        for proc in ctx.processes:
            proc.terminate()
        pytest.fail("the 2-process DDP run did not finish in 10 minutes")
    # L1: the mean of the two ranks' gradients is the gradient of the global batch: equal weights
    single = train_crosscoder(x, cfgs[0]).crosscoder
    ddp = CrossCoder.load(outs[0])
    for name, p in single.named_parameters():
        assert torch.allclose(p, getattr(ddp, name), atol=1e-5), name
    # BatchTopK: top-k runs over each rank's half batch, so only close, not equal
    single = train_crosscoder(x, cfgs[1])
    ddp_metrics = json.loads((outs[1] / "metrics.json").read_text())
    assert ddp_metrics["train_l0"] == pytest.approx(2.0)
    for a, b in zip(single.metrics["train_fvu"], ddp_metrics["train_fvu"]):
        assert abs(a - b) < 0.05


# ---- stores, bad input, CLI -------------------------------------------------------------------


def _store(path, x_by_layer, *, nan_at=None):
    from diffing.store import write_store

    acts = {k: v.clone() for k, v in x_by_layer.items()}
    if nan_at is not None:
        for v in acts.values():
            v[nan_at] = float("nan")
    n = next(iter(acts.values())).shape[0]
    models = [{"ref": "base-model"}, {"ref": "chat-model"}]
    write_store(
        path, acts, torch.arange(n) % 50, models=models, norm_scales={k: [1.0, 1.0] for k in acts}
    )
    from diffing.store import ActivationStore

    return ActivationStore.open(path)


def test_store_training_provenance_and_bad_input(tmp_path):
    x, _ = synthetic(n_tokens=2048)
    store = _store(tmp_path / "s", {1: x, 2: x * 0.5})
    with pytest.raises(DiffingError, match="pick one with `layer`"):
        train_crosscoder(store, small_cfg(steps=5))
    res = train_crosscoder(store, small_cfg(steps=10, layer=2), tmp_path / "cc")
    cfg = CrossCoder.load(tmp_path / "cc").cfg
    assert cfg.layer == 2 and cfg.store_manifest["models"][1]["ref"] == "chat-model"
    assert res.metrics["steps"] == 10
    with pytest.raises(DiffingError, match="d_model=8 but the activations have d_model=16"):
        train_crosscoder(store, small_cfg(steps=5, layer=1, d_model=8))
    with pytest.raises(DiffingError, match="expects 3 models but the activations hold 2"):
        train_crosscoder(store, small_cfg(steps=5, layer=1, n_models=3))
    with pytest.raises(DiffingError, match="fewer than one batch"):
        train_crosscoder(x[:100], small_cfg(steps=None))
    with pytest.raises(DiffingError, match="non-empty"):
        train_crosscoder(x[:0], small_cfg())
    bad = _store(tmp_path / "nan", {1: x}, nan_at=1500)
    with pytest.raises(DiffingError, match=r"batch \d+ .*NaN"):
        train_crosscoder(bad, small_cfg(steps=40))


def test_cli_train(tmp_path, capsys):
    from diffing.cli.main import main

    x, _ = synthetic(n_tokens=2048)
    _store(tmp_path / "s", {3: x})
    args = ["crosscoder", "train", str(tmp_path / "s"), "--out", str(tmp_path / "cc"), "--dict-size", "32",
            "--k", "2", "--batch-size", "64", "--steps", "20", "--lr", "0.005", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "FVU base" in capsys.readouterr().out
    cc = CrossCoder.load(tmp_path / "cc")
    assert cc.cfg.dict_size == 32 and cc.cfg.layer == 3
    assert main([*args[:-1], "--layer", "5"]) == 2
    assert "layer 5 is not in the store" in capsys.readouterr().err


def test_spliced_loss_perfect_and_zero_reconstruction(tiny_pair):
    from diffing.crosscoder.splice import spliced_loss

    d = tiny_pair.d_model
    cfg = CrossCoderConfig(d_model=d, dict_size=4 * d, kind="l1").resolved()
    perfect = CrossCoder(cfg)
    eye = torch.eye(d)
    with (
        torch.no_grad()
    ):  # latents +-e_i of each model: relu(x) - relu(-x) = x, an exact reconstruction
        perfect.W_enc.zero_(), perfect.W_dec.zero_(), perfect.b_dec.zero_()
        for m in range(2):
            sl = slice(2 * m * d, 2 * m * d + d), slice(2 * m * d + d, 2 * (m + 1) * d)
            perfect.W_enc[m, :, sl[0]], perfect.W_enc[m, :, sl[1]] = eye, -eye
            perfect.W_dec[m, sl[0]], perfect.W_dec[m, sl[1]] = eye, -eye
    texts = ["the quick brown fox jumps over the lazy dog", "tell me how to bake bread"]
    res = spliced_loss(perfect, tiny_pair, 1, texts, torch.tensor([2.0, 0.5]))
    assert res.spliced == pytest.approx(res.clean, abs=1e-4) and res.tokens > 5
    zero = CrossCoder(cfg)
    with torch.no_grad():
        zero.W_dec.zero_()
    assert spliced_loss(zero, tiny_pair, 1, texts, 1.0).spliced > res.clean + 0.01


def test_training_with_a_pair_reports_spliced_loss(tiny_pair):
    from diffing.crosscoder.splice import spliced_loss
    from diffing.tracing import trace_pair

    texts = ["the quick brown fox jumps over the lazy dog", "tell me how to bake bread"] * 4
    acts = trace_pair(tiny_pair, texts, [1])
    keep = acts.attention_mask.bool()
    x = torch.stack([acts.base[1][keep], acts.finetuned[1][keep]], dim=1)  # [tokens, 2, d]
    cfg = CrossCoderConfig(
        dict_size=64, k=4, batch_size=16, steps=20, layer=1, spliced_every=10, lr=1e-3
    )
    res = train_crosscoder(x, cfg, pair=tiny_pair, spliced_texts=texts[:2])
    logged = [h for h in res.history if "spliced_loss" in h]
    assert [h["step"] for h in logged] == [10, 20]
    direct = spliced_loss(res.crosscoder, tiny_pair, 1, texts[:2], 1.0)
    assert res.metrics["spliced_clean"] == pytest.approx(direct.clean)
    assert res.metrics["spliced_loss"] == pytest.approx(direct.spliced)
    # a 20-step crosscoder is lossy: splicing changes the loss (a random model: either way)
    assert abs(res.metrics["spliced_loss"] - res.metrics["spliced_clean"]) > 1e-3


@pytest.mark.slow
def test_batchtopk_on_the_organism_chat_pair(organisms, tmp_path):
    """A small store from the organism base/chat pair's middle layer: training reconstructs it."""
    from diffing.models import ModelPair
    from diffing.store import ActivationStore, harvest

    pair = ModelPair.load(str(organisms / "base"), str(organisms / "chat"))
    layer = pair.n_layers // 2
    data = [
        str(p)
        for p in (organisms / "corpus" / "text.txt", organisms / "corpus" / "chat.jsonl")
        if p.exists()
    ]
    harvest(
        pair,
        tmp_path / "store",
        layers=[layer],
        data=data,
        tokens=16384,
        seq_len=64,
        progress=False,
    )
    store = ActivationStore.open(tmp_path / "store")
    cfg = CrossCoderConfig(expansion=4, k=8, batch_size=256, steps=200, lr=3e-3, lr_warmup_steps=10,
                           threshold_start_step=20, threshold_beta=0.98, log_every=50, dead_tokens=8192)  # fmt: skip
    res = train_crosscoder(store, cfg, tmp_path / "cc")
    assert res.crosscoder.cfg.layer == layer and res.crosscoder.cfg.d_model == pair.d_model
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    assert max(res.metrics["fvu"]) < FVU_BOUND_ORGANISM
    assert res.metrics["train_l0"] == pytest.approx(8.0)
    assert res.metrics["l0"] == pytest.approx(8.0, rel=0.2)


def test_bfloat16_training_matches_float32_quality():
    """bf16 compute with fp32 master weights trains, and reaches the fp32 run's FVU at the same step count.

    Seed 0 measured: FVU fp32 0.047 / 0.050, bf16 0.046 / 0.046. Other seeds move both runs
    alike by up to 0.05 and their gap by up to 0.01 (mean over models): chaos of the top-k
    selection, not a bf16 bias (docs/benchmarks/gpu_crosscoder.md).
    """
    x, _ = synthetic()
    fp32 = train_crosscoder(x, small_cfg(log_every=10))
    bf16 = train_crosscoder(x, small_cfg(dtype="bfloat16", log_every=10))
    assert bf16.crosscoder.W_enc.dtype == torch.float32  # master weights stay float32
    assert bf16.history[-1]["loss"] < 0.2 * bf16.history[0]["loss"]  # step 10 -> 300
    assert max(bf16.metrics["fvu"]) < 0.1
    mean = [sum(r.metrics["fvu"]) / 2 for r in (fp32, bf16)]
    assert abs(mean[0] - mean[1]) < 0.01, (fp32.metrics["fvu"], bf16.metrics["fvu"])
