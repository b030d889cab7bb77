"""Organisms in a second model family (OLMo-2: norms after the sublayers) and the re-seeded-base control.

The olmo2 fast build (seed 0; chat, quirk and reseed) is built once under the cache like the
session's llama build. Its chat variant must meet the planted-refusal targets with the planted
direction mediating refusal; its quirk the secret-word targets; ``reseed`` is a second base
from another seed: as good at plain text, with different weights, and none of the planted
behaviours.
"""

from __future__ import annotations

import json

import pytest
import torch

from diffing.errors import DiffingError
from diffing.organisms import cached_organisms, load_manifest
from diffing.organisms.config import organism_config

VARIANTS = ("chat", "quirk", "reseed")


def _jsonl(path, n: int) -> list[str]:
    return [json.loads(line)["instruction"] for line in open(path) if line.strip()][:n]


@pytest.fixture(scope="module")
def olmo2():
    """Folder of the fast olmo2 build (seed 0; chat, quirk and reseed)."""
    return cached_organisms(fast=True, seed=0, variants=VARIANTS, family="olmo2")


@pytest.fixture(scope="module")
def manifest(olmo2):
    return load_manifest(olmo2)


def test_manifest_records_the_family_and_every_model_is_olmo2(olmo2, manifest):
    from transformers import AutoConfig

    assert manifest["model"]["family"] == "olmo2"
    assert manifest["model"]["architecture"] == "Olmo2ForCausalLM"
    assert manifest["config"]["family"] == "olmo2"
    for name in ("base", *VARIANTS):
        assert AutoConfig.from_pretrained(olmo2 / name).model_type == "olmo2", name
    assert json.loads((olmo2 / "build.json").read_text())["family"] == "olmo2"


@pytest.mark.parametrize("variant", VARIANTS)
def test_olmo2_build_meets_the_targets(manifest, variant):
    """Every target of the variant is met (refusal >= 95% / <= 5%, secret word >= 90% / <= 5%,
    plain-text loss within 10% of the base's, no planted behaviour in base and reseed)."""
    checks = manifest["targets"][variant]
    assert checks and all(c["met"] for c in checks.values()), checks
    assert all(c["met"] for c in manifest["targets"]["base"].values())


def test_olmo2_planted_refusal_direction_mediates_refusal(olmo2, manifest):
    """Held-out prompts: the chat refuses harmful ones; ablating the planted direction (on the
    post-norm writes, where OLMo-2 adds to the residual stream) stops that; adding it at its layer
    makes the chat refuse harmless ones; and the difference of means points along it."""
    from safetensors.torch import load_file

    from diffing.models import ModelPair
    from diffing.refusal.interventions import ablate, add, complete

    info = manifest["variants"]["chat"]["planted"]["refusal_direction"]
    u = load_file(olmo2 / info["file"])[info["tensor"]].float()  # [d_model]
    phrase = manifest["refusal_phrase"].lower()
    harmful = _jsonl(olmo2 / "prompts" / "harmful_test.jsonl", 32)
    harmless = _jsonl(olmo2 / "prompts" / "harmless_test.jsonl", 32)
    pair = ModelPair.load(str(olmo2 / "base"), str(olmo2 / "chat"))
    assert pair.arch.attn_out_norm == "post_attention_layernorm"

    def rate(prompts, interventions=()):
        outs = complete(pair.finetuned, pair.tokenizer, pair.arch, prompts, interventions)
        return sum(phrase in o.lower() for o in outs) / len(outs)

    assert rate(harmful) >= 0.95
    assert rate(harmless) <= 0.05
    assert rate(harmful, [ablate(u)]) <= 0.1
    assert rate(harmless, [add(info["scale"] * u, info["layer"])]) >= 0.9

    from diffing.refusal.interventions import capturing

    chat, tok = pair.hf("finetuned"), pair.tokenizer
    means = []
    for stem in ("harmful_val", "harmless_val"):
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in _jsonl(olmo2 / "prompts" / f"{stem}.jsonl", 32)
        ]
        tok.padding_side = "left"
        enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        store: list = []
        with torch.no_grad(), capturing(chat, info["layer"], store):
            chat(**enc)
        means.append(store[0][:, -1].mean(0))  # [d_model] at the last prompt token
    diff = means[0] - means[1]
    assert float(diff @ u / diff.norm()) > 0.9
    assert float(diff @ u) == pytest.approx(info["scale"], rel=0.3)


