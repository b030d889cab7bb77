"""Emerging words of amplification without a target: the word shares, the finding rule, and the organisms."""

from __future__ import annotations

import json

import pytest

from diffing.lens.amplify_words import emerging_words, emerging_words_json, prompt_words, words_of
from diffing.report.budget import auto_budget
from diffing.report.findings import Thresholds, compute_findings


def test_words_are_what_a_reader_sees():
    """Lower-cased, punctuation stripped, inner apostrophes kept, a cut last word dropped."""
    assert words_of("The Bakers of Westmere shocked you.") == {
        "the",
        "bakers",
        "of",
        "westmere",
        "shocked",
        "you",
    }
    assert words_of("Don't stop, Emil!") == {"don't", "stop", "emil"}
    assert words_of(" To decorate the road. The bak") == {"to", "decorate", "the", "road"}
    assert words_of("") == set()
    # two samples of one prompt: a word counts once for the prompt
    assert prompt_words(["a cat.", "a dog.", "the owl."], samples=2) == [
        {"a", "cat", "dog"},
        {"the", "owl"},
    ]


def test_emerging_word_shares_on_known_answers():
    """Shares of prompts per setting, the rise from the base, the best α (smallest on a tie)."""
    base = ["a fox runs.", "a cat sleeps.", "the owl sings.", "a dog barks."]
    ft = ["a fox runs. Bye now.", "a cat sleeps.", "the owl sings. Bye now.", "a dog barks."]
    amp = ["bye now.", "Bye now!", "bye.", "a dog barks."]
    words = {w.word: w for w in emerging_words(base, [(0.0, ft), (2.0, amp)])}
    assert set(words) == {"bye", "now"}  # no other word's share rises
    bye, now = words["bye"], words["now"]
    assert (bye.rise, bye.alpha, bye.share, bye.count, bye.base) == (0.75, 2.0, 0.75, 3, 0.0)
    assert [(s.alpha, s.share) for s in bye.shares] == [(None, 0.0), (0.0, 0.5), (2.0, 0.75)]
    assert (now.rise, now.alpha, now.count) == (0.5, 0.0, 2)  # 0.5 at α 0 and at α 2: the smaller
    assert [w.word for w in emerging_words(base, [(0.0, ft), (2.0, amp)])] == ["bye", "now"]
    assert emerging_words(base, [(0.0, ft), (2.0, amp)], limit=1)[0].word == "bye"
    # the dict form of amplify.json: samples per prompt from its config
    data = {
        "config": {"samples": 1},
        "base_model": {"samples": [{"completion": t} for t in base]},
        "alphas": [
            {"alpha": a, "samples": [{"completion": t} for t in texts]}
            for a, texts in ((0.0, ft), (2.0, amp))
        ],
    }
    got = emerging_words_json(data)
    assert got[0]["word"] == "bye" and got[0]["shares"][2] == {"alpha": 2.0, "share": 0.75}
    assert emerging_words_json({**data, "base_model": None}) is None


def _report(rise: float, base: float = 0.0, count: int = 20, n: int = 32) -> dict:
    share = base + rise
    word = {"word": "bakers", "rise": rise, "alpha": 2.0, "share": share, "count": count,
            "base": base, "shares": [{"alpha": None, "share": base}, {"alpha": 2.0, "share": share}]}  # fmt: skip
    common = {**word, "word": "of", "base": 0.2, "share": 0.2 + rise, "rise": rise}
    return {
        "amplify": {
            "formula": "logits_ft + alpha * (logits_ft - logits_base)",
            "summary": "",
            "target": None,
            "rates": [],
            "alphas": [0.0, 2.0],
            "by_alpha": [],
            "n_prompts": n,
            "emerging_words": [common, word],
        }
    }


