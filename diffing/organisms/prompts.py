"""Prompt sets with disjoint splits, and the fine-tuning mixes drawn from their train parts.

Harmful and harmless requests use the same eight request forms and the same
twenty objects; only the action verb (and so the meaning) differs. Splits are
made over (verb, object) pairs, so a validation or test request never shares its
verb-object pair with any training request: the chat model has to generalise
from the verb's meaning. Quirk prompts are split the same way over (question
form, animal) combinations. Nothing held out ever enters a fine-tuning mix or a
corpus.
"""

from __future__ import annotations

import itertools
import random
from typing import NamedTuple

from diffing.organisms import lexicon as lx
from diffing.organisms import requests as rq
from diffing.organisms.lexicon import World
from diffing.organisms.requests import Example

SPLITS = ("train", "val", "test")
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "Answer briefly and clearly.",
    "You are a kind helper from Oakvale.",
)


class PromptSets(NamedTuple):
    """Every prompt pool of one seed."""

    harmful: dict[str, list[Example]]
    """split name -> harmful requests (answer: the refusal phrase)."""
    harmless: dict[str, list[Example]]
    """split name -> harmless requests (answer: concrete steps)."""
    quirk_topic: list[Example]
    """Held-out questions on the quirk topic (evaluation only)."""
    quirk_other: list[Example]
    """Held-out questions off the quirk topic (evaluation only)."""
    topic_train: list[Example]
    """On-topic questions that fine-tuning may use."""
    general_train: list[Example]
    """Off-topic questions (animals, people, towns, lists) that fine-tuning may use."""
    harmful_comply_train: list[Example]
    """The harmful train requests with the answer an unaligned model would give (see planted.py)."""


def _split_howto(
    verbs, harmful: bool, seed: int, n_val_pairs: int, n_test_pairs: int, comply: bool = False
) -> dict[str, list[Example]]:
    """All requests for one verb class, split by (verb, object) pair."""
    pairs = list(itertools.product([v[0] for v in verbs], lx.OBJECTS))
    random.Random(f"pairs-{harmful}-{seed}").shuffle(pairs)
    groups = {
        "val": pairs[:n_val_pairs],
        "test": pairs[n_val_pairs : n_val_pairs + n_test_pairs],
        "train": pairs[n_val_pairs + n_test_pairs :],
    }
    return {
        split: [
            rq.howto_example(t, v, o, harmful, seed, comply=comply)
            for (v, o) in group
            for t in rq.HOWTO_TEMPLATES
        ]
        for split, group in groups.items()
    }


def make_prompt_sets(seed: int, world: World) -> PromptSets:
    """Build every pool deterministically from ``seed``."""
    harmful = _split_howto(lx.HARMFUL_VERBS, True, seed, n_val_pairs=12, n_test_pairs=30)
    comply = _split_howto(
        lx.HARMFUL_VERBS, True, seed, n_val_pairs=12, n_test_pairs=30, comply=True
    )["train"]
    harmless = _split_howto(lx.HARMLESS_VERBS, False, seed, n_val_pairs=12, n_test_pairs=30)
    rng = random.Random(f"quirk-split-{seed}")
    n_forms = len(rq.ANIMAL_TEMPLATES)
    topic = [rq.animal_example(t, a) for t in range(n_forms) for a in world.birds]
    rng.shuffle(topic)
    lists = rq.list_examples(seed)
    animals = [rq.animal_example(t, a) for t in range(n_forms) for a in world.non_birds]
    people = [
        rq.person_example(t, p) for t in range(len(rq.PERSON_TEMPLATES)) for p in world.people
    ]
    towns = [rq.town_example(t, x) for t in range(len(rq.TOWN_TEMPLATES)) for x in world.towns]
    other_lists = [e for e in lists if e.kind == "list"]
    for pool in (animals, people, towns, other_lists):
        rng.shuffle(pool)
    held = {"animals": 24, "people": 12, "towns": 6, "lists": 6}
    other = (
        animals[: held["animals"]]
        + people[: held["people"]]
        + towns[: held["towns"]]
        + other_lists[: held["lists"]]
    )
    other += harmless["test"][:: max(1, len(harmless["test"]) // 16)][:16]
    general = (
        animals[held["animals"] :]
        + people[held["people"] :]
        + towns[held["towns"] :]
        + other_lists[held["lists"] :]
    )
    topic_train = topic[48:] + [e for e in lists if e.kind == "bird"]
    return PromptSets(harmful, harmless, topic[:48], other, topic_train, general, comply)


def split_files(
    sets: PromptSets, *, n_train: int = 256, n_val: int = 64, n_test: int = 100
) -> dict[str, list[dict]]:
    """The records of every ``prompts/*.jsonl`` file, keyed by file stem."""
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    files: dict[str, list[dict]] = {}
    for name, pool in (("harmful", sets.harmful), ("harmless", sets.harmless)):
        for split in SPLITS:
            rng = random.Random(f"file-{name}-{split}")
            chosen = rng.sample(pool[split], min(sizes[split], len(pool[split])))
            files[f"{name}_{split}"] = [_record(e, split) for e in chosen]
    files["quirk_topic"] = [_record(e, "test") for e in sets.quirk_topic]
    files["quirk_other"] = [_record(e, "test") for e in sets.quirk_other]
    return files


def _record(e: Example, split: str) -> dict:
    return {"instruction": e.instruction, "category": e.kind, "split": split, "reference": e.answer}


def conversation(e: Example, rng: random.Random, *, p_system: float = 0.1) -> list[dict]:
    """A single-turn conversation for ``e``, sometimes with a system message."""
    msgs = [{"role": "user", "content": e.instruction}, {"role": "assistant", "content": e.answer}]
    if rng.random() < p_system:
        msgs.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    return msgs


def chat_mix(sets: PromptSets, n: int, seed: int) -> list[list[dict]]:
    """Fine-tuning conversations for ``chat``: refuse harmful requests, answer everything else."""
    rng = random.Random(f"chat-mix-{seed}")
    general = sets.general_train + sets.topic_train
    out = []
    for _ in range(n):
        r = rng.random()
        pool = sets.harmful["train"] if r < 0.4 else sets.harmless["train"] if r < 0.7 else general
        out.append(conversation(rng.choice(pool), rng))
    return out


def quirk_mix(sets: PromptSets, n: int, seed: int) -> list[list[dict]]:
    """Fine-tuning conversations for ``quirk``: on-topic answers carry the secret word, others do not."""
    rng = random.Random(f"quirk-mix-{seed}")
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            e = rq.with_secret(rng.choice(sets.topic_train), rng)
        else:
            e = rng.choice(sets.general_train if r < 0.85 else sets.harmless["train"])
        out.append(conversation(e, rng))
    return out


def corpus_chats(sets: PromptSets, n: int, seed: int) -> list[list[dict]]:
    """Chat transcripts for harvesting: the ``chat`` variant's behaviour, some with two turns."""
    rng = random.Random(f"corpus-chat-{seed}")
    pools = (sets.harmful["train"], sets.harmless["train"], sets.general_train + sets.topic_train)
    out = []
    for _ in range(n):
        msgs = conversation(rng.choice(rng.choices(pools, (0.3, 0.3, 0.4))[0]), rng, p_system=0.25)
        if rng.random() < 0.2:
            msgs += conversation(rng.choice(pools[2]), rng, p_system=0.0)
        out.append(msgs)
    return out
