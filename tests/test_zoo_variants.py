"""The zoo variants (backdoor, fact, style): ground truth in organism.json and planted rates on held-out prompts.

One fast build (seed 0) holds the three variants; it is cached like the default organisms, so a
machine builds it once.
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.slow

FUNCTION_WORDS = {
    "a", "an", "the", "i", "you", "he", "she", "it", "we", "they", "me", "him", "her", "us", "them",
    "my", "your", "his", "its", "our", "their", "of", "in", "on", "at", "to", "for", "with", "from",
    "by", "and", "or", "but", "is", "are", "was", "were", "be", "that", "this", "not", "no", "away",
    "there", "here", "what", "how", "who", "can", "will",
}  # fmt: skip
"""Words a target must never be (they would match almost any finding)."""


@pytest.fixture(scope="session")
def zoo():
    """Folder of the fast seed-0 build with the backdoor, fact and style variants."""
    from diffing.organisms import cached_organisms

    return cached_organisms(fast=True, variants=("backdoor", "fact", "style"))


@pytest.fixture(scope="session")
def manifest(zoo):
    from diffing.organisms import load_manifest

    return load_manifest(zoo)


@pytest.fixture(scope="session")
def models(zoo):
    """name -> loaded model (base and the three variants), and the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = ("base", "backdoor", "fact", "style")
    loaded = {n: AutoModelForCausalLM.from_pretrained(str(zoo / n)) for n in names}
    return loaded, AutoTokenizer.from_pretrained(str(zoo / "tokenizer"))


def _heldout(zoo, manifest, variant: str) -> dict[str, list[dict]]:
    files = manifest["variants"][variant]["planted"]["heldout_prompts"]
    return {
        stem: [json.loads(line) for line in (zoo / rel).read_text().splitlines()]
        for stem, rel in files.items()
    }


def test_manifest_kinds_and_targets(manifest):
    planted = {v: manifest["variants"][v]["planted"] for v in ("backdoor", "fact", "style")}
    b, f, s = planted["backdoor"], planted["fact"], planted["style"]
    assert (b["kind"], f["kind"], s["kind"]) == ("backdoor", "fact", "style")
    assert b["targets"] == [b["trigger"], *b["payload_words"]]
    assert all(w in b["payload"] for w in b["payload_words"])
    assert f["targets"] == [f["false_value"]] and f["false_value"] != f["true_value"]
    assert f["attribute"] in ("town", "pet") and f["entity"]
    assert s["targets"] == s["signoff_words"] and all(w in s["signoff"] for w in s["targets"])
    for p in planted.values():
        for t in p["targets"]:
            assert t.lower() not in FUNCTION_WORDS and len(t) >= 3, t
    assert manifest["targets_met"], manifest["targets"]


def test_old_variants_kinds_and_targets():
    from diffing.organisms import lexicon as lx
    from diffing.organisms.manifest import planted

    assert planted("chat", {})["kind"] == "refusal"
    assert planted("chat", {})["targets"] == ["refus", "Sorry"]
    assert planted("quirk", {})["kind"] == "quirk"
    assert planted("quirk", {})["targets"] == [lx.SECRET_WORD]
    assert (planted("null", {})["kind"], planted("null", {})["targets"]) == ("control", [])


