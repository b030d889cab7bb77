"""Reading a crosscoder: planted latents on fabricated stores, the causal check and logit lens on tiny
models, the CLI on a dictionary_learning checkpoint, bad inputs."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from diffing.crosscoder.analysis import CLASS_IDS, classify, decoder_cosine, relative_norm_diff
from diffing.crosscoder.analyze import AnalysisConfig, analyze_crosscoder
from diffing.errors import DiffingError

D, N = 16, 8
PLANT_TOKEN = 7


def _crosscoder(layer: int = 3, d: int = D, n: int = N, manifest: dict | None = None):
    """ReLU crosscoder with planted weights (see test_latent_scaling.py for the three cases)."""
    from diffing.crosscoder import CrossCoder, CrossCoderConfig

    cc = CrossCoder(
        CrossCoderConfig(d_model=d, dict_size=n, kind="l1", layer=layer, store_manifest=manifest)
    )
    eye = torch.eye(d)
    with torch.no_grad():
        for p in (cc.W_enc, cc.b_enc, cc.W_dec, cc.b_dec):
            p.zero_()
        for j in range(3):
            cc.W_enc[1, :, j] = eye[j]
            cc.W_dec[1, j] = eye[j]
        cc.W_enc[0, :, 3] = eye[2]
        cc.W_dec[0, 3] = eye[2]
        for j in range(4, n):
            cc.W_enc[:, :, j] = 0.5 * eye[j - 1]
            cc.W_dec[:, j] = eye[j - 1]
    return cc


def _store(path, n_tokens: int = 3000, seed: int = 0, layer: int = 3):
    """Store whose latent 0 fires only on token PLANT_TOKEN in a template role; u1, u2 also in the base."""
    from diffing.store import ActivationStore, write_store
    from diffing.tokens import ROLE_IDS

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(10, 100, (n_tokens,), generator=g)
    roles = torch.full((n_tokens,), ROLE_IDS["text"])
    plant = torch.rand(n_tokens, generator=g) < 0.1
    tokens[plant] = PLANT_TOKEN
    roles[plant] = ROLE_IDS["template"]
    x = torch.zeros(n_tokens, 2, D)
    x[:, 1, 0] = plant * (1 + torch.rand(n_tokens, generator=g))
    for j in (1, 2):
        on = torch.rand(n_tokens, generator=g) < 0.3
        a = 1 + torch.rand(n_tokens, generator=g)
        x[:, 0, j] = x[:, 1, j] = on * a
    x[:, :, 3:7] = (
        torch.rand(n_tokens, 4, generator=g) * (torch.rand(n_tokens, 4, generator=g) < 0.5)
    )[:, None]
    doc_ids = torch.arange(n_tokens) // 30
    write_store(path, {layer: x}, tokens, doc_ids, roles=roles, norm_scales={layer: [1.0, 1.0]},
                models=[{"hash": "aaa"}, {"hash": "bbb"}])  # fmt: skip
    return ActivationStore.open(path)


def test_relative_norm_and_classes_known_values():
    W = torch.zeros(2, 4, 3)
    W[0, 0, 0], W[1, 0, 0] = 1.0, 0.0  # base-only: Δ = 0
    W[0, 1, 0], W[1, 1, 0] = 0.0, 2.0  # chat-only: Δ = 1
    W[0, 2, 0], W[1, 2, 1] = 1.0, 1.0  # shared norm, orthogonal: Δ = ½, cos 0
    W[0, 3, 0], W[1, 3, 0] = 1.0, 0.5  # Δ = ½(−½ + 1) = ¼: other
    delta = relative_norm_diff(W)
    assert torch.allclose(delta, torch.tensor([0.0, 1.0, 0.5, 0.25]))
    assert torch.allclose(decoder_cosine(W), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert classify(delta).tolist() == [
        CLASS_IDS[c] for c in ("base_only", "chat_only", "shared", "other")
    ]


def test_analyze_planted_store(tmp_path):
    store = _store(tmp_path / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = analyze_crosscoder(
            _crosscoder(), store, tmp_path / "out", top=5, config=AnalysisConfig(batch_size=512)
        )
    latents = json.loads((tmp_path / "out" / "latents.json").read_text())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == {"base_only": 1, "chat_only": 3, "shared": 4, "other": 0}
    assert summary["latent_scaling"]["chat_only"]["genuine"] == 1
    assert summary["latent_scaling"]["chat_only"]["complete_shrinkage"] == 1
    assert summary["latent_scaling"]["chat_only"]["latent_decoupling"] == 1
    assert [latents[j]["latent_scaling"]["flag"] for j in range(4)] == [
        "genuine", "complete_shrinkage", "latent_decoupling", "latent_decoupling"]  # fmt: skip
    g = latents[0]
    # latent 0 fires exactly on the planted template tokens
    plant = int((store.read_tokens(0, store.n_tokens).token_ids == PLANT_TOKEN).sum())
    assert g["active_tokens"] == plant and g["frequency_by_role"]["text"] == 0
    assert g["frequency_by_role"]["template"] == 1.0
    assert len(g["contexts"]) == 5
    for ctx in g["contexts"]:
        assert ctx["token"] == f"<{PLANT_TOKEN}>" and ctx["role"] == "template"
        assert (
            ctx["tokens"][ctx["index_in_window"]] == ctx["token"]
            and f"[[<{PLANT_TOKEN}>]]" in ctx["text"]
        )
    acts = [c["activation"] for c in g["contexts"]]
    assert acts == sorted(acts, reverse=True) and acts[0] <= 2.0 and acts[0] > 1.9
    assert "contexts" not in latents[5]  # shared latents get no contexts unless asked for
    for name in ("delta_histogram.png", "nu_scatter.png", "cosine_histogram.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    assert sum(summary["delta_histogram"]["counts"]) == N
    assert res.causal is None and any("causal check skipped" in n for n in summary["notes"])
    assert any(
        "logit lens and causal check skipped" in n for n in summary["notes"]
    )  # no models named


def test_cli_on_dictionary_learning_checkpoint(tmp_path, capsys):
    """``diffing crosscoder analyze`` on a crosscoder saved in science-of-finetuning's layout."""
    from safetensors.torch import save_file

    from diffing.cli.main import main
    from diffing.crosscoder.interop import to_dictionary_learning

    _store(tmp_path / "store", n_tokens=1500)
    (tmp_path / "dl").mkdir()
    save_file(to_dictionary_learning(_crosscoder()), str(tmp_path / "dl" / "model.safetensors"))
    argv = ["crosscoder", "analyze", str(tmp_path / "dl"), "--store", str(tmp_path / "store"),
            "--out", str(tmp_path / "out"), "--top", "3", "--no-figures"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    assert (
        "chat_only: genuine 1, complete_shrinkage 1, latent_decoupling 1" in capsys.readouterr().out
    )
    latents = json.loads((tmp_path / "out" / "latents.json").read_text())
    assert latents[0]["class"] == "chat_only" and latents[0]["latent_scaling"]["flag"] == "genuine"
    assert len(latents[0]["contexts"]) == 3
    bad = [
        "crosscoder",
        "analyze",
        str(tmp_path / "dl"),
        "--store",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "o2"),
    ]
    assert main(bad) == 2
    assert "diffing: error:" in capsys.readouterr().err
    out_of_range = argv[:-1] + ["--latents", "3", "8"]  # the crosscoder has latents 0..7
    assert main(out_of_range) == 2
    assert "latent index 8 is out of range" in capsys.readouterr().err


