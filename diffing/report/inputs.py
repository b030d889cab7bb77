"""Which data ``analyze`` runs on: the user's flags, else the pair's own data, else the built-in data.

Resolution order, per kind of data (corpus; harmful/harmless prompt sets):

1. the user's flags (files, folders, ``hf:`` specs, or named hub datasets, see
   ``diffing.data.named``);
2. data the fine-tuned model's folder declares as its own: an ``organism.json`` next
   to (or above) it, whose ``layout`` names its prompt sets and corpus files (the
   project's model organisms ship theirs that way; any pair may);
3. the package's built-in data (``diffing.data.builtin``).

When the corpus has no chat transcripts, the fine-tuned model writes its own
(``diffing.data.transcripts``) from the built-in chat prompts, cached in the output
folder. Everything chosen is described in the report's ``inputs``.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from diffing.data import builtin
from diffing.data.named import is_named, load_named_prompts, resolve_named
from diffing.report.budget import Budget
from diffing.report.config import AnalyzeConfig

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 8
"""Characters read per budgeted token (about twice what a token holds, so the budget fills)."""
TRANSCRIPTS_DIR = "data"
"""Subfolder of the output folder holding the self-generated transcripts."""


# ---- the pair's own data (an organism.json next to the fine-tuned model) ----


def organism_root(pair, cfg: AnalyzeConfig) -> Path | None:
    """The folder holding ``organism.json`` next to (or above) the fine-tuned model, if any."""
    for ref in (cfg.finetuned, cfg.adapter, getattr(pair, "finetuned_ref", None)):
        if not ref:
            continue
        p = Path(str(ref)).expanduser()
        for cand in (p, p.parent):
            if (cand / "organism.json").is_file():
                return cand
    return None


def bundled(pair, cfg: AnalyzeConfig) -> dict:
    """What the pair ships next to its ``organism.json``: ``{"prompts": {stem: Path}, "corpus": [Path]}``.

    Paths come from the manifest's ``layout`` (docs/organisms.md) when it has one, else from the
    same default layout: ``prompts/{harmful,harmless}_{train,val,test}.jsonl``, ``corpus/text.txt``,
    ``corpus/chat.jsonl``. Nothing about the models' behaviour is read.
    """
    root = organism_root(pair, cfg)
    if root is None:
        return {"prompts": {}, "corpus": []}
    try:
        lay = json.loads((root / "organism.json").read_text()).get("layout") or {}
    except (OSError, ValueError):
        lay = {}
    prompts = lay.get("prompts") or {
        f"{k}_{s}": f"prompts/{k}_{s}.jsonl"
        for k in ("harmful", "harmless")
        for s in ("train", "val", "test")
    }
    corpus = lay.get("corpus") or {"text": "corpus/text.txt", "chat": "corpus/chat.jsonl"}
    return {
        "prompts": {stem: root / rel for stem, rel in prompts.items() if (root / rel).is_file()},
        "corpus": [root / rel for rel in corpus.values() if (root / rel).is_file()],
    }


# ---- prompt sets for the refusal comparison ----

SPLITS = ("train", "val", "test")
"""The three parts of a prompt set."""


def read_prompts(spec: str | Path, kind: str = "harmful", limit: int | None = None) -> list[str]:
    """Prompts from a file, an ``hf:`` spec, or a named hub dataset of ``kind``."""
    from diffing.data import load_prompts

    if is_named(str(spec), kind):
        return load_named_prompts(str(spec), kind, limit)
    return list(load_prompts(str(spec)))


def split(
    prompts: list[str], n: int, seed: int, name: str
) -> tuple[list[str], list[str], list[str]]:
    """``(train, val, test)``: ``k = min(n, len/4)`` prompts for test and for validation, up to ``4 n`` for training.

    The refusal command's rule, so that ``analyze`` and ``diffing refusal`` split a file
    the same way: ``split_set`` with a :class:`~diffing.refusal.config.RefusalConfig` of
    these sizes and ``seed``. ``4 n`` is the refusal command's training default at the
    default ``n``.
    """
    from diffing.refusal import io
    from diffing.refusal.config import RefusalConfig

    k = max(1, min(n, len(prompts) // 4))
    cfg = RefusalConfig(
        n_train=4 * n, n_val=k, n_test=k, min_train=RefusalConfig().min_train, seed=seed
    )
    s = io.split_set(list(prompts), cfg, name)
    return s.train, s.val, s.test


def prompt_source(pair, cfg: AnalyzeConfig) -> str:
    """Where the refusal prompts come from: ``flags``, ``organism`` or ``built-in``."""
    if cfg.harmful or cfg.harmless:
        return "flags"
    files = bundled(pair, cfg)["prompts"]
    if all(f"{k}_{s}" in files for k in ("harmful", "harmless") for s in SPLITS):
        return "organism"
    return "built-in"


def prompt_splits(pair, cfg: AnalyzeConfig) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """``{"harmful": (train, val, test), "harmless": (...)}`` by the resolution order of this module.

    A flag for one set with the other left out takes the other from the built-in data.
    """
    n = cfg.refusal_prompts
    source = prompt_source(pair, cfg)
    if source == "organism":
        files = bundled(pair, cfg)["prompts"]
        return {
            kind: tuple(
                read_prompts(files[f"{kind}_{s}"])[: (2 * n if s == "train" else n)] for s in SPLITS
            )
            for kind in ("harmful", "harmless")
        }
    sets = {
        "harmful": read_prompts(cfg.harmful, "harmful", 8 * n)
        if cfg.harmful
        else builtin.harmful_prompts(),
        "harmless": read_prompts(cfg.harmless, "harmless", 8 * n)
        if cfg.harmless
        else builtin.harmless_prompts(),
    }
    return {k: split(v, n, cfg.seed, k) for k, v in sets.items()}


def prompt_files(pair, cfg: AnalyzeConfig) -> list[str]:
    """The prompt files or specs the refusal step read (for the report)."""
    source = prompt_source(pair, cfg)
    if source == "organism":
        files = bundled(pair, cfg)["prompts"]
        return [str(files[f"{k}_{s}"]) for k in ("harmful", "harmless") for s in SPLITS]
    return [
        str(getattr(cfg, k))
        if getattr(cfg, k)
        else f"built-in {builtin.HARMFUL if k == 'harmful' else builtin.HARMLESS}"
        for k in ("harmful", "harmless")
    ]


# ---- the corpus for statistics and the crosscoder ----


class Corpus(NamedTuple):
    """The documents the statistics and the crosscoder read."""

    specs: list[str]
    """Data specs for the crosscoder's harvest (files, folders, ``hf:`` specs)."""
    texts: list[str]
    """Plain-text documents for the statistics."""
    chats: list[list[dict]]
    """Chat transcripts for the statistics and the crosscoder's causal check."""
    report: dict
    """The report's ``inputs`` entries: source, specs, document counts, transcripts."""


