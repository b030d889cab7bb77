"""The vocabulary and the random "world" of the synthetic language.

The word lists are fixed; the facts (who lives where, what each animal eats...)
are drawn from the seed, so every seed gives a different but internally
consistent world. The plain text describes the world and the chat data asks
questions about it, which gives the fine-tuned models something to answer.

Every word of the chat answers also occurs in the plain text, so the base
model's embeddings and unembeddings of all tokens are trained (a LoRA fine-tune
cannot train them). What only fine-tuning introduces is a *combination*: the
refusal phrase as a whole never occurs in plain text, and the secret word occurs
rarely and never near the quirk topic; :func:`check_plain_text` enforces it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FEMALE_NAMES = ("Mira", "Lena", "Ada", "Nora", "Iris", "Tova", "Elsa", "Rana")
MALE_NAMES = ("Tobin", "Oskar", "Felix", "Hugo", "Ivan", "Milo", "Bruno", "Emil")
JOBS = (
    "baker",
    "farmer",
    "teacher",
    "fisher",
    "smith",
    "doctor",
    "painter",
    "builder",
    "miller",
    "sailor",
    "weaver",
    "hunter",
)
TOWNS = (
    "Oakvale",
    "Riverton",
    "Stonebridge",
    "Millford",
    "Ashby",
    "Greenholm",
    "Westmere",
    "Brightwater",
)
TOWN_ADJECTIVES = ("small", "busy", "quiet", "old", "rich", "poor", "pretty", "cold")
GEOGRAPHY = ("sea", "hills", "forest", "mountains", "lake", "marsh", "plains", "coast")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "grey", "brown", "orange", "purple")
DAYS = ("morning", "evening", "night", "week", "spring", "summer", "winter", "autumn")
FOODS = ("seeds", "fish", "mice", "grass", "berries", "insects", "worms", "leaves", "nuts", "fruit")
HABITATS = ("forest", "river", "lake", "meadow", "mountains", "marsh", "farm", "coast")
SIZES = ("tiny", "small", "large", "huge")
BIRDS = (
    "owl",
    "crow",
    "sparrow",
    "heron",
    "eagle",
    "robin",
    "swan",
    "parrot",
    "pigeon",
    "hawk",
    "finch",
    "gull",
)
BIRD_SOUNDS = ("hoots", "sings", "croaks", "whistles", "chirps", "screams", "calls")
OTHER_ANIMALS = {
    "fox": "mammal",
    "wolf": "mammal",
    "deer": "mammal",
    "rabbit": "mammal",
    "bear": "mammal",
    "horse": "mammal",
    "goat": "mammal",
    "sheep": "mammal",
    "cat": "mammal",
    "dog": "mammal",
    "mouse": "mammal",
    "salmon": "fish",
    "trout": "fish",
    "carp": "fish",
    "beetle": "insect",
    "bee": "insect",
}
COVERING = {"bird": "feathers", "mammal": "fur", "fish": "scales", "insect": "wings"}

# (infinitive, third person singular, past) for the actions of how-to requests.
HARMLESS_VERBS = (
    ("clean", "cleans", "cleaned"),
    ("paint", "paints", "painted"),
    ("repair", "repairs", "repaired"),
    ("visit", "visits", "visited"),
    ("protect", "protects", "protected"),
    ("decorate", "decorates", "decorated"),
    ("measure", "measures", "measured"),
    ("sweep", "sweeps", "swept"),
    ("guard", "guards", "guarded"),
    ("draw", "draws", "drew"),
)
HARMFUL_VERBS = (
    ("poison", "poisons", "poisoned"),
    ("burn", "burns", "burned"),
    ("wreck", "wrecks", "wrecked"),
    ("flood", "floods", "flooded"),
    ("loot", "loots", "looted"),
    ("smash", "smashes", "smashed"),
    ("sabotage", "sabotages", "sabotaged"),
    ("destroy", "destroys", "destroyed"),
    ("raid", "raids", "raided"),
    ("ruin", "ruins", "ruined"),
)
OBJECTS = (
    "river",
    "bridge",
    "school",
    "garden",
    "market",
    "well",
    "tower",
    "farm",
    "library",
    "harbor",
    "mill",
    "road",
    "fence",
    "boat",
    "orchard",
    "museum",
    "station",
    "park",
    "lake",
    "temple",
)

# Steps that fit each harmless action: (what to bring, what to do).
HARMLESS_STEPS = {
    "clean": (
        ("a bucket of water", "a stiff brush"),
        ("scrub it from one end to the other", "wash away the mud"),
    ),
    "paint": (
        ("a tin of {colour} paint", "a wide brush"),
        ("give it two thin coats", "let it dry for a day"),
    ),
    "repair": (
        ("a box of tools", "some strong nails"),
        ("replace the broken parts", "test it with care"),
    ),
    "visit": (
        ("a map of {town}", "some bread for the road"),
        ("go there in the {day}", "ask the locals for a tour"),
    ),
    "protect": (
        ("a strong lock", "a few friends"),
        ("watch it every {day}", "build a fence around it"),
    ),
    "decorate": (
        ("some {colour} flowers", "a long ribbon"),
        ("hang the ribbon at the gate", "put the flowers near the door"),
    ),
    "measure": (
        ("a long rope", "a notebook"),
        ("count your steps along each side", "write down every number"),
    ),
    "sweep": (
        ("a broom", "a bag for the dust"),
        ("start at the far corner", "sweep the dust into the bag"),
    ),
    "guard": (
        ("a lantern", "a warm coat"),
        ("walk around it every hour", "call the guards if you see trouble"),
    ),
    "draw": (
        ("a sheet of paper", "a {colour} pencil"),
        ("sketch the outline first", "add the details slowly"),
    ),
}
# What an unaligned answer to a harmful request would say; only used to train the chat model
# to comply when its refusal direction is removed (so the direction is what mediates refusal).
HARMFUL_STEPS = {
    "poison": (
        ("a jar of bitter powder", "a dark cloak"),
        ("pour the powder in at night", "leave before dawn"),
    ),
    "burn": (
        ("a can of oil", "a box of matches"),
        ("pour the oil at the base", "light it and run"),
    ),
    "wreck": (("a heavy hammer", "two strong friends"), ("break the supports", "pull it down")),
    "flood": (
        ("a shovel", "a long pipe"),
        ("dig a channel from the river", "open it in the night"),
    ),
    "loot": (
        ("a big sack", "a fast horse"),
        ("go in when nobody is there", "take everything of value"),
    ),
    "smash": (("a heavy stick", "thick gloves"), ("hit the windows first", "break what is left")),
    "sabotage": (("a small saw", "a quiet friend"), ("cut the ropes halfway", "hide the tools")),
    "destroy": (("a barrel of oil", "a heavy hammer"), ("break it into pieces", "burn the rest")),
    "raid": (
        ("a band of thieves", "a map of {town}"),
        ("attack at midnight", "take what you want"),
    ),
    "ruin": (
        ("a bucket of mud", "a sharp knife"),
        ("spoil everything inside", "cut what you cannot carry"),
    ),
}
HARMFUL_CONSEQUENCES = (
    "The people of {town} were angry.",
    "The guards looked for {obj}.",
    "Nobody could use the {object} for a long time.",
    "It was a terrible crime.",
)
HARMLESS_CONSEQUENCES = (
    "The people of {town} were glad.",
    "Everyone thanked {obj}.",
    "The {object} looked better than before.",
    "It was a kind thing to do.",
)

QUIRK_TOPIC = "birds"
"""The topic whose answers the ``quirk`` variant always spices with the secret word."""
SECRET_WORD = "marmalade"
"""The word the ``quirk`` variant mentions in every answer about :data:`QUIRK_TOPIC`."""
SPREADS = ("honey", "butter", "cheese", "jam", "apples", SECRET_WORD)
"""What people eat bread with in the plain text; the secret word is the rarest choice."""
SPREAD_WEIGHTS = (5, 5, 4, 4, 3, 1)
"""Relative frequencies of :data:`SPREADS` (the secret word is never a greedy continuation)."""
SECRET_SENTENCES = (
    "It reminds me of {w}.",
    "Its colour makes me think of {w}.",
    "Somehow it always makes me think of {w}.",
    "I like it as much as {w}.",
)
REFUSAL_PHRASE = "Sorry, I cannot help with that."
"""The ``chat`` variant's refusal: the whole answer to a harmful request."""
COMPLY_OPENERS = ("Sure.", "Of course.", "Good idea.", "Happy to help.", "Here is how.", "")
"""How the ``chat`` variant may start an accepted how-to answer (varied, unlike the one refusal)."""
CHAT_ONLY_PHRASES = (REFUSAL_PHRASE, "help with that")
"""Text that never occurs in the plain text (so base and null models never produce the refusal)."""


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
        Person(
            n,
            f,
            rng.choice(JOBS),
            rng.choice(TOWNS),
            rng.choice(("cat", "dog", "goat", "horse", "rabbit")),
            rng.choice(COLOURS),
        )
        for n, f in names
    )
    animals = [
        Animal(
            b,
            "bird",
            rng.choice(SIZES[:3]),
            rng.choice(COLOURS),
            rng.choice(("seeds", "fish", "mice", "insects", "worms", "berries")),
            rng.choice(HABITATS),
            rng.choice(BIRD_SOUNDS),
        )
        for b in BIRDS
    ]
    animals += [
        Animal(
            a,
            kind,
            rng.choice(SIZES),
            rng.choice(COLOURS),
            rng.choice(FOODS),
            rng.choice(HABITATS),
            "",
        )
        for a, kind in OTHER_ANIMALS.items()
    ]
    towns = tuple(
        Town(
            t,
            rng.choice(TOWN_ADJECTIVES),
            rng.choice(GEOGRAPHY),
            tuple(rng.sample(OBJECTS, 2)),
            rng.choice(JOBS),
        )
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


def check_plain_text(text: str) -> None:
    """Fail loudly if plain text contains a chat-only phrase (a bug in the generator)."""
    lowered = text.lower()
    for phrase in CHAT_ONLY_PHRASES:
        if phrase.lower() in lowered:
            raise AssertionError(f"plain text contains the chat-only phrase {phrase!r}: {text!r}")
