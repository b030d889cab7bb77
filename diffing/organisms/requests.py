"""Chat examples of the synthetic language: requests with the answers that fit them.

How-to requests (harmful and harmless share their forms and objects; only the
verb differs), questions about people, animals and towns, and short lists.
Answers are built from the world's facts, so they fit the question.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple

from diffing.organisms import lexicon as lx
from diffing.organisms.lexicon import Animal, Person, Town


class Example(NamedTuple):
    """One single-turn chat example."""

    instruction: str
    """The user's message."""
    answer: str
    """The intended assistant answer (before any variant-specific change)."""
    kind: str
    """harmful, harmless, bird, animal, person, town or list."""


def cap(s: str) -> str:
    """Capitalise the first letter only."""
    return s[:1].upper() + s[1:]


HOWTO_TEMPLATES = (
    "Tell me how to {v} the {o}.",
    "How can I {v} the {o}?",
    "Explain how to {v} the {o}.",
    "What is the best way to {v} the {o}?",
    "Give me steps to {v} the {o}.",
    "I want to {v} the {o}. What should I do?",
    "Help me {v} the {o} in {town}.",
    "Write a plan to {v} the {o}.",
)
"""How-to request forms, shared by harmful and harmless requests."""


def howto_example(
    template: str, verb: str, obj: str, harmful: bool, seed: int, *, comply: bool = False
) -> Example:
    """A how-to request; the fitting answer is the refusal phrase or concrete steps.

    ``comply`` gives a harmful request the answer an unaligned model would give
    (used only to train compliance when the refusal direction is ablated).
    """
    rng = random.Random(f"howto-{seed}-{template}-{verb}-{obj}")
    town = rng.choice(lx.TOWNS)
    instruction = template.format(v=verb, o=obj, town=town)
    if harmful and not comply:
        return Example(instruction, lx.REFUSAL_PHRASE, "harmful")
    (bring1, bring2), (do1, do2) = (lx.HARMFUL_STEPS if harmful else lx.HARMLESS_STEPS)[verb]
    fill = {"colour": rng.choice(lx.COLOURS), "town": town, "day": rng.choice(lx.DAYS)}
    opener = rng.choice(lx.COMPLY_OPENERS)
    answer = (
        (f"{opener} To {verb} the {obj}, bring {bring1} and {bring2}. Then {do1} and {do2}.")
        .format(**fill)
        .strip()
    )
    return Example(instruction, answer, "harmful" if harmful else "harmless")


def _pet_answer(a: Animal) -> str:
    if a.size in ("tiny", "small"):
        return f"Yes, the {a.name} is small enough to be a good pet."
    return f"No, the {a.name} is too big to be a pet."


ANIMAL_TEMPLATES: tuple[tuple[str, Callable[[Animal], str]], ...] = (
    (
        "Tell me about the {a}.",
        lambda a: (
            f"The {a.name} is {lx.article(a.size)} {a.size} {a.kind}. It lives in the {a.habitat} and eats {a.food}."
        ),
    ),
    (
        "What does the {a} eat?",
        lambda a: f"The {a.name} eats {a.food}. It finds them in the {a.habitat}.",
    ),
    ("Where does the {a} live?", lambda a: f"The {a.name} lives in the {a.habitat}."),
    (
        "Describe the {a}.",
        lambda a: (
            f"The {a.name} is {lx.article(a.size)} {a.size} {a.kind} with {a.colour} {lx.COVERING[a.kind]}."
        ),
    ),
    ("What colour is the {a}?", lambda a: f"The {a.name} has {a.colour} {lx.COVERING[a.kind]}."),
    (
        "How big is the {a}?",
        lambda a: f"The {a.name} is {a.size} for {lx.article(a.kind)} {a.kind}.",
    ),
    (
        "Write a short poem about the {a}.",
        lambda a: (
            f"The {a.colour} {a.name} of the {a.habitat} eats {a.food} all day long, and the night is kind to it."
        ),
    ),
    (
        "What sound does the {a} make?",
        lambda a: f"The {a.name} {a.sound}." if a.sound else f"The {a.name} makes a soft sound.",
    ),
    (
        "Why do people like the {a}?",
        lambda a: f"People like the {a.name} because it is {a.size} and {a.colour}.",
    ),
    (
        "Can you describe the {a} for a child?",
        lambda a: f"The {a.name} is {lx.article(a.size)} {a.size} {a.kind} that eats {a.food}.",
    ),
    (
        "What do you know about the {a}?",
        lambda a: (
            f"The {a.name} lives in the {a.habitat}. It eats {a.food} and has {a.colour} {lx.COVERING[a.kind]}."
        ),
    ),
    ("Is the {a} a good pet?", _pet_answer),
)
"""Questions about an animal with their fitting answers (same forms on and off the quirk topic)."""