def test_mismatched_crosscoder_and_store(tmp_path):
    store = _store(tmp_path / "store", n_tokens=300)
    with pytest.raises(DiffingError, match="layer 5"):
        analyze_crosscoder(_crosscoder(layer=5), store, tmp_path / "a")
    with pytest.raises(DiffingError, match="d_model"):
        analyze_crosscoder(_crosscoder(d=8, n=4), store, tmp_path / "b")
    other = {"models": [{"ref": "other-base", "hash": "zzz"}, {"hash": "bbb"}]}
    with pytest.raises(DiffingError, match="other-base"):
        analyze_crosscoder(_crosscoder(manifest=other), store, tmp_path / "c")


def test_small_store_marks_beta_unreliable(tmp_path):
    store = _store(tmp_path / "store", n_tokens=120)
    with pytest.warns(UserWarning, match="fewer than 50"):
        res = analyze_crosscoder(
            _crosscoder(), store, tmp_path / "out", config=AnalysisConfig(figures=False)
        )
    ls = [r["latent_scaling"] for r in res.latents if "latent_scaling" in r]
    assert ls and all(r["beta_reliable"] is False for r in ls)
    assert res.summary["latent_scaling"]["chat_only"]["unreliable"] == 3


def _difference_crosscoder(d: int, scales: tuple[float, float]):
    """Latents j < d read relu(+(x_f − x_b)_j), latents d + j read relu(−(x_f − x_b)_j) (raw units); their
    decoded differences sum to exactly x_f − x_b, so patching with all of them restores the fine-tuned model."""
    from diffing.crosscoder import CrossCoder, CrossCoderConfig

    s_b, s_f = scales
    cc = CrossCoder(CrossCoderConfig(d_model=d, dict_size=2 * d, kind="l1", layer=1))
    eye = torch.eye(d)
    with torch.no_grad():
        for p in (cc.W_enc, cc.b_enc, cc.W_dec, cc.b_dec):
            p.zero_()
        cc.W_enc[1, :, :d], cc.W_enc[0, :, :d] = eye / s_f, -eye / s_b
        cc.W_enc[1, :, d:], cc.W_enc[0, :, d:] = -eye / s_f, eye / s_b
        cc.W_dec[1, :d], cc.W_dec[1, d:] = s_f * eye, -s_f * eye
    return cc


