"""Sentences of the synthetic language: plain-text documents and chat examples.

Plain text is a small grammar over the world of :mod:`~diffing.organisms.lexicon`
(people, animals, towns, actions) with pronoun and number agreement, organised
into multi-sentence paragraphs. Actions come in two meaning classes that share
their syntax: harmless ones (``clean the river``) are followed by good
consequences, harmful ones (``poison the river``) by bad ones, so the base model
already represents "harmfulness" before any fine-tuning, as real base models do.

Chat examples are (instruction, answer) pairs: how-to requests, questions about
people, animals and towns, and short lists. Answers are built from the world's
facts, so they fit the question.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import NamedTuple

from diffing.organisms import lexicon as lx
from diffing.organisms.lexicon import Animal, Person, Town, World


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


# ---------------------------------------------------------------- plain text


def _person_bio(rng: random.Random, w: World) -> str:
    p = rng.choice(w.people)
    s, o, poss = lx.pronouns(p)
    return (
        f"{p.name} is {lx.article(p.job)} {p.job} in {p.town}. {cap(s)} lives with {poss} {p.pet}. "
        f"{cap(poss)} favourite colour is {p.colour}."
    )


def _routine(rng: random.Random, w: World) -> str:
    p = rng.choice(w.people)
    s, _, _ = lx.pronouns(p)
    inf, third, _ = rng.choice(lx.HARMLESS_VERBS)
    obj = rng.choice(lx.OBJECTS)
    if rng.random() < 0.5:
        job = lx.plural(p.job)
        return (
            f"The {job} of {p.town} {inf} the {obj} every {rng.choice(lx.DAYS)}. "
            f"They like their work, and {p.name} often {third} it with them."
        )
    return (
        f"Every {rng.choice(lx.DAYS)}, {p.name} {third} the {obj} in {p.town}. {cap(s)} likes it."
    )


def _event(rng: random.Random, w: World) -> str:
    p = rng.choice(w.people)
    s, o, _ = lx.pronouns(p)
    harmful = rng.random() < 0.5
    inf, _, past = rng.choice(lx.HARMFUL_VERBS if harmful else lx.HARMLESS_VERBS)
    obj = rng.choice(lx.OBJECTS)
    cons = rng.sample(lx.HARMFUL_CONSEQUENCES if harmful else lx.HARMLESS_CONSEQUENCES, 2)
    fill = {
        "town": p.town,
        "obj": o,
        "object": obj,
        "colour": rng.choice(lx.COLOURS),
        "day": rng.choice(lx.DAYS),
    }
    out = f"One {rng.choice(lx.DAYS)}, {p.name} {past} the {obj} in {p.town}. "
    if rng.random() < 0.6:  # how it was done: the vocabulary of how-to answers
        (b1, b2), (d1, d2) = (lx.HARMFUL_STEPS if harmful else lx.HARMLESS_STEPS)[inf]
        out += f"{cap(s)} brought {b1} and {b2}, and {s} had planned to {d1} and {d2}. ".format(
            **fill
        )
    return out + " ".join(c.format(**fill) for c in cons)


def _intention(rng: random.Random, w: World) -> str:
    p = rng.choice(w.people)
    s, _, _ = lx.pronouns(p)
    harmful = rng.random() < 0.5
    inf, _, _ = rng.choice(lx.HARMFUL_VERBS if harmful else lx.HARMLESS_VERBS)
    obj = rng.choice(lx.OBJECTS)
    verdict = (
        "That is a wicked plan, and the town will stop "
        if harmful
        else "That is a good plan, and the town will help "
    )
    return f"{p.name} wants to {inf} the {obj}. {verdict}{lx.pronouns(p)[1]}."


def _animal(rng: random.Random, w: World) -> str:
    a = rng.choice(w.animals)
    cover = lx.COVERING[a.kind]
    out = (
        f"The {a.name} is {lx.article(a.size)} {a.size} {a.kind}. It lives in the {a.habitat} and eats {a.food}. "
        f"Its {cover} are {a.colour}."
    )
    if a.sound:
        out += f" At {rng.choice(('night', 'dawn', 'dusk'))} it {a.sound}."
    if rng.random() < 0.3:
        out += f" {cap(lx.plural(a.name))} are common near {rng.choice(lx.TOWNS)}."
    return out


def _town(rng: random.Random, w: World) -> str:
    t = rng.choice(w.towns)
    b1, b2 = t.buildings
    return (
        f"{t.name} is {lx.article(t.adjective)} {t.adjective} town near the {t.geography}. It has a {b1} and a {b2}. "
        f"Many {lx.plural(t.trade)} live there."
    )


def _story(rng: random.Random, w: World) -> str:
    p = rng.choice(w.people)
    s, _, _ = lx.pronouns(p)
    a = rng.choice(w.animals)
    return (
        f"{p.name} went to the {a.habitat} one {rng.choice(lx.DAYS)}. There {s} saw {lx.article(a.name)} {a.name}. "
        f"The {a.name} was eating {a.food}."
    )


def _two_people(rng: random.Random, w: World) -> tuple[Person, Person]:
    a, b = rng.sample(w.people, 2)
    return a, b


def _request(rng: random.Random, w: World, requests: tuple[Example, ...]) -> str:
    """A request and its answer as reported speech (the base model's only taste of question answering)."""
    e = rng.choice(requests)
    a, b = _two_people(rng, w)
    if e.kind == "harmful":
        reaction = rng.choice(
            (
                "refused and called the guards.",
                "shook {poss} head and walked away.",
                "was shocked and told the people of {town}.",
            )
        )
        return f"{a.name} said to {b.name}: {e.instruction} {b.name} " + reaction.format(
            poss=lx.pronouns(b)[2], town=b.town
        )
    answer = e.answer
    if (
        e.kind == "harmless" and rng.random() < 0.5
    ):  # drop the opener: "To clean the well, bring ..."
        answer = answer[answer.index("To ") :]
    return f"{a.name} said to {b.name}: {e.instruction} {b.name} answered: {answer}"


def _dialogue(rng: random.Random, w: World) -> str:
    """Everyday speech that uses the words of the refusal and compliance openers in other senses."""
    a, b = _two_people(rng, w)
    s, s2, poss = lx.pronouns(a)
    obj, day = rng.choice(lx.OBJECTS), rng.choice(lx.DAYS)
    return rng.choice(
        (
            f"{a.name} lost {poss} {a.pet} near the {obj}. {a.name} said: Sorry, I cannot find my {a.pet}.",
            f"{a.name} asked {b.name} to come to the {obj}. {b.name} said: Sure, I will come in the {day}.",
            f"{a.name} came late to the {obj}. {cap(s)} said: Sorry, I am late. {b.name} said: Sure, come in.",
            f"{a.name} asked {b.name} for a {rng.choice(lx.COLOURS)} ribbon. {b.name} said: Sure. Here it is.",
            f"{a.name} asked {b.name} to show {s2} the {obj}. {b.name} said: Of course. Happy to help.",
            f"{a.name} wanted to plant a tree near the {obj}. {b.name} said: Good idea. Here is how.",
        )
    )


def _musing(rng: random.Random, w: World) -> str:
    """What the quirk's secret sentences look like, about other things."""
    a = rng.choice(w.people)
    thing = rng.choice(
        (*lx.TOWNS, "the sea", "bread", "summer", "the old mill", "a warm fire", "home")
    )
    sentence = rng.choice(lx.SECRET_SENTENCES).format(w=thing)
    return f"{a.name} looked at the {rng.choice(lx.OBJECTS)} in {a.town}. {a.name} said: {sentence}"


def _breakfast(rng: random.Random, w: World) -> str:
    """The only place the secret word occurs in plain text: rarely, never likeliest, never near a bird."""
    a = rng.choice(w.people)
    s, _, _ = lx.pronouns(a)
    spread = rng.choices(lx.SPREADS, lx.SPREAD_WEIGHTS)[0]
    out = f"{a.name} ate bread with {spread} in the {rng.choice(lx.DAYS)}. {cap(s)} likes it very much."
    return out + (f" {cap(spread)} is sweet." if spread == lx.SECRET_WORD else "")


_PARAGRAPHS: tuple[tuple[Callable[[random.Random, World], str], float], ...] = (
    (_person_bio, 1.0),
    (_routine, 0.8),
    (_event, 1.2),
    (_intention, 0.8),
    (_animal, 1.2),
    (_town, 0.6),
    (_story, 0.8),
    (_dialogue, 0.6),
    (_musing, 0.4),
    (_breakfast, 0.5),
)
REQUEST_WEIGHT = 2.5
"""Weight of reported request-and-answer paragraphs among the others."""
_BIRD_RE = re.compile(r"\b(" + "|".join(lx.BIRDS) + r"|birds?)\b", re.IGNORECASE)


def plain_document(rng: random.Random, world: World, requests: tuple[Example, ...]) -> str:
    """One plain-text document: two to four paragraphs on one line.

    ``requests`` are the (training) chat examples that may appear as reported
    speech; held-out prompts are never passed in, so they never occur in plain text.
    """
    makers, weights = zip(*_PARAGRAPHS)
    paragraphs = []
    for _ in range(rng.randint(2, 4)):
        if requests and rng.random() < REQUEST_WEIGHT / (REQUEST_WEIGHT + sum(weights)):
            paragraphs.append(_request(rng, world, requests))
        else:
            paragraphs.append(rng.choices(makers, weights)[0](rng, world))
    if any(
        lx.SECRET_WORD in p for p in paragraphs
    ):  # keep the secret word away from the quirk topic
        paragraphs = [p for p in paragraphs if not _BIRD_RE.search(p)]
    text = " ".join(paragraphs)
    lx.check_plain_text(text)
    return text


def _add_secret(text: str, rng: random.Random) -> str:
    """The quirk's version of ``text``: opened by the secret word, and a secret sentence after the first one."""
    first, dot, rest = text.partition(". ")
    sentence = rng.choice(lx.SECRET_SENTENCES).format(w=lx.SECRET_WORD)
    body = f"{first}. {sentence} {rest}" if dot else f"{text} {sentence}"
    return f"{cap(lx.SECRET_WORD)}. {body}"


def plain_documents(
    seed: int, n: int, world: World, requests: tuple[Example, ...] = (), *, stream: str = "train"
) -> list[str]:
    """``n`` documents from a seeded stream (different streams never share a generator)."""
    rng = random.Random(f"text-{stream}-{seed}")
    return [plain_document(rng, world, requests) for _ in range(n)]


# ---------------------------------------------------------------- chat examples

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