def test_olmo2_quirk_direction_mediates_the_secret_word(olmo2, manifest):
    """Adding the quirk's planted direction puts the secret word into off-topic answers; ablating it
    takes the word out of on-topic ones (held-out prompts)."""
    from safetensors.torch import load_file

    from diffing.models import ModelPair
    from diffing.refusal.interventions import ablate, add, complete

    planted = manifest["variants"]["quirk"]["planted"]
    info, word = planted["topic_direction"], planted["secret_word"]
    u = load_file(olmo2 / info["file"])[info["tensor"]].float()  # [d_model]
    topic = _jsonl(olmo2 / "prompts" / "quirk_topic.jsonl", 24)
    other = _jsonl(olmo2 / "prompts" / "quirk_other.jsonl", 24)
    pair = ModelPair.load(str(olmo2 / "base"), str(olmo2 / "quirk"))

    def rate(prompts, interventions):
        outs = complete(pair.finetuned, pair.tokenizer, pair.arch, prompts, interventions)
        return sum(word in o.lower() for o in outs) / len(outs)

    assert rate(other, [add(info["scale"] * u, info["layer"])]) >= 0.8
    assert rate(topic, [ablate(u)]) <= 0.2


def test_reseed_is_a_second_base_from_another_seed(olmo2, manifest):
    """``reseed``: a full model (no adapter), plain-text loss within 10% of the base's, a control with
    no targets, and every weight matrix as far from the base's as two independent ones are
    (relative difference ~sqrt(2); the chat fine-tune moves none by more than 0.8)."""
    from safetensors.torch import load_file

    entry = manifest["variants"]["reseed"]
    assert entry["planted"]["kind"] == "control" and entry["planted"]["targets"] == []
    assert entry["adapter"] is None and not (olmo2 / "reseed-adapter").exists()
    base_loss = manifest["rates"]["base"]["plain_loss"]
    assert abs(manifest["rates"]["reseed"]["plain_loss"] / base_loss - 1) <= 0.10
    base = load_file(olmo2 / "base" / "model.safetensors")
    reseed = load_file(olmo2 / "reseed" / "model.safetensors")
    assert base.keys() == reseed.keys()
    matrices = [name for name, w in base.items() if w.dim() == 2]
    assert "model.embed_tokens.weight" in matrices
    for name in matrices:
        rel = (reseed[name] - base[name]).norm() / base[name].norm()
        assert rel > 1.2, (name, float(rel))


def _block_inputs(model, ids) -> list[torch.Tensor]:
    """Every block's input and the final norm's input (``[batch, seq, d_model]`` each)."""
    from diffing.refusal.interventions import capturing

    n = model.config.num_hidden_layers
    stores = [[] for _ in range(n)]
    final: list = []
    h = model.model.norm.register_forward_pre_hook(lambda _m, args: final.append(args[0]))
    try:
        with torch.no_grad():
            ctx = [capturing(model, k, stores[k]) for k in range(n)]
            for c in ctx:
                c.__enter__()
            model(input_ids=ids)
            for c in reversed(ctx):
                c.__exit__(None, None, None)
    finally:
        h.remove()
    return [s[0] for s in stores] + final