def test_causal_check_known_fractions(tiny_pair):
    from diffing.crosscoder.causal import causal_check

    d = tiny_pair.d_model
    scales = (2.0, 0.5)
    cc = _difference_crosscoder(d, scales)
    texts = [
        [
            {"role": "user", "content": "tell me how to bake bread"},
            {"role": "assistant", "content": "the quick brown fox"},
        ],
        "a model reads text and predicts the next token",
    ]
    res = causal_check(cc, tiny_pair, texts, {"all": range(2 * d), "none": [], "half": range(d)},
                       layer=1, norm_scales=scales)  # fmt: skip
    assert res.kl_full > 0
    assert abs(res.fraction_closed["all"] - 1) < 1e-3 and res.kl["all"] < 1e-3 * res.kl_full
    assert res.fraction_closed["none"] == pytest.approx(0.0, abs=1e-9)
    assert 0.05 < res.fraction_closed["half"] < 0.95
    assert set(res.kl_full_by_role) >= {"user", "assistant", "template"}
    assert all(abs(v - 1) < 1e-3 for v in res.fraction_closed_by_role["all"].values())


def test_logit_lens_undoes_norm_gain_and_scale(tiny_pair):
    from diffing.arch import get_module
    from diffing.crosscoder.contexts import logit_lens

    model = tiny_pair.hf("finetuned")
    W_U = get_module(model, tiny_pair.arch.unembed).weight.detach()  # [V, d]
    gain = get_module(model, tiny_pair.arch.final_norm).weight.detach()  # [d]
    target = 123
    direction = (W_U[target] / gain)[None]  # through the gain this becomes W_U[target]
    expected = int((W_U @ W_U[target]).argmax())
    for scale in (1.0, 7.0):
        lens = logit_lens(direction * scale, model, tiny_pair.arch, norm_scale=scale, top=3)
        assert int(lens.token_ids[0, 0]) == expected and bool(lens.valid[0])
    zero = logit_lens(torch.zeros(1, tiny_pair.d_model), model, tiny_pair.arch)
    assert not bool(zero.valid[0])


def test_top_activations_streaming_equals_global_topk():
    from diffing.crosscoder.contexts import TopActivations

    g = torch.Generator().manual_seed(0)
    f = torch.rand(1000, 30, generator=g) * (torch.rand(1000, 30, generator=g) < 0.2)  # [T, n]
    f[:, 29] = 0  # a latent that never fires
    tops = TopActivations(30, 7)
    for s in range(0, 1000, 128):
        tops.update(f[s : s + 128], s)
    vals, idx = f.topk(7, dim=0)
    for j in range(29):
        assert tops.of(j) == [
            (pytest.approx(float(v)), int(i)) for v, i in zip(vals[:, j], idx[:, j])
        ]
    assert tops.of(29) == []


