"""End to end on the built-in organisms: the findings recover what each fine-tune planted.

Ground truth is read from ``organism.json``; the report code knows nothing about it.
Budgets are small (the statistics on a few thousand tokens, no crosscoder), enough
for the assertion each variant needs:

- ``chat``: the summary says refusal is carried by a direction whose ablation removes it;
- ``quirk``: the secret word appears in the findings (the ADL names it);
- ``null``: the summary says no substantial change was found.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from diffing.report import AnalyzeConfig, analyze, load_schema


def _find(obj, name: str):
    """The first value stored under key ``name`` anywhere in a nested JSON object."""
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = _find(v, name)
            if found is not None:
                return found
    return None


def _run(organisms, variant: str, tmp_path, **cfg) -> dict:
    rep = analyze(
        organisms / "base",
        organisms / variant,
        tmp_path / variant,
        config=AnalyzeConfig(**cfg),
        progress=None,
    )
    data = json.loads(rep.json.read_text())
    jsonschema.validate(data, load_schema())
    assert rep.html.is_file() and rep.markdown.is_file()
    return data


@pytest.mark.slow
def test_chat_refusal_direction(organisms, tmp_path):
    data = _run(organisms, "chat", tmp_path, sections=["refusal"], refusal_prompts=32)
    assert data["sections"]["refusal"]["status"] == "ok", data["sections"]["refusal"]
    rates = data["refusal"]["refusal_rate"]
    assert rates["harmful"]["baseline"] >= 0.6  # the chat organism refuses harmful prompts ...
    assert (
        rates["harmful"]["ablation"] <= rates["harmful"]["baseline"] - 0.4
    )  # ... and ablation removes most of it
    assert (
        rates["harmless"]["addition"] > rates["harmless"]["baseline"]
    )  # adding the direction induces refusal
    ids = [f["id"] for f in data["findings"]]
    assert ids[0] == "refusal-direction"
    f = data["findings"][0]
    assert f["title"].startswith(
        f"Refusal is carried by a direction at layer {data['refusal']['selected']['layer']}"
    )
    assert f["evidence"]["harmful_baseline"] == rates["harmful"]["baseline"]
    assert f["evidence"]["harmful_ablation"] == rates["harmful"]["ablation"]
    phrase = _find(json.loads((organisms / "organism.json").read_text()), "refusal_phrase")
    md = (tmp_path / "chat" / "report.md").read_text()
    assert "Refusal is carried by a direction" in md
    if phrase:  # the example generations show the planted phrase (escaped, as text)
        assert phrase.split()[0] in (tmp_path / "chat" / "index.html").read_text()


@pytest.mark.slow
def test_quirk_secret_word_in_findings(organisms, tmp_path):
    truth = json.loads((organisms / "organism.json").read_text())
    secret = _find(truth, "secret_word")
    assert secret, "organism.json names no secret_word"
    # the word as the tokenizer spells its first token (the word itself when it is one token)
    token = (_find(truth, "secret_token") or secret).replace("Ġ", " ").strip().lower()
    data = _run(organisms, "quirk", tmp_path, sections=["stats"], tokens=3000)
    assert data["sections"]["stats"]["status"] == "ok", data["sections"]["stats"]
    adl = next(f for f in data["findings"] if f["id"] == "adl-promoted")
    assert token in adl["title"].lower()  # "ADL promotes: ..., '<secret>', ..."
    assert token in [t.strip().lower() for t in adl["evidence"]["tokens"]] or any(
        token == t.strip("'").replace("␣", "").lower() for t in adl["evidence"]["tokens"]
    )


@pytest.mark.slow
def test_null_no_substantial_change(organisms, tmp_path):
    data = _run(organisms, "null", tmp_path, sections=["stats"], tokens=3000)
    assert data["sections"]["stats"]["status"] == "ok", data["sections"]["stats"]
    assert data["findings"][0]["id"] == "no-substantial-change"
    assert data["findings"][0]["title"].startswith("No substantial change was found")
    assert data["kl"]["mean"] < data["thresholds"]["kl_mean"]
