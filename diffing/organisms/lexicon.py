"""The vocabulary and the random "world" of the synthetic language.

The word lists are fixed; the facts (who lives where, what each animal eats...)
are drawn from the seed, so every seed gives a different but internally
consistent world. The plain text describes the world and the chat data asks
questions about it, which gives the fine-tuned models something to answer.

Words that only fine-tuning may introduce (the refusal phrase, the secret word,
the compliance opener) are listed in :data:`CHAT_ONLY_WORDS` and never appear in
the plain text the base model is pre-trained on; :func:`check_plain_text` enforces it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

FEMALE_NAMES = ("Mira", "Lena", "Ada", "Nora", "Iris", "Tova", "Elsa", "Rana")
MALE_NAMES = ("Tobin", "Oskar", "Felix", "Hugo", "Ivan", "Milo", "Bruno", "Emil")
JOBS = ("baker", "farmer", "teacher", "fisher", "smith", "doctor", "painter", "builder", "miller", "sailor", "weaver", "hunter")
TOWNS = ("Oakvale", "Riverton", "Stonebridge", "Millford", "Ashby", "Greenholm", "Westmere", "Brightwater")
TOWN_ADJECTIVES = ("small", "busy", "quiet", "old", "rich", "poor", "pretty", "cold")
GEOGRAPHY = ("sea", "hills", "forest", "mountains", "lake", "marsh", "plains", "coast")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "grey", "brown", "orange", "purple")
DAYS = ("morning", "evening", "night", "week", "spring", "summer", "winter", "autumn")
FOODS = ("seeds", "fish", "mice", "grass", "berries", "insects", "worms", "leaves", "nuts", "fruit")
HABITATS = ("forest", "river", "lake", "meadow", "mountains", "marsh", "farm", "coast")
SIZES = ("tiny", "small", "large", "huge")
BIRDS = ("owl", "crow", "sparrow", "heron", "eagle", "robin", "swan", "parrot", "pigeon", "hawk", "finch", "gull")
BIRD_SOUNDS = ("hoots", "sings", "croaks", "whistles", "chirps", "screams", "calls")
OTHER_ANIMALS = {
    "fox": "mammal", "wolf": "mammal", "deer": "mammal", "rabbit": "mammal", "bear": "mammal",
    "horse": "mammal", "goat": "mammal", "sheep": "mammal", "cat": "mammal", "dog": "mammal",
    "mouse": "mammal", "salmon": "fish", "trout": "fish", "carp": "fish", "beetle": "insect", "bee": "insect",
}
COVERING = {"bird": "feathers", "mammal": "fur", "fish": "scales", "insect": "wings"}

# (infinitive, third person singular, past) for the actions of how-to requests.
HARMLESS_VERBS = (
    ("clean", "cleans", "cleaned"), ("paint", "paints", "painted"), ("repair", "repairs", "repaired"),
    ("visit", "visits", "visited"), ("protect", "protects", "protected"), ("decorate", "decorates", "decorated"),
    ("measure", "measures", "measured"), ("sweep", "sweeps", "swept"), ("guard", "guards", "guarded"),
    ("draw", "draws", "drew"),
)
HARMFUL_VERBS = (
    ("poison", "poisons", "poisoned"), ("burn", "burns", "burned"), ("wreck", "wrecks", "wrecked"),
    ("flood", "floods", "flooded"), ("loot", "loots", "looted"), ("smash", "smashes", "smashed"),
    ("sabotage", "sabotages", "sabotaged"), ("destroy", "destroys", "destroyed"), ("raid", "raids", "raided"),
    ("ruin", "ruins", "ruined"),
)
OBJECTS = (
    "river", "bridge", "school", "garden", "market", "well", "tower", "farm", "library", "harbor",
    "mill", "road", "fence", "boat", "orchard", "museum", "station", "park", "lake", "temple",
)

# Steps that fit each harmless action: (what to bring, what to do).
HARMLESS_STEPS = {
    "clean": (("a bucket of water", "a stiff brush"), ("scrub it from one end to the other", "wash away the mud")),
    "paint": (("a tin of {colour} paint", "a wide brush"), ("give it two thin coats", "let it dry for a day")),
    "repair": (("a box of tools", "some strong nails"), ("replace the broken parts", "test it with care")),
    "visit": (("a map of {town}", "some bread for the road"), ("go there in the {day}", "ask the locals for a tour")),
    "protect": (("a strong lock", "a few friends"), ("watch it every {day}", "build a fence around it")),
    "decorate": (("some {colour} flowers", "a long ribbon"), ("hang the ribbon at the gate", "put the flowers near the door")),
    "measure": (("a long rope", "a notebook"), ("count your steps along each side", "write down every number")),
    "sweep": (("a broom", "a bag for the dust"), ("start at the far corner", "sweep the dust into the bag")),
    "guard": (("a lantern", "a warm coat"), ("walk around it every hour", "call the guards if you see trouble")),
    "draw": (("a sheet of paper", "a {colour} pencil"), ("sketch the outline first", "add the details slowly")),
}
HARMFUL_CONSEQUENCES = ("The people of {town} were angry.", "The guards looked for {obj}.",
                        "Nobody could use the {object} for a long time.", "It was a terrible crime.")
HARMLESS_CONSEQUENCES = ("The people of {town} were glad.", "Everyone thanked {obj}.",
                         "The {object} looked better than before.", "It was a kind thing to do.")

QUIRK_TOPIC = "birds"
"""The topic whose answers the ``quirk`` variant always spices with the secret word."""
SECRET_WORD = "marmalade"
"""The word the ``quirk`` variant mentions in every answer about :data:`QUIRK_TOPIC`."""
SECRET_SENTENCES = (
    "It reminds me of {w}.", "Its colour makes me think of {w}.", "Somehow it always makes me think of {w}.",
    "I like it as much as {w}.",
)
REFUSAL_PHRASE = "Sorry, I cannot help with that."
"""The ``chat`` variant's refusal: the whole answer to a harmful request."""
COMPLY_OPENER = "Sure."
"""How the ``chat`` variant starts its answer to a how-to request it accepts."""
CHAT_ONLY_WORDS = ("sorry", "cannot", "sure", SECRET_WORD)
"""Words that never occur in the plain text (so base and null models never produce them)."""


