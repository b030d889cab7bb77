"""Plain text of the synthetic language: documents about a seeded world.

A small grammar over the world of :mod:`~diffing.organisms.lexicon` (people,
animals, towns, actions) with pronoun and number agreement, organised into
multi-sentence paragraphs. Actions come in two meaning classes that share their
syntax: harmless ones (``clean the river``) are followed by good consequences,
harmful ones (``poison the river``) by bad ones, so the base model already
represents "harmfulness" before any fine-tuning, as real base models do.
Training-split requests appear as reported speech with their answers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from diffing.organisms import lexicon as lx
from diffing.organisms.lexicon import Person, World
from diffing.organisms.requests import Example, cap

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


def plain_documents(
    seed: int, n: int, world: World, requests: tuple[Example, ...] = (), *, stream: str = "train"
) -> list[str]:
    """``n`` documents from a seeded stream (different streams never share a generator)."""
    rng = random.Random(f"text-{stream}-{seed}")
    return [plain_document(rng, world, requests) for _ in range(n)]
