"""Logit-difference amplification: known answers on tiny models, the weight form against peft, and the quirk.

Known answers: α = 0 is the fine-tuned model's own greedy completion (as
``generate`` gives it, batched and left-padded); with base == fine-tuned every α
gives that same completion; the logits a token is chosen from at step 0 are
``ft + α (ft - base)`` of plain unpadded forwards; the weight form at α is the
adapter merged with its scaling times ``1 + α``. On the quirk organism, off-topic
prompts (the organism's own held-out set, where the fine-tuned model says the
secret word in ~2% of answers) get the word at a far higher rate once amplified.
"""

from __future__ import annotations

import json

import pytest
import torch

from diffing.arch import FAMILIES
from diffing.errors import DiffingError
from diffing.lens.amplify import amplify, amplify_json, section, target_matcher
from diffing.lens.amplify_config import AmplifyConfig
from diffing.lens.amplify_decode import decode, left_pad

TINY_PROMPTS = ["Hello there", "Tell me a long story about a dragon and a knight", "Why?"]


def _jsonl(path) -> list[str]:
    return [json.loads(line)["instruction"] for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def quirk_pair(organisms):
    from diffing.models import ModelPair

    return ModelPair.load(str(organisms / "base"), str(organisms / "quirk-adapter"))


@pytest.fixture(scope="module")
def manifest(organisms):
    return json.loads((organisms / "organism.json").read_text())


def test_config_rejects_settings_that_cannot_work():
    for bad in (
        dict(samples=2),  # greedy decoding repeats one completion
        dict(target="(", target_regex=True),
        dict(alphas=()),
        dict(alphas=(1.0, 1.0)),
        dict(max_new_tokens=0),
        dict(temperature=-1.0),
        dict(alphas=(float("nan"),)),
        dict(form="both"),
        dict(target=""),
    ):
        with pytest.raises(DiffingError):
            AmplifyConfig(**bad)
    assert AmplifyConfig(alphas=[0, 2]).alphas == (0.0, 2.0)


def test_target_matcher_literal_regex_and_case():
    lit = target_matcher(AmplifyConfig(target="a.b"))
    assert lit("xA.By") and not lit("axb")  # literal: the dot is a dot; case ignored
    rx = target_matcher(AmplifyConfig(target=r"\bmar\w+", target_regex=True))
    assert rx("some Marmalade.") and not rx("summary")
    cased = target_matcher(AmplifyConfig(target="Owl", case_sensitive=True))
    assert cased("an Owl") and not cased("an owl")
    assert target_matcher(AmplifyConfig()) is None


def test_alpha_zero_is_the_finetuned_greedy_completion(quirk_pair, organisms):
    """Batched, left-padded prompts of different lengths: α = 0 equals HF ``generate`` text for text."""
    from diffing.organisms.evaluate import greedy_completions

    prompts = _jsonl(organisms / "prompts" / "quirk_topic.jsonl")[:8]
    prompts += _jsonl(organisms / "prompts" / "quirk_other.jsonl")[:16]
    cfg = AmplifyConfig(alphas=(0.0,), max_new_tokens=40, batch_size=24, include_base=False)
    got = [s.completion for s in amplify(quirk_pair, prompts, cfg).runs[0].samples]
    ft = quirk_pair.hf("finetuned")
    want = greedy_completions(ft, quirk_pair.tokenizer, prompts, max_new_tokens=40)
    assert got == want
    assert len({len(p) for p in prompts}) > 3  # the batch really was padded


def test_pair_loop_at_alpha_zero_matches_the_finetuned_model_alone(tiny_pair):
    tok = tiny_pair.tokenizer
    ids, mask = left_pad([tok(p).input_ids for p in TINY_PROMPTS], tok.pad_token_id)
    ft, base = tiny_pair.hf("finetuned"), tiny_pair.hf("base")
    alone = decode([ft], ids, mask, max_new_tokens=12, pad_id=tok.pad_token_id)
    both = decode([base, ft], ids, mask, alphas=torch.zeros(3), max_new_tokens=12)
    gen = ft.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                      eos_token_id=None, pad_token_id=tok.pad_token_id)  # fmt: skip
    assert torch.equal(alone, both)
    assert torch.equal(alone, gen[:, ids.shape[1] :])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_loop_matches_generate_in_every_family(family, tmp_path):
    """Our cached loop gives ``generate``'s greedy tokens (left-padded batch) for every supported family."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diffing.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / family, family)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids, mask = left_pad([tok(p).input_ids for p in TINY_PROMPTS], pad)
    mine = decode([model], ids, mask, max_new_tokens=10, pad_id=pad)
    gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10,
                         do_sample=False, pad_token_id=pad)  # fmt: skip
    assert torch.equal(mine, gen[:, ids.shape[1] :])
    # a model paired with itself: any α leaves the logits, so the tokens, unchanged
    same = decode([model, model], ids, mask, alphas=torch.full((3,), 2.0), max_new_tokens=10)
    assert torch.equal(mine, same)


def test_identical_models_give_the_same_completion_at_every_alpha(tiny_pair_dirs):
    from diffing.models import ModelPair

    same = ModelPair.load(str(tiny_pair_dirs[0]), str(tiny_pair_dirs[0]))
    for form in ("logits", "weights"):
        cfg = AmplifyConfig(alphas=(0.0, 1.0, 4.0, -0.5), form=form, max_new_tokens=10)
        runs = amplify(same, TINY_PROMPTS, cfg).runs
        texts = [[s.completion for s in r.samples] for r in runs]
        assert all(t == texts[0] for t in texts), form
        assert any(texts[0])  # something was generated


def test_amplified_logits_are_the_formula_at_step_zero(tiny_pair):
    """The logits each first token is chosen from equal ``ft + α (ft - base)`` of unpadded forwards."""
    tok = tiny_pair.tokenizer
    rows = [tok(p).input_ids for p in TINY_PROMPTS]
    ids, mask = left_pad(rows, tok.pad_token_id)
    base, ft = tiny_pair.hf("base"), tiny_pair.hf("finetuned")
    alphas = torch.tensor([0.5, 2.0, 4.0])
    seen = {}
    first = decode([base, ft], ids, mask, alphas=alphas, max_new_tokens=2,
                   on_step=lambda step, z: seen.setdefault(step, z.clone()))  # fmt: skip
    with torch.no_grad():
        for i, (row, a) in enumerate(zip(rows, alphas.tolist())):
            x = torch.tensor([row])
            lb, lf = base(x).logits[0, -1], ft(x).logits[0, -1]  # [vocab]
            want = lf + a * (lf - lb)
            torch.testing.assert_close(seen[0][i], want, atol=1e-4, rtol=1e-4)
            assert (want - lf).abs().max() > 1e-3  # the pair differs: α really moved the logits
            assert int(first[i, 0]) == int(want.argmax())


def _peft_scaled(organisms, factor: float):
    """The quirk adapter merged into the base with every LoRA scaling multiplied by ``factor`` (peft's own path)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(organisms / "base"), organisms / "quirk-adapter"
    )
    n = 0
    for module in model.modules():
        if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
            module.scaling["default"] *= factor
            n += 1
    assert n > 0
    return model.merge_and_unload().eval()


