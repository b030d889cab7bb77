"""ModelPair loading: one code path for hub ids and folders, PEFT adapters, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from diffing.errors import DiffingError
from diffing.models import ModelPair
from diffing.tiny import build_tiny_model, tiny_tokenizer
from diffing.tracing import trace_pair

TEXTS = ["the quick brown fox jumps over", [{"role": "user", "content": "tell me"}]]


def _fake_hub_cache(cache, repo_id: str, folder) -> None:
    """Lay a model folder out as the Hugging Face hub cache does, so the hub-id path finds it offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_hub_id_and_folder_share_one_loader(tmp_path, tiny_pair_dirs, monkeypatch):
    base, ft = tiny_pair_dirs
    # 1. the loader sends hub ids and folders to the same from_pretrained call
    from transformers import AutoModelForCausalLM

    calls = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, ref, *a, **k):
        calls.append((str(ref), k.get("use_safetensors")))
        return real(cls, str(base) if ref == "org/tiny" else ref, *a, **k)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    monkeypatch.setattr("diffing.models.load_tokenizer", lambda ref, **k: tiny_tokenizer_from(base))
    ModelPair.load("org/tiny", str(ft))
    assert [c[0] for c in calls] == ["org/tiny", str(ft)] and all(c[1] is True for c in calls)

    # 2. end to end: a real hub id resolved offline from a hub cache gives the folder's activations
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "tiny-org/tiny-llama", base)
    script = textwrap.dedent(f"""
        import torch
        from diffing.models import ModelPair
        from diffing.tracing import trace_pair
        a = ModelPair.load("tiny-org/tiny-llama", {str(ft)!r})
        b = ModelPair.load({str(base)!r}, {str(ft)!r})
        x, y = trace_pair(a, ["the quick brown fox"], [1]), trace_pair(b, ["the quick brown fox"], [1])
        assert torch.equal(x.base[1], y.base[1]), "hub-id and folder activations differ"
        print("OK", a.base_ref)
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK tiny-org/tiny-llama" in out.stdout


def tiny_tokenizer_from(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _make_adapter(base, out, seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"])
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)  # LoRA B starts at zero; make the adapter do something
    peft_model.save_pretrained(str(out))
    return peft_model


def test_peft_adapter_pair_matches_unmerged(tmp_path, tiny_pair_dirs):
    base, _ = tiny_pair_dirs
    peft_model = _make_adapter(base, tmp_path / "adapter")
    pair = ModelPair.load(str(base), str(tmp_path / "adapter"))
    assert pair.adapter is not None and len(pair.adapter.factors) == 2 * 2  # 2 layers x 2 modules
    acts = trace_pair(pair, TEXTS, [0, 1])
    with torch.no_grad():
        hs = peft_model.eval()(
            input_ids=acts.input_ids, attention_mask=acts.attention_mask, output_hidden_states=True
        )
    real = acts.attention_mask.bool()
    torch.testing.assert_close(
        acts.finetuned[0][real], hs.hidden_states[1][real], atol=1e-5, rtol=0
    )
    assert (acts.finetuned[0] - acts.base[0]).abs().max() > 1e-3
    # the adapter's delta is exact: merged minus base weights
    name = "model.layers.0.mlp.down_proj"
    merged = dict(pair.hf("finetuned").named_parameters())[name + ".weight"]
    orig = dict(pair.hf("base").named_parameters())[name + ".weight"]
    torch.testing.assert_close(merged - orig, pair.adapter.delta(name), atol=1e-6, rtol=0)


def test_chat_template_from_finetuned_is_reported(tmp_path):
    base = build_tiny_model(tmp_path / "b", tokenizer=tiny_tokenizer(chat_template=None))
    ft = build_tiny_model(tmp_path / "f", seed=1)
    pair = ModelPair.load(str(base), str(ft))
    assert pair.tokenizer.chat_template and any(
        "base tokenizer has no chat template" in n for n in pair.notes
    )


@pytest.fixture()
def bad_inputs(tmp_path, tiny_pair_dirs):
    base, ft = tiny_pair_dirs
    tok = tiny_tokenizer()
    tok.add_tokens(["<extra-token>"])
    other_tok = build_tiny_model(tmp_path / "tok", tokenizer=tok)
    wide = build_tiny_model(tmp_path / "wide", hidden=64)
    deep = build_tiny_model(tmp_path / "deep", layers=3)
    gpt2 = build_tiny_model(tmp_path / "gpt2", "gpt2")
    (tmp_path / "noconfig").mkdir()
    noweights = tmp_path / "noweights"
    shutil.copytree(base, noweights)
    for f in noweights.glob("*.safetensors"):
        f.unlink()
    pickled = tmp_path / "pickled"
    shutil.copytree(noweights, pickled)
    from transformers import AutoModelForCausalLM

    torch.save(
        AutoModelForCausalLM.from_pretrained(str(base)).state_dict(), pickled / "pytorch_model.bin"
    )
    return dict(
        base=base,
        ft=ft,
        other_tok=other_tok,
        wide=wide,
        deep=deep,
        gpt2=gpt2,
        tmp=tmp_path,
        noweights=noweights,
        pickled=pickled,
    )


@pytest.mark.parametrize(
    "finetuned, message",
    [
        (
            "other_tok",
            r"tokenizers of .* differ \(363 vs 364 tokens.*<extra-token>.*share one vocabulary",
        ),
        ("wide", r"differ in hidden size \(.*32.*64\)"),
        ("deep", r"differ in layer count"),
        ("gpt2", r"differ in architecture \(llama vs gpt2\)"),
        ("missing", r"path '.*missing' does not exist"),
        ("noconfig", r"has no config.json"),
        ("noweights", r"has no weights"),
        ("pickled", r"only pickle weights \(pytorch_model.bin\).*allow_pickle=True"),
    ],
)
def test_bad_pairs_give_clear_errors(bad_inputs, finetuned, message):
    ref = bad_inputs.get(finetuned, bad_inputs["tmp"] / finetuned)
    with pytest.raises(DiffingError, match=message):
        ModelPair.load(str(bad_inputs["base"]), str(ref))


def test_pickle_opt_in_loads_with_weights_only(bad_inputs):
    pair = ModelPair.load(str(bad_inputs["base"]), str(bad_inputs["pickled"]), allow_pickle=True)
    acts = trace_pair(pair, TEXTS[:1], [1])
    assert torch.equal(acts.base[1], acts.finetuned[1])  # same weights, pickled copy


def test_layers_out_of_range(tiny_pair):
    with pytest.raises(DiffingError, match=r"layer 5 is out of range: the model has layers 0..1"):
        trace_pair(tiny_pair, TEXTS, [5])
    assert tiny_pair.check_layers([-1, 0, 1]) == [0, 1]


def test_perturbed_module_only_changes_later_layers(tiny_pair):
    acts = trace_pair(tiny_pair, TEXTS, [0, 1])
    assert torch.equal(acts.base[0], acts.finetuned[0])
    assert (acts.base[1] - acts.finetuned[1]).abs().max() > 1e-3
    info = json.loads(
        json.dumps(__import__("diffing.inspection").inspection.inspect_pair(tiny_pair))
    )
    assert info["top_changes"][0]["name"] == "model.layers.1.mlp.down_proj.weight"
    assert info["changed_parameters"] == 1


def test_remote_pair_loads_configs_only(tmp_path, tiny_pair_dirs):
    """``remote=True`` (NDIF): hub ids resolve to config-only models; no weights are loaded here."""
    base, ft = tiny_pair_dirs
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "tiny-org/base", base)
    _fake_hub_cache(cache, "tiny-org/ft", ft)
    script = textwrap.dedent("""
        from diffing.models import ModelPair
        p = ModelPair.load("tiny-org/base", "tiny-org/ft", remote=True)
        devices = {t.device.type for w in ("base", "finetuned") for t in p.hf(w).parameters()}
        assert p.remote is True and devices == {"meta"}, devices
        print("OK", p.d_model, p.n_layers, p.check_layers([-1]))
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = json.loads((base / "config.json").read_text())
    assert f"OK {cfg['hidden_size']} {cfg['num_hidden_layers']}" in out.stdout