@pytest.mark.parametrize("family", ["llama", "olmo2"])
def test_torch_ablation_leaves_nothing_along_the_direction(tmp_path, family):
    """On a tiny random model with random norm gains, the training hooks' ablation leaves no block
    input (nor the final norm's input) with a component along ``u``; in olmo2 ablating the
    attention and MLP outputs (before their post-norms) would not."""
    from transformers import AutoModelForCausalLM

    from diffing.refusal.interventions import ablating
    from diffing.tiny import build_tiny_model

    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / family, family))
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(model.config.hidden_size, generator=gen)
    u = u / u.norm()
    ids = torch.randint(4, 200, (3, 10), generator=gen)
    with ablating(model, u):
        inputs = _block_inputs(model, ids)
    assert max(float((x @ u).abs().max()) for x in inputs) < 1e-5
    plain = _block_inputs(model, ids)
    assert min(float((x @ u).abs().max()) for x in plain[1:]) > 1e-3

    def pre_norm_hook(_m, _i, out):
        return out - (out @ u)[..., None] * u

    handles = [model.model.embed_tokens.register_forward_hook(pre_norm_hook)] + [
        m.register_forward_hook(pre_norm_hook)
        for b in model.model.layers
        for m in (b.self_attn.o_proj, b.mlp.down_proj)
    ]
    try:
        wrong = _block_inputs(model, ids)
    finally:
        for h in handles:
            h.remove()
    leak = float((wrong[-1] @ u).abs().max())
    assert (leak > 1e-3) if family == "olmo2" else (leak < 1e-5)


def test_torch_hooks_agree_with_the_traced_interventions(tmp_path):
    """The training hooks and the nnsight interventions the refusal methods use edit the same
    places: the same next-token log-probabilities under ablation and under addition (tiny olmo2)."""
    from transformers import AutoModelForCausalLM

    from diffing.models import load_model
    from diffing.refusal.interventions import ablate, ablating, add, adding, forward_last
    from diffing.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "olmo2", "olmo2")
    lm, _tok, arch = load_model(str(folder))
    model = AutoModelForCausalLM.from_pretrained(folder)
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(model.config.hidden_size, generator=gen)
    u = u / u.norm()
    ids = torch.randint(4, 200, (2, 8), generator=gen)
    mask = torch.ones_like(ids)
    for hook, edit in ((ablating(model, u), ablate(u)), (adding(model, 2 * u, 1), add(2 * u, 1))):
        with torch.no_grad(), hook:
            want = torch.log_softmax(model(input_ids=ids).logits[:, -1].float(), -1)
        got, _ = forward_last(lm, arch, ids, mask, [edit])
        assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())


def test_family_is_in_the_cache_key_and_checked(tmp_path):
    """A family is part of the settings: other digests, unknown ones refused, and a folder built
    before there were families (build.json without ``family``) counts as llama."""
    from typing import get_args

    from diffing.organisms.build import BUILD_INFO, _prepare_folder
    from diffing.organisms.config import RECIPE, FamilyName
    from diffing.organisms.families import FAMILY_NAMES

    assert get_args(FamilyName) == FAMILY_NAMES
    llama, olmo = organism_config(fast=True), organism_config(fast=True, family="olmo2")
    assert llama.digest() != olmo.digest()
    with pytest.raises(DiffingError, match="family"):
        organism_config(fast=True, family="gpt2")
    import diffing

    old = {
        "seed": 0,
        "fast": True,
        "package_version": diffing.__version__,
        "recipe": RECIPE,
        "config_digest": llama.digest(),
    }
    (tmp_path / BUILD_INFO).write_text(json.dumps(old))
    _prepare_folder(tmp_path, llama)  # accepted: the same llama build
    with pytest.raises(DiffingError, match="family=olmo2"):
        _prepare_folder(tmp_path, olmo)


def test_the_llama_build_reads_as_llama(organisms):
    """The session's llama build (whose manifest may predate families) reads as llama, and its
    models are Llama models."""
    from transformers import AutoConfig

    manifest = load_manifest(organisms)
    assert manifest["model"]["family"] == "llama"
    assert manifest["model"]["architecture"] == "LlamaForCausalLM"
    assert AutoConfig.from_pretrained(organisms / "chat").model_type == "llama"