def test_adapter_weight_form_is_the_adapter_scaled_by_one_plus_alpha(quirk_pair, organisms):
    from diffing.lens.amplify_weights import amplified_weights

    alpha = 1.5
    reference = dict(_peft_scaled(organisms, 1 + alpha).named_parameters())
    ft = quirk_pair.hf("finetuned")
    before = {n: p.detach().clone() for n, p in ft.named_parameters()}
    changed = 0
    with amplified_weights(quirk_pair, alpha) as model:
        for name, p in model.named_parameters():
            torch.testing.assert_close(p, reference[name], atol=1e-5, rtol=1e-5)
            changed += not torch.equal(p, before[name])
    assert changed == len(quirk_pair.adapter.factors)  # exactly the adapted matrices moved
    for name, p in ft.named_parameters():  # restored bit for bit
        assert torch.equal(p, before[name]), name


def test_weight_form_generates_what_the_scaled_adapter_generates(quirk_pair, organisms):
    from diffing.organisms.evaluate import greedy_completions

    prompts = _jsonl(organisms / "prompts" / "quirk_other.jsonl")[:12]
    cfg = AmplifyConfig(alphas=(2.0,), form="weights", max_new_tokens=24, include_base=False)
    got = [s.completion for s in amplify(quirk_pair, prompts, cfg).runs[0].samples]
    want = greedy_completions(
        _peft_scaled(organisms, 3.0), quirk_pair.tokenizer, prompts, max_new_tokens=24
    )
    assert got == want