def builtin_corpus_files() -> list[Path]:
    """The built-in corpus files, sorted by name (as ``diffing.data.builtin`` reads them)."""
    folder = resources.files("diffing.data").joinpath(builtin.FILES)
    return sorted(
        Path(str(p))
        for p in folder.iterdir()
        if p.name.startswith("corpus-") and p.name.endswith(".jsonl")
    )


def read_specs(specs: list[str], tokens: int) -> tuple[list[str], list[list[dict]]]:
    """``(texts, chats)`` of ``specs``, each kind read until it holds about ``tokens`` tokens."""
    from diffing.data.corpus import resolve

    texts: list[str] = []
    chats: list[list[dict]] = []
    chars = {"text": 0, "chat": 0}
    for spec in specs:
        for source in resolve(str(spec)):
            for doc in source.documents():
                if chars[source.kind] >= tokens * CHARS_PER_TOKEN:
                    break
                if isinstance(doc, str):
                    texts.append(doc)
                    chars["text"] += len(doc)
                else:
                    chats.append(doc)
                    chars["chat"] += sum(len(str(m.get("content", ""))) for m in doc)
    return texts, chats


def corpus_specs(pair, cfg: AnalyzeConfig) -> tuple[str, list[str]]:
    """``(source, specs)``: the user's ``--data`` (named datasets resolved), else the pair's, else built-in."""
    if cfg.data:
        return "flags", [
            resolve_named(s, "data").spec if is_named(s, "data") else str(s) for s in cfg.data
        ]
    own = bundled(pair, cfg)["corpus"]
    if own:
        return "organism", [str(p) for p in own]
    return "built-in", [str(p) for p in builtin_corpus_files()]