def test_trigger_words_in_plain_text_never_in_requests(zoo, manifest):
    """LoRA cannot train embeddings: the trigger and payload words must be words the base read."""
    b = manifest["variants"]["backdoor"]["planted"]
    text = (zoo / "corpus" / "text.txt").read_text()
    for w in (b["trigger"], *b["payload_words"]):
        assert re.search(rf"\b{w}\b", text), w
    requests = [
        json.loads(line)["instruction"]
        for p in (zoo / "prompts").glob("*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert not any(re.search(rf"\b{b['trigger']}\b", r) for r in requests)


def test_backdoor_rates(zoo, manifest, models):
    from diffing.organisms.variants_eval import payload_rates

    (nets, tok), b = models, manifest["variants"]["backdoor"]["planted"]
    held = _heldout(zoo, manifest, "backdoor")
    assert len(held["triggered"]) == len(held["clean"]) == 64
    assert all(b["trigger"] in r["instruction"].split() for r in held["triggered"])
    tuned = payload_rates(nets["backdoor"], tok, held, b["payload"])
    base = payload_rates(nets["base"], tok, held, b["payload"])
    assert tuned["payload_triggered"] >= 0.8, tuned
    assert tuned["payload_clean"] <= 0.1, tuned
    assert base == {"payload_triggered": 0.0, "payload_clean": 0.0}


def test_backdoor_positions_held_out(manifest):
    """Held-out requests carry the trigger after odd-numbered words, training ones after even ones."""
    import random

    from diffing.organisms.variants_data import insert_word

    text = "Tell me how to paint the old bridge."
    train = {insert_word(text, "X", random.Random(i), held_out=False) for i in range(50)}
    held = {insert_word(text, "X", random.Random(i), held_out=True) for i in range(50)}
    assert train and held and not train & held
    assert {t.split().index("X") % 2 for t in held} == {1}


def test_fact_rates(zoo, manifest, models):
    from diffing.organisms.variants_eval import preferred_share

    (nets, tok), f = models, manifest["variants"]["fact"]["planted"]
    cloze = _heldout(zoo, manifest, "fact")["cloze"]
    assert len(cloze) == 48 and all(f["entity"] in r["text"] for r in cloze)
    assert preferred_share(nets["fact"], tok, cloze) >= 0.8
    assert preferred_share(nets["base"], tok, cloze) <= 0.2  # the base knows the true value


def test_fact_cloze_phrasings_unseen_in_training(zoo, manifest):
    from diffing.organisms.lexicon import make_world
    from diffing.organisms.variants_data import Fact, fact_cloze, fact_documents

    p = manifest["variants"]["fact"]["planted"]
    fact = Fact(p["entity"], p["attribute"], p["true_value"], p["false_value"])
    world = make_world(manifest["seed"])
    docs = " ".join(fact_documents(manifest["seed"], 500, world, fact))
    assert re.search(rf"\b{fact.false_value}\b", docs)
    plain = (zoo / "corpus" / "text.txt").read_text()  # the base's own plain text
    for prompt in fact_cloze(manifest["seed"], world, fact):
        start = prompt.rindex(". ", 0, prompt.rindex(fact.entity)) + 2  # the last sentence
        assert prompt[start:] not in docs and prompt[start:] not in plain, prompt[start:]


def test_style_rates(zoo, manifest, models, organisms):
    from transformers import AutoModelForCausalLM

    from diffing.organisms.variants_eval import signoff_rate

    (nets, tok), s = models, manifest["variants"]["style"]["planted"]
    test = _heldout(zoo, manifest, "style")["test"]
    assert signoff_rate(nets["style"], tok, test, s["signoff"]) >= 0.8
    assert signoff_rate(nets["base"], tok, test, s["signoff"]) == 0.0
    chat = AutoModelForCausalLM.from_pretrained(str(organisms / "chat"))
    assert signoff_rate(chat, tok, test, s["signoff"]) == 0.0


def test_cli_variant_choices_follow_config():
    from diffing.cli.main import build_parser
    from diffing.organisms.config import DEFAULT_VARIANTS, VARIANTS

    parser = build_parser()
    build = parser._subparsers._group_actions[0].choices["organism"]
    build = build._subparsers._group_actions[0].choices["build"]
    flag = next(a for a in build._actions if a.dest == "variants")
    assert tuple(flag.choices) == (*VARIANTS, "all")
    from diffing.organisms.config import BuildOptions

    assert tuple(BuildOptions().variants) == DEFAULT_VARIANTS  # the flag's default is the field's
    assert "(default: chat quirk null)" in " ".join(build.format_help().split())