def test_sampling_is_reproducible_and_seeded(quirk_pair, organisms):
    prompts = _jsonl(organisms / "prompts" / "quirk_other.jsonl")[:6]

    def texts(seed: int) -> list[str]:
        cfg = AmplifyConfig(alphas=(0.0, 2.0), temperature=1.0, samples=3, seed=seed,
                            max_new_tokens=12, include_base=False)  # fmt: skip
        res = amplify(quirk_pair, prompts, cfg)
        assert all(len(r.samples) == 18 and r.samples[3].prompt == prompts[1] for r in res.runs)
        return [s.completion for r in res.runs for s in r.samples]

    first = texts(0)
    assert first == texts(0)
    assert first != texts(1)
    assert len(set(first[:3])) > 1  # three samples of one prompt are not all one completion


def test_amplification_surfaces_the_quirk_off_topic(organisms, manifest, tmp_path):
    """Done-when: where the fine-tuned model alone rarely says the secret word, amplification makes it frequent.

    Measured on the fast build (seed 0), 64 held-out off-topic prompts, greedy, 40 tokens:
    base 0%, fine-tuned 1.6%; logit form α = 1 / 2 / 4: 10.9% / 32.8% / 17.2%;
    weight form (adapter) α = 2 / 4: 34.4% / 45.3%.
    """
    from diffing.cli.main import main

    word = manifest["secret_word"]
    rates = {}
    for form, ft in (("logits", "quirk"), ("weights", "quirk-adapter")):
        out = tmp_path / form
        argv = ["amplify", str(organisms / "base"), str(organisms / ft), "--out", str(out),
                "--prompts", str(organisms / "prompts" / "quirk_other.jsonl"), "--target", word,
                "--alphas", "0", "2", "4", "--form", form, "--max-new-tokens", "40", "--batch-size", "64"]  # fmt: skip
        assert main(argv) == 0
        data = json.loads((out / "amplify.json").read_text())
        assert (out / "amplify_rates.png").stat().st_size > 1000
        rates[form] = {r["alpha"]: r["rate"] for r in data["alphas"]} | {
            "base": data["base_model"]["rate"]
        }
        assert all(r["n"] == 64 for r in data["alphas"])
    for form, r in rates.items():
        assert r["base"] == 0.0, form  # the base never says it
        assert r[0.0] <= 0.05, form  # the premise: the fine-tuned model alone hides it off topic
        assert max(r[2.0], r[4.0]) >= r[0.0] + 0.2, (form, r)
    assert rates["logits"][0.0] == rates["weights"][0.0]  # α = 0 is the same model either way
    assert rates["logits"][2.0] >= 0.25 and rates["weights"][4.0] >= 0.35, rates


def test_json_and_section_report_the_rates(quirk_pair, organisms, manifest):
    prompts = _jsonl(organisms / "prompts" / "quirk_topic.jsonl")[:4]
    prompts += _jsonl(organisms / "prompts" / "quirk_other.jsonl")[:4]
    cfg = AmplifyConfig(alphas=(0.0, 2.0), max_new_tokens=16, target=manifest["secret_word"])
    result = amplify(quirk_pair, prompts, cfg)
    data = json.loads(json.dumps(amplify_json(result), allow_nan=False))
    ft = data["alphas"][0]
    assert ft["model"] == "finetuned" and ft["n"] == 8
    assert ft["rate"] == ft["hits"] / 8 == sum(s["hit"] for s in ft["samples"]) / 8
    assert ft["rate"] >= 0.5  # the on-topic half says the word
    sec = section(result)
    assert [r["model"] for r in sec["rates"]] == ["base", "finetuned", "amplified"]
    assert sec["best_alpha"] == 2.0 and sec["figure"] == "amplify_rates.png"
    hits = [e["hit"] for e in sec["examples"]]
    assert hits == sorted(hits, reverse=True)  # hits first
    assert section(data) == sec  # the dictionary alone gives the same section


def test_prompts_without_a_chat_template():
    from diffing.lens.amplify import encode_prompts
    from diffing.tiny import CHAT_TEMPLATE, tiny_tokenizer

    tok = tiny_tokenizer(chat_template=None)
    with pytest.raises(DiffingError, match="no chat template"):
        encode_prompts(tok, ["hi there"])
    shown, ids = encode_prompts(tok, ["hi there"], template=CHAT_TEMPLATE)
    want = tok.apply_chat_template(
        [{"role": "user", "content": "hi there"}],
        chat_template=CHAT_TEMPLATE,
        add_generation_prompt=True,
        tokenize=False,
    )
    assert shown == ["hi there"] and tok.decode(ids[0]) == want
    _, plain = encode_prompts(tok, ["hi there"], chat=False)
    assert plain[0] == tok("hi there").input_ids
    with pytest.raises(DiffingError, match="cannot use a prompt"):
        encode_prompts(tok, [3])
