"""The report layer on fabricated section results: findings, schema, escaping, skipped sections, Markdown."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest

from diffing.report import AnalyzeConfig, compute_findings, load_schema, write_report
from diffing.report.pipeline import empty_report

EVIL = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "a&b'c"]
"""Model-produced strings that must never reach the page unescaped."""


def fabricated() -> dict:
    """A report dict with every section filled with known numbers (and hostile tokens)."""
    cfg = AnalyzeConfig(base="base-model", finetuned="chat-model")
    models = {
        "base": "base-model",
        "finetuned": "chat-model",
        "family": "llama",
        "layers": 4,
        "d_model": 32,
    }
    r = empty_report(cfg, models)
    r["sections"] = {
        n: {"status": "ok", "reason": None, "seconds": 1.0}
        for n in ("weights", "stats", "refusal", "crosscoder")
    }
    r["weights"] = {
        "modules": [
            {
                "name": "model.layers.2.mlp.down_proj.weight",
                "relative_change": 0.31,
                "effective_rank": 3,
            },
            {"name": "model.layers.1.self_attn.o_proj.weight", "relative_change": 0.05},
            {"name": "model.embed_tokens.weight", "relative_change": 0.001},
        ]
    }
    r["activations"] = {
        "layers": [
            {
                "layer": 0,
                "cosine": 0.999,
                "mean_diff_norm": 0.1,
                "relative_norm_change": 0.01,
                "by_role": {"user": {"cosine": 0.999}},
            },
            {
                "layer": 2,
                "cosine": 0.80,
                "mean_diff_norm": 2.0,
                "relative_norm_change": 0.2,
                "by_role": {
                    "user": {"cosine": 0.95, "tokens": 100},
                    "template": {"cosine": 0.55, "tokens": 40},
                },
            },
        ]
    }
    r["kl"] = {
        "mean": 0.42,
        "by_role": {"text": {"mean": 0.05}, "assistant": {"mean": 1.3}, "template": {"mean": 0.7}},
        "top_contexts": [
            {"kl": 5.0, "role": "assistant", "context": "hello " + EVIL[0], "token": EVIL[1]}
        ],
    }
    r["adl"] = {
        "layer": 2,
        "positions": [1, 2, 3],
        "promoted_tokens": [
            {"token": "Ġzebra", "score": 9.0},
            {"token": EVIL[0], "score": 8.0},
            {"token": "moon", "score": 7.0},
            {"token": "$x^$", "score": 6.0},
        ],
        "suppressed_tokens": [{"token": EVIL[1], "score": -3.0}],
        "steering": {
            "examples": [{"prompt": "tell me", "unsteered": "fine", "steered": "zebra " + EVIL[0]}]
        },
    }
    r["refusal"] = {
        "selected": {"layer": 2, "position": -1},
        "refusal_rate": {
            "harmful": {"baseline": 0.94, "ablation": 0.06, "addition": 1.0},
            "harmless": {"baseline": 0.02, "ablation": 0.0, "addition": 0.81},
        },
        "kl_harmless": {"ablation": 0.03, "addition": 1.2},
        "cosine_by_layer": [0.1, 0.5, 0.9, 0.8],
        "directions_by_layer": [
            {
                "layer": k,
                "position": -1,
                "norm": 1.0 + k,
                "bypass": -k,
                "induce": 0.5,
                "kl": 0.01,
                "valid": k < 3,
            }
            for k in range(4)
        ],
        "base_direction_ablates_finetuned": {
            "refusal_rate": {
                "harmful": {"baseline": 0.94, "finetuned_direction": 0.06, "base_direction": 0.5}
            }
        },
        "refusal_phrases": ["I refuse " + EVIL[1]],
        "examples": [
            {"prompt": EVIL[2], "baseline": "I refuse " + EVIL[0], "ablation": "Sure " + EVIL[1]}
        ],
    }
    r["crosscoder"] = {
        "summary": {
            "counts": {"chat_only": 3, "base_only": 1, "shared": 200},
            "fvu": {"base": 0.2, "finetuned": 0.25},
            "decoder_bias": {  # below the constant_shift threshold: rendered, no finding
                "norm": 0.3,
                "constant_fraction": 0.1,
                "bias_cosine": 0.97,
                "logit_lens": {"finetuned": [{"token": EVIL[2]}, {"token": "jam"}]},
            },
        },
        "latents": [
            {
                "index": 17,
                "delta": 0.97,
                "nu_error": 0.05,
                "nu_reconstruction": 0.1,
                "logit_lens": [{"token": "zebra", "score": 3.0}, {"token": EVIL[0], "score": 2.0}],
                "top_contexts": [{"tokens": ["the", EVIL[1], "zebra"], "acts": [0.0, 0.5, 2.0]}],
            },
            {"index": 3, "delta": 0.95, "nu_error": 0.8, "nu_reconstruction": 0.1},
            {"index": 4, "delta": 0.5, "nu_error": 0.3, "nu_reconstruction": 0.3},
        ],
    }
    return r


def test_findings_read_the_numbers():
    found = {f["id"]: f for f in compute_findings(fabricated())}
    assert len(found) == 5  # the summary is capped at five
    ref = found["refusal-direction"]
    assert "layer 2" in ref["title"] and "94%" in ref["title"] and "to 6%" in ref["title"]
    assert (
        ref["evidence"]["harmful_baseline"] == 0.94 and ref["evidence"]["harmful_ablation"] == 0.06
    )
    assert ref["anchor"] == "#refusal"
    assert "'␣zebra'" in found["adl-promoted"]["title"]  # leading space made visible
    cc = found["crosscoder-chat-only"]
    assert cc["evidence"] == {
        "chat_only": 3,
        "genuine_chat_only": 1,
        "top_latent": 17,
        "top_latent_tokens": ["'zebra'", f"'{EVIL[0]}'"],
    }
    assert found["kl-hot-role"]["evidence"]["role"] == "assistant"
    assert "no-substantial-change" not in found
    # the sixth and seventh candidates (weights, activations) are cut; order is by importance
    ids = [f["id"] for f in compute_findings(fabricated())]
    assert ids[0] == "refusal-direction"


def test_constant_shift_finding():
    r = fabricated()
    assert "crosscoder-constant-shift" not in {f["id"] for f in compute_findings(r, limit=10)}
    r["crosscoder"]["summary"]["decoder_bias"]["constant_fraction"] = 0.41
    found = {f["id"]: f for f in compute_findings(r, limit=10)}
    shift = found["crosscoder-constant-shift"]
    assert shift["title"].startswith("41% of the activation difference is one constant shift")
    assert (
        shift["evidence"]["tokens"] == [f"'{EVIL[2]}'", "'jam'"]
        and shift["anchor"] == "#crosscoder"
    )


def test_findings_activation_and_weight_rules():
    r = fabricated()
    r["refusal"] = r["crosscoder"] = r["adl"] = None
    found = {f["id"]: f for f in compute_findings(r)}
    assert (
        found["weights-top-module"]["evidence"]["module"] == "model.layers.2.mlp.down_proj.weight"
    )
    assert found["weights-top-module"]["evidence"]["modules_above_threshold"] == 2
    act = found["activations-peak"]["evidence"]
    assert (
        act["layer"] == 2
        and act["role"] == "template"
        and act["role_cosine"] == pytest.approx(0.55)
    )


def test_no_substantial_change():
    r = fabricated()
    r["refusal"] = r["crosscoder"] = None
    r["weights"]["modules"] = [{"name": "w", "relative_change": 0.004}]
    r["kl"] = {"mean": 0.002, "by_role": {"text": {"mean": 0.002}}}
    for e in r["activations"]["layers"]:
        e["cosine"] = 0.9995
        e["by_role"] = {}
    found = compute_findings(r)
    assert found[0]["id"] == "no-substantial-change"
    assert found[0]["evidence"]["kl_mean"] == 0.002 and found[0]["anchor"] == "#kl"
    assert not any(
        f["id"] in ("kl-hot-role", "weights-top-module", "activations-peak") for f in found
    )
    # one large measure is enough to withdraw the verdict
    r["kl"]["mean"] = 0.5
    assert all(f["id"] != "no-substantial-change" for f in compute_findings(r))


def test_report_files_schema_and_escaping(tmp_path):
    rep = write_report(fabricated(), tmp_path)
    data = json.loads(rep.json.read_text())
    jsonschema.validate(data, load_schema())
    assert data["weights"]["modules"][0]["relative_change"] == 0.31
    assert data["refusal"]["refusal_rate"]["harmful"]["ablation"] == 0.06
    assert [f["id"] for f in data["findings"]] == [f["id"] for f in rep.findings]
    page = rep.html.read_text()
    for bad in ("<script", "<img src=x", "onerror=alert"):
        assert bad not in page.replace("&lt;script", "").replace("onerror=alert(2)&gt;", ""), bad
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # quotes become entities too (markupsafe spells them &#34; and &#39;), so no attribute is closed
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "a&amp;b&#39;c" in page
    assert "http://" not in page.replace("https://", "") and "<link" not in page  # nothing fetched
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert imgs and all(src.startswith("data:image/png;base64,") for src in imgs)
    for anchor in (
        "summary",
        "setup",
        "weights",
        "activations",
        "kl",
        "adl",
        "refusal",
        "crosscoder",
        "methods",
        "reproduce",
    ):
        assert f'<section id="{anchor}">' in page
    for f in data["findings"]:  # each finding links to a section of the page
        assert f'id="{f["anchor"][1:]}"' in page
    md = rep.markdown.read_text()
    assert "Refusal is carried by a direction at layer 2" in md and "<script" not in md
    assert AnalyzeConfig.load(rep.config).finetuned == "chat-model"


def test_skipped_section_renders_reason(tmp_path):
    r = fabricated()
    r["refusal"] = None
    r["sections"]["refusal"] = {
        "status": "skipped",
        "reason": "no prompt sets: pass --harmful",
        "seconds": 0.0,
    }
    r["sections"]["crosscoder"] = {
        "status": "failed",
        "reason": "RuntimeError: <boom>",
        "seconds": 0.1,
    }
    r["crosscoder"] = None
    rep = write_report(copy.deepcopy(r), tmp_path)
    page = rep.html.read_text()
    refusal = page.split('<section id="refusal">')[1].split("</section>")[0]
    assert "skipped:</strong> no prompt sets: pass --harmful" in refusal
    assert "RuntimeError: &lt;boom&gt;" in page
    assert "␣zebra" in page.split('<section id="adl">')[1]  # the other sections still render
    jsonschema.validate(json.loads(rep.json.read_text()), load_schema())