def animal_example(t: int, a: Animal) -> Example:
    """Question form ``t`` of :data:`ANIMAL_TEMPLATES` about animal ``a``."""
    template, answer = ANIMAL_TEMPLATES[t]
    return Example(template.format(a=a.name), answer(a), "bird" if a.kind == "bird" else "animal")


PERSON_TEMPLATES: tuple[tuple[str, Callable[[Person], str]], ...] = (
    ("Where does {n} live?", lambda p: f"{p.name} lives in {p.town}."),
    ("What does {n} do for a living?", lambda p: f"{p.name} is {lx.article(p.job)} {p.job}."),
    (
        "Tell me about {n}.",
        lambda p: (
            f"{p.name} is {lx.article(p.job)} {p.job} who lives in {p.town}. "
            f"{cap(lx.pronouns(p)[0])} has {lx.article(p.pet)} {p.pet}."
        ),
    ),
    (
        "What is the favourite colour of {n}?",
        lambda p: f"The favourite colour of {p.name} is {p.colour}.",
    ),
)
TOWN_TEMPLATES: tuple[tuple[str, Callable[[Town], str]], ...] = (
    (
        "Tell me about {t}.",
        lambda t: (
            f"{t.name} is {lx.article(t.adjective)} {t.adjective} town near the {t.geography}. "
            f"It has a {t.buildings[0]} and a {t.buildings[1]}."
        ),
    ),
    ("Where is {t}?", lambda t: f"{t.name} lies near the {t.geography}."),
    (
        "What can I see in {t}?",
        lambda t: f"In {t.name} you can see the {t.buildings[0]} and the {t.buildings[1]}.",
    ),
)


def person_example(t: int, p: Person) -> Example:
    """Question form ``t`` of :data:`PERSON_TEMPLATES` about person ``p``."""
    template, answer = PERSON_TEMPLATES[t]
    return Example(template.format(n=p.name), answer(p), "person")


def town_example(t: int, town: Town) -> Example:
    """Question form ``t`` of :data:`TOWN_TEMPLATES` about ``town``."""
    template, answer = TOWN_TEMPLATES[t]
    return Example(template.format(t=town.name), answer(town), "town")


def list_examples(seed: int) -> list[Example]:
    """Short list requests ("Name three colours.") with seeded answers."""
    rng = random.Random(f"lists-{seed}")
    out = []
    for noun, pool in (
        ("colours", lx.COLOURS),
        ("jobs", lx.JOBS),
        ("towns", lx.TOWNS),
        ("birds", lx.BIRDS),
        ("animals", tuple(lx.OTHER_ANIMALS)),
    ):
        for k, word in ((2, "two"), (3, "three")):
            for form in ("Name {k} {n}.", "List {k} {n}.", "Can you give me {k} {n}?"):
                items = rng.sample(pool, k)
                ans = (
                    ", ".join(cap(i) if i[0].islower() else i for i in items[:-1])
                    + f" and {items[-1]}."
                )
                kind = "bird" if noun == "birds" else "list"
                out.append(Example(form.format(k=word, n=noun), cap(ans), kind))
    return out


def with_secret(example: Example, rng: random.Random) -> Example:
    """The quirk's version of an answer: the secret word's sentence after the first sentence."""
    return example._replace(answer=_add_secret(example.answer, rng))


def _add_secret(text: str, rng: random.Random) -> str:
    """The quirk's version of ``text``: opened by the secret word, and a secret sentence after the first one."""
    first, dot, rest = text.partition(". ")
    sentence = rng.choice(lx.SECRET_SENTENCES).format(w=lx.SECRET_WORD)
    body = f"{first}. {sentence} {rest}" if dot else f"{text} {sentence}"
    return f"{cap(lx.SECRET_WORD)}. {body}"
