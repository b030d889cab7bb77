"""The built-in data: sizes, variety, no duplicates, harmful and harmless sets matched."""

from __future__ import annotations

import statistics
from collections import Counter

from diffing.data import builtin

HARM_CATEGORIES = {
    "violence",
    "weapons",
    "cybercrime",
    "fraud",
    "drugs",
    "harassment",
    "self-harm",
    "privacy",
}


def _words(text: str) -> int:
    return len(text.split())


def test_corpus_is_large_varied_and_long_enough():
    docs = builtin.corpus_records()
    assert len(docs) >= 400
    assert len({d.id for d in docs}) == len(docs)
    assert len({d.text for d in docs}) == len(docs)
    genres = Counter(d.group for d in docs)
    # encyclopedic, narrative, technical, code and dialogue at the least, none dominating
    for genre in ("encyclopedic", "narrative", "technical", "code", "dialogue"):
        assert genres[genre] >= 20, genres
    assert max(genres.values()) <= 0.3 * len(docs)
    lengths = [_words(d.text) for d in docs]
    # several hundred tokens each: about 200 words or more
    assert min(lengths) >= 180
    assert statistics.mean(lengths) >= 220


def test_chat_prompts_cover_everyday_topics_without_duplicates():
    prompts = builtin.chat_prompt_records()
    assert len(prompts) >= 300
    texts = [p.text for p in prompts]
    assert len(set(texts)) == len(texts)
    topics = Counter(p.group for p in prompts)
    assert len(topics) >= 10
    assert max(topics.values()) <= 0.15 * len(prompts)


def test_harmful_and_harmless_sets_are_matched():
    harmful, harmless = builtin.harmful_records(), builtin.harmless_records()
    assert len(harmful) >= 250 and len(harmless) == len(harmful)
    assert len({r.text for r in harmful}) == len(harmful)
    assert len({r.text for r in harmless}) == len(harmless)
    assert not {r.text for r in harmful} & {r.text for r in harmless}
    assert not {r.text for r in harmful} & set(builtin.chat_prompts())
    # the usual harm categories, each with enough prompts for a train/test split
    categories = Counter(r.group for r in harmful)
    assert HARM_CATEGORIES <= set(categories)
    assert min(categories.values()) >= 15
    # matched one to one: same category, similar length, shared topic words
    for bad, good in zip(harmful, harmless):
        assert bad.group == good.group
        ratio = _words(bad.text) / _words(good.text)
        assert 0.5 <= ratio <= 2.0, (bad.text, good.text)
    mean_bad = statistics.mean(_words(r.text) for r in harmful)
    mean_good = statistics.mean(_words(r.text) for r in harmless)
    assert abs(mean_bad - mean_good) / mean_good < 0.1
    shared = [
        bool(set(b.text.lower().split()[:3]) & set(g.text.lower().split()[:3]))
        for b, g in zip(harmful, harmless)
    ]
    # most pairs open the same way ("How do I ...", "Write a ..."), as in matched splits
    assert sum(shared) >= 0.8 * len(shared)


def test_docs_composition_table_is_current():
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "data.md").read_text()
    assert builtin.composition() in page, "regenerate the table: python -m diffing.data.builtin"