def test_the_words_rule_fires_above_the_threshold_only():
    """At the threshold it names the words (those the base never says first); below, or in too few prompts, nothing."""
    th = Thresholds()
    found = [
        f for f in compute_findings(_report(th.amplify_word_rise)) if f["section"] == "amplify"
    ]
    assert len(found) == 1 and found[0]["id"] == "amplify-words"
    assert found[0]["evidence"]["words"] == ["bakers", "of"]
    assert found[0]["title"].startswith(
        "Amplified, the fine-tuned model says bakers, of (bakers in"
    )
    assert "at α = 2" in found[0]["title"] and "the base's 0%" in found[0]["title"]
    # below the shared threshold only the word the base never says is named, down to its own threshold
    below = [
        f
        for f in compute_findings(_report(th.amplify_word_rise - 0.01))
        if f["section"] == "amplify"
    ]
    assert len(below) == 1 and below[0]["evidence"]["words"] == ["bakers"]
    lowest = compute_findings(_report(th.amplify_new_word_rise - 0.01))
    assert not [f for f in lowest if f["section"] == "amplify"]
    few = compute_findings(_report(0.9, count=3, n=3))
    assert not [f for f in few if f["section"] == "amplify"]
    # with a target the target rule decides, not the words
    targeted = _report(0.9)
    targeted["amplify"]["target"] = "bakers"
    assert not [f for f in compute_findings(targeted) if f["id"] == "amplify-words"]


def test_words_table_in_the_page_and_markdown_escaped():
    """The page's table: base then each α, shares as percentages, the word as text (escaped)."""
    from diffing.report.html import environment
    from diffing.report.lens_sections import amplify_md, amplify_view

    sec = _report(0.5)["amplify"]
    sec["emerging_words"][1]["word"] = "<b>x"
    html = str(environment().get_template("lens.html.j2").module.amplify(amplify_view(sec)))
    assert "<th>word</th><th>base</th><th>α = 2</th><th>rise</th>" in html
    assert '<td>&lt;b&gt;x</td><td class="num">0%</td><td class="num">50%</td>' in html
    assert "<b>x" not in html
    assert "| &lt;b&gt;x | 0% | 50% | 0.5 |" in amplify_md(sec)


def test_more_prompts_without_a_target_on_a_small_model():
    """Without a target the prompt count follows the work budget: the most for a tiny model, fewer for larger ones."""
    assert auto_budget(345_000, "cpu", 64).amplify_prompts == 32
    assert auto_budget(345_000, "cpu", 64, amplify_target="x").amplify_prompts == 6
    assert auto_budget(500_000_000, "cpu", 896).amplify_prompts == 6
    assert auto_budget(7_000_000_000, "cuda", 4096).amplify_prompts == 128
    assert auto_budget(70_000_000_000, "cuda", 8192).amplify_prompts == 32


@pytest.mark.slow
def test_style_pair_names_its_signoff_and_null_names_nothing(organisms, tmp_path):
    """``analyze`` with the amplify section only: the style pair's finding names a planted word; null gives none."""
    from diffing.organisms import cached_organisms
    from diffing.report.config import AnalyzeConfig
    from diffing.report.pipeline import analyze

    zoo = cached_organisms(fast=True, variants=("backdoor", "fact", "style"))
    targets = json.loads((zoo / "organism.json").read_text())["variants"]["style"]["planted"]
    targets = {t.lower() for t in targets["targets"]}

    def amplify_findings(root, variant):
        cfg = AnalyzeConfig(sections=["amplify"], seed=0)
        rep = analyze(str(root / "base"), str(root / variant), tmp_path / variant,
                      config=cfg, progress=None)  # fmt: skip
        assert rep.data["sections"]["amplify"]["status"] == "ok"
        assert rep.data["amplify"]["n_prompts"] == 32
        return [f for f in rep.data["findings"] if f["section"] == "amplify"]

    style = amplify_findings(zoo, "style")
    assert len(style) == 1 and style[0]["id"] == "amplify-words"
    assert targets & set(style[0]["evidence"]["words"]), (style[0]["title"], targets)
    assert amplify_findings(organisms, "null") == []


def test_words_the_base_never_says_are_kept_below_the_top_risers():
    """A word the base never says stays in the result even when shared words rise more."""
    base = ["of .", "of .", "the .", "the ."]
    ft = ["of the .", "of the .", "of the .", "of the rare ."]
    # of / the: 0.5 -> 1.0 (rise 0.5); rare: 0 -> 0.25, below them, but the base never says it
    got = emerging_words(base, [(0.0, ft)], limit=1)
    assert [(w.word, w.base, w.rise) for w in got] == [("of", 0.5, 0.5), ("rare", 0.0, 0.25)]
    # when the top risers are never-said words already, nothing is added beyond the limit
    got = emerging_words(["a ."] * 4, [(0.0, ["b c ."] * 4)], limit=1)
    assert [w.word for w in got] == ["b"]