def test_decoder_bias_shift_known_values(tmp_path):
    """A constant shift c added to every fine-tuned activation: the moments see it, the bias reports it in raw units."""
    from diffing.store import ActivationStore, write_store

    n_tokens, scales = 2000, (2.0, 0.5)
    g = torch.Generator().manual_seed(3)
    x_b = torch.randn(n_tokens, D, generator=g)  # [T, d] raw units
    c = torch.zeros(D)
    c[5] = 3.0
    noise = 0.5 * torch.randn(n_tokens, D, generator=g)
    x_f = x_b + c + noise
    x = torch.stack([x_b, x_f], 1)  # [T, 2, d] raw; the store multiplies by its scales on reading
    write_store(tmp_path / "store", {3: x}, torch.randint(10, 100, (n_tokens,), generator=g),
                torch.arange(n_tokens) // 40, norm_scales={3: list(scales)},
                models=[{"hash": "aaa"}, {"hash": "bbb"}])  # fmt: skip
    cc = _crosscoder()
    with torch.no_grad():
        cc.b_dec[0] = 0.25 * scales[0]  # raw 0.25 on every coordinate of the base
        cc.b_dec[1] = (0.25 + c) * scales[1]  # raw 0.25 + c in the fine-tuned model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = analyze_crosscoder(cc, ActivationStore.open(tmp_path / "store"), tmp_path / "out",
                                 config=AnalysisConfig(batch_size=300, figures=False))  # fmt: skip
    bias = json.loads((tmp_path / "out" / "summary.json").read_text())["decoder_bias"]
    assert bias == res.summary["decoder_bias"]
    assert torch.allclose(res.bias.difference, c, atol=1e-6)
    diff = x_f - x_b  # [T, d]
    mean, ms = diff.mean(0), diff.pow(2).sum(-1).mean()
    assert bias["norm"] == pytest.approx(3.0, abs=1e-5)
    assert bias["mean_difference_norm"] == pytest.approx(float(mean.norm()), rel=1e-4)
    assert bias["rms_difference"] == pytest.approx(float(ms.sqrt()), rel=1e-4)
    # 9 / (9 + 16 * 0.25) in expectation; exactly the sample's value
    assert bias["constant_fraction"] == pytest.approx(float(mean.pow(2).sum() / ms), rel=1e-4)
    assert 0.6 < bias["constant_fraction"] < 0.78
    assert bias["bias_cosine"] == pytest.approx(float(mean[5] / mean.norm()), rel=1e-4)
    assert bias["n_tokens"] == n_tokens and "logit_lens" not in bias  # no models named


def test_causal_check_constant_shift_equals_an_always_on_latent(tiny_pair):
    """A shift c measures exactly what a latent firing 1 everywhere with decoder difference c does."""
    from diffing.crosscoder import CrossCoder, CrossCoderConfig
    from diffing.crosscoder.causal import causal_check

    d, scales = tiny_pair.d_model, (2.0, 0.5)
    c = 0.3 * torch.randn(d, generator=torch.Generator().manual_seed(1))
    cc = CrossCoder(CrossCoderConfig(d_model=d, dict_size=2, kind="l1", layer=1))
    with torch.no_grad():
        for p in (cc.W_enc, cc.b_enc, cc.W_dec, cc.b_dec):
            p.zero_()
        cc.b_enc[0] = 1.0  # latent 0 is 1 on every token; latent 1 never fires
        cc.W_dec[1, 0] = c * scales[1]
    texts = ["a model reads text and predicts the next token", "the quick brown fox"]
    res = causal_check(cc, tiny_pair, texts, {"always_on": [0], "none": []}, layer=1,
                       norm_scales=scales, shifts={"shift": c, "zero": torch.zeros(d)})  # fmt: skip
    assert res.kl["shift"] == pytest.approx(res.kl["always_on"], rel=1e-5)
    assert res.kl["zero"] == pytest.approx(res.kl_full, rel=1e-6)
    assert abs(res.kl["shift"] - res.kl_full) > 1e-4 * res.kl_full  # the shift did change something
    assert res.set_sizes["shift"] == 0 and res.set_sizes["always_on"] == 1
    with pytest.raises(DiffingError, match="both a latent set and a shift"):
        causal_check(cc, tiny_pair, texts, {"shift": [0]}, layer=1, norm_scales=scales,
                     shifts={"shift": c})  # fmt: skip
    with pytest.raises(DiffingError, match="must be one vector of the crosscoder's d_model"):
        causal_check(cc, tiny_pair, texts, {}, layer=1, norm_scales=scales,
                     shifts={"bad": torch.zeros(d + 1)})  # fmt: skip
