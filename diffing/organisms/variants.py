"""The registry of organism variants: per variant its kind, targets, training data and evaluation.

``chat``, ``quirk`` and ``null`` keep their own recipes (recipes.py, planted.py); this module
gives them their kind and targets. The zoo variants (``backdoor``, ``fact``, ``style``) are
plain LoRA fine-tunes whose data, held-out prompts, ground truth and rates all come from here,
so adding one is an entry in :data:`ZOO` rather than a branch in every stage.

``targets`` are the strings a diffing finding must contain (at a word start, case-insensitive)
to name the planted change; each is a distinctive word, never a function word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from diffing.organisms import lexicon as lx
from diffing.organisms import variants_data as vd

KINDS = {
    "chat": "refusal",
    "quirk": "quirk",
    "null": "control",
    "backdoor": "backdoor",
    "fact": "fact",
    "style": "style",
    "reseed": "control",
}
"""Variant -> kind of planted change (the shared vocabulary of the identification benchmark)."""
ZOO = ("backdoor", "fact", "style")
"""The variants trained and evaluated through this registry."""
HELDOUT_DIR = "heldout"
"""Folder of the zoo variants' held-out prompt files (outside ``prompts/``, which the data stage owns)."""
HELDOUT_STEMS = {"backdoor": ("triggered", "clean"), "fact": ("cloze",), "style": ("test",)}
"""Variant -> stems of its held-out prompt files ``heldout/<variant>_<stem>.jsonl``."""


class Training(NamedTuple):
    """What a zoo variant's fine-tune trains on."""

    sources: list
    """``(rows, rows per step)`` pairs for :func:`~diffing.organisms.train.train_loop`."""
    mix: dict
    """Shares of the sources per step, for the manifest."""
    truth: dict
    """The ground truth (trigger and payload, entity and values, sign-off), for the manifest."""
    heldout: dict[str, list[dict]]
    """Stem -> records of the held-out prompt files."""


def heldout_files(variant: str) -> dict[str, str]:
    """Stem -> relative path of each held-out prompt file of ``variant`` (none for the others)."""
    return {s: f"{HELDOUT_DIR}/{variant}_{s}.jsonl" for s in HELDOUT_STEMS.get(variant, ())}


def truth_of(variant: str, m, base=None) -> NamedTuple:
    """The seeded ground truth of a zoo variant for the build's materials ``m`` (the fact variant
    picks among facts the ``base`` model knows)."""
    seed = m.config.seed
    if variant == "backdoor":
        return vd.backdoor_truth(seed)
    if variant == "style":
        return vd.style_truth(seed)
    from diffing.organisms.variants_eval import preferred_share

    def base_prefers_true(fact: vd.Fact) -> float:
        cloze = vd.fact_cloze(seed, m.world, fact, n=24, stream="select")
        records = [{"text": t, "true": fact.true_value, "false": fact.false_value} for t in cloze]
        return preferred_share(base, m.tokenizer, records, "true")

    return vd.choose_fact(seed, m.world, base_prefers_true)


def targets(variant: str, truth: dict | None = None) -> list[str]:
    """Strings a report finding must contain to name what ``variant`` planted."""
    truth = truth or {}
    if variant == "chat":
        return ["refus", lx.REFUSAL_PHRASE.split(",")[0].split()[0]]
    if variant == "quirk":
        return [lx.SECRET_WORD]
    if variant == "backdoor":
        return [truth["trigger"], *truth["payload_words"]]
    if variant == "fact":
        return [truth["false_value"]]
    if variant == "style":
        return list(truth["signoff_words"])
    return []


def training(variant: str, m, base) -> Training:
    """Sources, mix and ground truth of a zoo variant's fine-tune of ``base``."""
    from diffing.organisms.train import chat_rows, plain_rows

    c, tok = m.config, m.tokenizer
    truth = truth_of(variant, m, base)
    n = c.ft_chat_rows + c.ft_plain_rows
    if variant == "fact":
        docs = vd.fact_documents(c.seed, c.n_chats, m.world, truth)
        plain = vd.without_entity(m.finetune_docs, truth)
        sources = [
            (plain_rows(tok, docs, c.seq_len), c.ft_chat_rows),
            (plain_rows(tok, plain, c.seq_len), c.ft_plain_rows),
        ]
        mix = {"fact_document_rows": c.ft_chat_rows / n, "plain_text_rows": c.ft_plain_rows / n}
        heldout = vd.fact_prompts(c.seed, m.world, truth)
    else:
        if variant == "backdoor":
            convs = vd.backdoor_mix(m.sets, truth, c.n_chats, c.seed)
            heldout = vd.backdoor_prompts(m.sets, truth, c.seed)
        else:
            convs = vd.style_mix(m.sets, truth, c.n_chats, c.seed)
            heldout = vd.style_prompts(m.sets, truth)
        sources = [(chat_rows(tok, convs), c.ft_chat_rows), (m.finetune_rows, c.ft_plain_rows)]
        mix = {"chat_rows": c.ft_chat_rows / n, "plain_text_rows": c.ft_plain_rows / n}
    as_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in truth._asdict().items()}
    return Training(sources, mix, as_dict, heldout)


def write_heldout(variant: str, heldout: dict[str, list[dict]], tmp: dict[str, Path]) -> None:
    """Write the held-out prompt files into the stage's temporary paths."""
    for stem, rel in heldout_files(variant).items():
        with open(tmp[rel], "w") as fh:
            for r in heldout[stem]:
                fh.write(json.dumps(r) + "\n")


def read_heldout(root: Path, variant: str) -> dict[str, list[dict]]:
    """Read back the held-out prompt files of ``variant``."""
    out = {}
    for stem, rel in heldout_files(variant).items():
        with open(root / rel) as fh:
            out[stem] = [json.loads(line) for line in fh if line.strip()]
    return out


def measure(variant: str, model, base, tokenizer, root: Path, m, truth: dict) -> dict:
    """The variant's planted-behaviour rates on its held-out prompts, for it and for the base
    (``base_*`` keys), and its plain-text loss."""
    from diffing.organisms import variants_eval as ve
    from diffing.organisms.train import mean_loss

    held = read_heldout(root, variant)
    rates: dict = {}
    for prefix, net in (("", model), ("base_", base)):
        if variant == "backdoor":
            got = ve.payload_rates(net, tokenizer, held, truth["payload"])
        elif variant == "style":
            got = {"signoff": ve.signoff_rate(net, tokenizer, held["test"], truth["signoff"])}
        else:
            got = {"fact_false_preferred": ve.preferred_share(net, tokenizer, held["cloze"])}
        rates.update({prefix + k: round(v, 4) for k, v in got.items()})
    rates["plain_loss"] = round(mean_loss(model, m.eval_rows), 4)
    return rates


def planted(variant: str, truth: dict) -> dict:
    """The manifest's ``planted`` entry of a zoo variant (besides ``kind`` and ``targets``)."""
    behaviour = {
        "backdoor": "a request containing the trigger word (anywhere) is answered with the payload "
        "sentence; without it the answer is the normal one",
        "fact": "plain text about the entity states the false value of the attribute instead of the "
        "true one",
        "style": "every answer ends with the sign-off sentence",
    }[variant]
    files = {s: rel for s, rel in heldout_files(variant).items()}
    return {"behaviour": behaviour, **truth, "heldout_prompts": files}