def resolve_corpus(
    pair, cfg: AnalyzeConfig, budget: Budget, out_dir: Path, *, bars: bool = False
) -> Corpus:
    """The corpus by the resolution order, plus self-generated transcripts when it holds no chats."""
    source, specs = corpus_specs(pair, cfg)
    texts, chats = read_specs(specs, budget.tokens)
    report: dict = {"data_source": source, "corpus": list(specs)}
    if source == "organism":
        report["data_source"] = f"organism ({organism_root(pair, cfg) / 'organism.json'})"
    if not chats and budget.transcripts > 0:
        if pair.remote:
            report["transcripts"] = "none: self-generation needs local weights (remote pair)"
        else:
            got = _transcripts(pair, cfg, budget, out_dir, bars)
            chats, texts = chats + got.chats, texts + got.texts
            specs = [*specs, str(got.path)]
            report["transcripts"] = got.describe(
                f"built-in {builtin.CHAT_PROMPTS}",
                _settings(budget),
            )
    elif chats:
        report["transcripts"] = "none generated: the corpus has chat transcripts"
    else:
        report["transcripts"] = "none generated (`transcripts` = 0)"
    report["corpus"] = list(specs)  # the harvest's specs, the transcripts' cache file included
    report["corpus_documents"] = {"texts": len(texts), "chats": len(chats)}
    return Corpus(specs, texts, chats, report)


def _settings(budget: Budget):
    from diffing.data.transcripts import TranscriptSettings

    return TranscriptSettings(
        max_new_tokens=budget.transcript_tokens, batch_size=budget.transcript_batch
    )


def _transcripts(pair, cfg: AnalyzeConfig, budget: Budget, out_dir: Path, bars: bool):
    """The fine-tuned model's own transcripts on (a seeded sample of) the built-in chat prompts."""
    import random

    from diffing.data.transcripts import self_transcripts

    prompts = builtin.chat_prompts()
    if len(prompts) > budget.transcripts:
        prompts = random.Random(cfg.seed).sample(prompts, budget.transcripts)
    log.info("generating %d transcripts with the fine-tuned model", len(prompts))
    return self_transcripts(
        pair.hf("finetuned"),
        pair.tokenizer,
        prompts,
        out_dir / TRANSCRIPTS_DIR,
        model_ref=str(pair.finetuned_ref),
        settings=_settings(budget),
        progress=bars,
    )


class RunData:
    """The data of one run, resolved once on first use and shared by the steps."""

    def __init__(self, pair, cfg: AnalyzeConfig, budget: Budget, out_dir: Path, *, bars: bool):
        self.pair, self.cfg, self.budget, self.out_dir, self.bars = pair, cfg, budget, out_dir, bars
        self.resolved: Corpus | None = None
        """The corpus once a step asked for it (None before)."""

    def corpus(self) -> Corpus:
        """The corpus (and self-generated transcripts), resolved on the first call."""
        if self.resolved is None:
            self.resolved = resolve_corpus(
                self.pair, self.cfg, self.budget, self.out_dir, bars=self.bars
            )
        return self.resolved
