"""Crosscoder training hardening: invalid options, devices, output folders, store identity,
warnings, full disks, the background prefetch, and the GPU benchmark's small run."""

from __future__ import annotations

import json

import pytest
import torch
from test_crosscoder_train import _store, small_cfg, synthetic

from diffing.crosscoder import CrossCoder, CrossCoderConfig, train_crosscoder
from diffing.errors import DiffingError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: one intra-op thread is faster, and far faster on a shared, oversubscribed CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _exit_code(args: list[str]) -> int:
    """``diffing`` main's exit code, whether the error came from parsing (SystemExit) or the handler."""
    from diffing.cli.main import main

    try:
        return main(args)
    except SystemExit as err:
        return int(err.code)


@pytest.mark.parametrize(
    "flag, value",
    [("--steps", "0"), ("--steps", "-5"), ("--tokens", "0"), ("--dict-size", "0"),
     ("--expansion", "0"), ("--batch-size", "0"), ("--lr", "-1"), ("--lr", "nan"), ("--k", "0")],
)  # fmt: skip
def test_cli_rejects_invalid_training_options(tmp_path, capsys, flag, value):
    # the store does not even need to exist: options are checked first
    args = ["crosscoder", "train", str(tmp_path / "nostore"), "--out", str(tmp_path / "cc")]
    assert _exit_code([*args, flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "must be" in err, err
    name = flag[2:].replace("-", "_")
    assert f"{name}={value}" in err.replace("-1.0", "-1") or flag in err, err  # names the option
    assert not (tmp_path / "cc").exists()


def test_config_rejects_invalid_values_in_python():
    for bad in ({"steps": 0}, {"dict_size": 0}, {"expansion": 0}, {"batch_size": -1},
                {"lr": float("inf")}, {"k": 0}, {"tokens": 0}, {"dtype": "int8"}):  # fmt: skip
        with pytest.raises(DiffingError, match="must be|unknown"):
            CrossCoderConfig(**bad)
    assert CrossCoderConfig(dict_size=None, d_model=8).resolved().dict_size == 64


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x, _ = synthetic(n_tokens=512)
    with pytest.raises(DiffingError, match="CUDA is not available.*`device` cpu"):
        train_crosscoder(x, small_cfg(steps=2), device="cuda")
    _store(tmp_path / "s", {3: x})
    assert _exit_code(["crosscoder", "train", str(tmp_path / "s"), "--out", str(tmp_path / "cc"),
                       "--device", "cuda", "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA" in err and "--device cpu" in err, err


def test_out_folder_guard(tmp_path):
    x, _ = synthetic(n_tokens=2048)
    cfg = small_cfg(steps=20, log_every=10)
    model = tmp_path / "model"  # a transformers model folder: never written over silently
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(DiffingError, match="holds other files .*config.json.*`force=True`"):
        train_crosscoder(x, cfg, model)
    assert json.loads((model / "config.json").read_text()) == {"model_type": "llama"}
    done = train_crosscoder(x, cfg, tmp_path / "cc")
    weights = (tmp_path / "cc" / "crosscoder.safetensors").read_bytes()
    shorter = small_cfg(steps=5, log_every=5)
    with pytest.raises(DiffingError, match=r"finished crosscoder \(20 steps\).*`force=True`"):
        train_crosscoder(x, shorter, tmp_path / "cc")
    with pytest.raises(DiffingError, match="another config.*steps: checkpoint 20 vs now 5"):
        train_crosscoder(x, shorter, tmp_path / "cc", resume=True)
    assert (tmp_path / "cc" / "crosscoder.safetensors").read_bytes() == weights
    again = train_crosscoder(x, cfg, tmp_path / "cc", resume=True)  # same config: kept as is
    assert again.finished and torch.equal(again.crosscoder.W_dec, done.crosscoder.W_dec)
    assert again.metrics["steps"] == 20
    forced = train_crosscoder(x, shorter, tmp_path / "cc", force=True)
    assert forced.metrics["steps"] == 5
    assert CrossCoder.load(tmp_path / "cc").cfg.steps == 5


def test_resume_on_another_store_is_refused(tmp_path):
    x, _ = synthetic(n_tokens=2048)
    a = _store(tmp_path / "a", {1: x})
    b = _store(tmp_path / "b", {1: x.flip(0)})  # same shape and size, other content
    cfg = small_cfg(steps=20, checkpoint_every=10)
    part = train_crosscoder(a, cfg, tmp_path / "cc", max_steps=10)
    assert not part.finished
    saved = json.loads((tmp_path / "cc" / "checkpoint" / "state.json").read_text())
    fingerprint = saved["config"]["store_manifest"]["fingerprint"]
    assert len(fingerprint) == 64
    with pytest.raises(DiffingError, match="another config.*another store"):
        train_crosscoder(b, cfg, tmp_path / "cc", resume=True)
    done = train_crosscoder(a, cfg, tmp_path / "cc", resume=True)
    assert done.finished and done.crosscoder.cfg.store_manifest["fingerprint"] == fingerprint


def test_short_or_useless_runs_warn(tmp_path, caplog):
    x, _ = synthetic(n_tokens=2048)
    with caplog.at_level("WARNING"):
        res = train_crosscoder(x, small_cfg(steps=5, lr=1e-9), tmp_path / "cc")
    w = res.metrics["warnings"]
    assert any("only 5 steps" in s for s in w) and any("FVU" in s and "> 0.9" in s for s in w)
    assert json.loads((tmp_path / "cc" / "metrics.json").read_text())["warnings"] == w
    assert "only 5 steps" in caplog.text
    good = train_crosscoder(x, small_cfg(steps=120, log_every=60))
    assert good.metrics["warnings"] == [] and good.metrics["tokens_per_s"] > 0


def test_full_disk_while_saving_is_a_clear_error(tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    x, _ = synthetic(n_tokens=1024)
    with pytest.raises(DiffingError, match="no space left on the disk while writing"):
        train_crosscoder(x, small_cfg(steps=4), tmp_path / "cc")
    with pytest.raises(DiffingError, match="no space left"):
        train_crosscoder(x, small_cfg(steps=4, checkpoint_every=2), tmp_path / "cc2")


# ---- background prefetch -----------------------------------------------------------------------


def test_prefetch_yields_the_readers_batches_bit_for_bit(tmp_path):
    from diffing.crosscoder import distributed as ddp
    from diffing.crosscoder.prefetch import Prefetcher

    x, _ = synthetic(n_tokens=3000)
    from diffing.store import ActivationStore, write_store

    write_store(tmp_path / "s", {0: x * 3}, torch.zeros(3000, dtype=torch.long),
                norm_scales={0: [0.5, 2.0]}, dtype="bfloat16", shard_tokens=1024)  # fmt: skip
    store = ActivationStore.open(tmp_path / "s")
    cfg = small_cfg(layer=0)
    expected = list(ddp.epoch_batches(store, cfg, 256, 0, 1, 0, 0))  # reader-normalised float32
    raw = ddp.epoch_batches(store, cfg, 256, 0, 1, 0, 0, raw=True)
    with Prefetcher(raw, scales=store.norm_scales(0), depth=2) as got:
        batches = list(got)
    assert len(batches) == len(expected) == 3000 // 256
    for (b, finite), e in zip(batches, expected):
        assert finite and b.dtype == torch.float32 and torch.equal(b, e)


def test_prefetch_reraises_reader_errors_and_stops():
    from diffing.crosscoder.prefetch import Prefetcher

    def batches():
        yield torch.ones(4, 2, 3)
        yield torch.full((4, 2, 3), float("nan"))
        raise DiffingError("shard 3 is corrupt")

    p = Prefetcher(batches())
    first, second = next(p), next(p)
    assert first.finite and torch.equal(first.x, torch.ones(4, 2, 3)) and not second.finite
    with pytest.raises(DiffingError, match="shard 3 is corrupt"):
        next(p)
    p.close()
    endless = Prefetcher(iter(lambda: torch.zeros(2, 2, 2), None), depth=2)
    next(endless)
    endless.close()
    assert not endless._thread.is_alive()


# ---- benchmark ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_gpu_crosscoder_benchmark_small_run_reports_every_rate():
    from benchmarks.gpu_crosscoder import SMALL, run

    report = run(small=True, device="cpu")
    json.dumps(report)  # JSON-ready
    rows = {(r["dict_size"], r["precision"]): r for r in report["step"]}
    assert set(rows) == {(n, p) for n in SMALL["dict_sizes"] for p in ("fp32", "bf16")}
    for r in rows.values():
        assert r["ours_tokens_per_s"] > 0 and r["dense_tokens_per_s"] > 0
        assert r["speedup"] == pytest.approx(r["ours_tokens_per_s"] / r["dense_tokens_per_s"])
        assert r["decode"] == "sparse"  # the CPU rule
    e2e = report["end_to_end"]
    assert e2e["store_dtype"] == "bfloat16" and e2e["steps"] == SMALL["train_steps"]
    assert e2e["store_tokens_per_s"] > 0 and e2e["step_only_tokens_per_s"] > 0
    assert e2e["ratio"] == pytest.approx(e2e["store_tokens_per_s"] / e2e["step_only_tokens_per_s"])


# ---- CUDA (skipped without a GPU) ---------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_dense_path_prefetch_and_bf16(tmp_path):
    """On a GPU: auto picks dense and matches sparse; bf16 trains; the pinned, side-stream prefetch equals the reader."""
    from diffing.crosscoder import distributed as ddp
    from diffing.crosscoder.prefetch import Prefetcher
    from diffing.store import ActivationStore, write_store

    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randn(64, 2, 16, generator=torch.Generator().manual_seed(3)).cuda()
    dead = torch.zeros(64, dtype=torch.bool, device="cuda")
    dead[1::4] = True
    grads = {}
    for decode in ("sparse", "dense"):
        cc = CrossCoder(CrossCoderConfig(d_model=16, dict_size=64, k=4, decode=decode).resolved())
        cc = cc.cuda()
        out = cc.forward_train(x, dead=dead)
        out.loss.backward()
        grads[decode] = (out.loss.item(), {n: p.grad.clone() for n, p in cc.named_parameters()})
    assert grads["sparse"][0] == pytest.approx(grads["dense"][0], rel=1e-5)
    for name, g in grads["sparse"][1].items():
        assert torch.allclose(g, grads["dense"][1][name], atol=1e-5, rtol=1e-4), name
    data, _ = synthetic(n_tokens=4096)
    res = train_crosscoder(data, small_cfg(dtype="bfloat16", steps=150), device="cuda")
    assert max(res.metrics["fvu"]) < 0.3 and res.crosscoder.W_enc.dtype == torch.float32
    write_store(tmp_path / "s", {0: data}, torch.zeros(4096, dtype=torch.long),
                norm_scales={0: [0.5, 2.0]}, dtype="bfloat16", shard_tokens=1024)  # fmt: skip
    store = ActivationStore.open(tmp_path / "s")
    cfg = small_cfg(layer=0)
    expected = list(ddp.epoch_batches(store, cfg, 256, 0, 1, 0, 0))
    raw = ddp.epoch_batches(store, cfg, 256, 0, 1, 0, 0, raw=True)
    with Prefetcher(raw, device="cuda", scales=store.norm_scales(0)) as got:
        for (b, finite), e in zip(got, expected):
            assert finite and b.is_cuda and torch.equal(b.cpu(), e)