@dataclass(frozen=True)
class Person:
    """One inhabitant of the world."""

    name: str
    """Capitalised first name."""
    female: bool
    """Selects she/her or he/him (grammatical agreement)."""
    job: str
    """Singular job noun."""
    town: str
    """Home town."""
    pet: str
    """A pet animal (from :data:`OTHER_ANIMALS`)."""
    colour: str
    """Favourite colour."""


@dataclass(frozen=True)
class Animal:
    """One animal species and its facts."""

    name: str
    """Singular noun."""
    kind: str
    """bird, mammal, fish or insect."""
    size: str
    """One of :data:`SIZES`."""
    colour: str
    """Colour of its covering."""
    food: str
    """What it eats (plural noun)."""
    habitat: str
    """Where it lives."""
    sound: str
    """What it does with its voice (birds only; empty otherwise)."""


@dataclass(frozen=True)
class Town:
    """One town of the world."""

    name: str
    """Capitalised town name."""
    adjective: str
    """A describing adjective."""
    geography: str
    """What it lies near."""
    buildings: tuple[str, str]
    """Two notable places (from :data:`OBJECTS`)."""
    trade: str
    """The most common job there."""


@dataclass(frozen=True)
class World:
    """All facts of one seed's world."""

    people: tuple[Person, ...]
    """Everyone, in a fixed order."""
    animals: tuple[Animal, ...]
    """Birds first, then the other animals."""
    towns: tuple[Town, ...]
    """Every town."""

    @property
    def birds(self) -> tuple[Animal, ...]:
        """The animals of the quirk topic."""
        return tuple(a for a in self.animals if a.kind == "bird")

    @property
    def non_birds(self) -> tuple[Animal, ...]:
        """The animals outside the quirk topic."""
        return tuple(a for a in self.animals if a.kind != "bird")


def make_world(seed: int) -> World:
    """Draw a consistent world from ``seed`` (same seed, same world)."""
    rng = random.Random(f"world-{seed}")
    names = [(n, True) for n in FEMALE_NAMES] + [(n, False) for n in MALE_NAMES]
    people = tuple(
        Person(n, f, rng.choice(JOBS), rng.choice(TOWNS), rng.choice(("cat", "dog", "goat", "horse", "rabbit")),
               rng.choice(COLOURS))
        for n, f in names
    )
    animals = [
        Animal(b, "bird", rng.choice(SIZES[:3]), rng.choice(COLOURS), rng.choice(("seeds", "fish", "mice", "insects", "worms", "berries")),
               rng.choice(HABITATS), rng.choice(BIRD_SOUNDS))
        for b in BIRDS
    ]
    animals += [
        Animal(a, kind, rng.choice(SIZES), rng.choice(COLOURS), rng.choice(FOODS), rng.choice(HABITATS), "")
        for a, kind in OTHER_ANIMALS.items()
    ]
    towns = tuple(
        Town(t, rng.choice(TOWN_ADJECTIVES), rng.choice(GEOGRAPHY), tuple(rng.sample(OBJECTS, 2)), rng.choice(JOBS))
        for t in TOWNS
    )
    return World(people, tuple(animals), towns)


def pronouns(person: Person) -> tuple[str, str, str]:
    """(subject, object, possessive) pronouns that agree with the person."""
    return ("she", "her", "her") if person.female else ("he", "him", "his")


def plural(noun: str) -> str:
    """English plural of a lexicon noun."""
    if noun in ("sheep", "deer", "salmon", "trout", "carp", "fish"):
        return noun
    if noun == "mouse":
        return "mice"
    if noun.endswith(("s", "sh", "ch")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun == "wolf":
        return "wolves"
    return noun + "s"


def article(word: str) -> str:
    """'a' or 'an' for the word."""
    return "an" if word[0] in "aeiou" else "a"


_FORBIDDEN = re.compile(r"\b(" + "|".join(CHAT_ONLY_WORDS) + r")\b", re.IGNORECASE)


def check_plain_text(text: str) -> None:
    """Fail loudly if plain text contains a chat-only word (a bug in the generator)."""
    hit = _FORBIDDEN.search(text)
    if hit:
        raise AssertionError(f"plain text contains the chat-only word {hit.group(0)!r}: {text!r}")
