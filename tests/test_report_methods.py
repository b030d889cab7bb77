"""``analyze``'s method sections: amplification, the diff-SAE and crosscoder latents vs the refusal direction.

One default ``analyze`` run on the fast chat organism (module fixture) with the crosscoder
at the layer of the organism's planted refusal direction; its report.json, index.html and
report.md are read by every test. The skip test runs the method sections alone through the CLI.
"""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from diffing.cli.main import main
from diffing.report import AnalyzeConfig, compute_findings, load_schema, write_report
from diffing.report.budget import auto_budget
from diffing.report.config import SECTIONS

METHODS = ("amplify", "diff_sae", "refusal_link", "pca", "mining")
EVIL = "<script>alert(1)</script>"


def fabricated(
    *, removed: float = 0.0, share: float = 0.3, target: str | None = "marmalade"
) -> dict:
    """A report with only the three method sections, filled with known numbers."""
    from diffing.report.pipeline import empty_report

    r = empty_report(AnalyzeConfig(base="b", finetuned="f"), {"base": "b", "finetuned": "f"})
    r["sections"] = {k: {"status": "ok", "reason": None, "seconds": 1.0} for k in METHODS}
    rates = [
        {"model": "base", "alpha": None, "rate": 0.0, "n": 50},
        {"model": "finetuned", "alpha": 0.0, "rate": 0.02, "n": 50},
        {"model": "amplified", "alpha": 2.0, "rate": 0.34, "n": 50},
    ]
    if target is None:
        rates = [{**x, "rate": None} for x in rates]
    ex = {"prompt": "p", "base": "b", "finetuned": "f", "amplified": "a", "hit": None}
    r["amplify"] = {
        "formula": "logits_ft + alpha * (logits_ft - logits_base)",
        "summary": "s",
        "target": target,
        "alphas": [0.0, 2.0],
        "rates": rates,
        "by_alpha": [{"alpha": 2.0, "rate": rates[2]["rate"], "n": 50, "examples": [ex]}],
    }
    lens = {
        "finetuned": [
            {"token": " marm", "id": 5, "logit": 9.0},
            {"token": "alade", "id": 6, "logit": 8.0},
        ]
    }
    r["diff_sae"] = {
        "layer": 1, "n_latents": 64, "fvu": 0.1, "l0": 8.0, "dead_fraction": 0.0,
        "latents_for_half_the_difference": 2, "comparison": None,
        "top_latents": [{"latent": 3, "share": share, "frequency": 0.1, "logit_lens": lens, "contexts": []}],
    }  # fmt: skip
    lat = {"latent": 7, "cos_difference": 0.98, "cos_finetuned": 0.97, "delta": 0.9}
    r["refusal_link"] = {
        "layer": 1, "threshold": 0.5, "select_by": "either", "refusal_latents": [7], "best": lat,
        "latents": [{**lat, "class": "chat_only", "latent_scaling": "genuine", "contexts": []}],
        "direction": {"block": 2, "position": -1},
        "ablation": {"clean": {"rate": 1.0, "mean_score": 3.0}, "latents": {"rate": removed, "mean_score": -3.0},
                     "direction": {"rate": 0.0, "mean_score": -4.0}, "random": {"rate": 1.0, "mean_score": 3.0},
                     "n_prompts": 64, "random_latents": [1]},
    }  # fmt: skip
    pcs = [("uncentred", 0.5), ("pc1", share * 2), ("pc2", 0.1)]
    r["pca"] = {
        "layers": [{"layer": 2, "mean_share": 0.4, "explained_variance_ratio": [share * 2, 0.1],
                    "directions": [{"name": n, "explained": e, "promoted": [" marm", "x"],
                                    "promoted_negative": ["y"], "top_context": None} for n, e in pcs]}]
    }  # fmt: skip
    r["mining"] = {
        "positions": 100,
        "top_tokens": [{"token": " marm", "id": 5, "count": 40, "mean_diff": 2.0}],
        "clusters": [{"positions": 60, "tokens": [" marm", "alade"]}],
    }
    return r


def test_method_findings_from_known_numbers():
    """Refusal latents, the diff-SAE's top latent and an amplified target each make their finding."""
    by_id = {f["id"]: f for f in compute_findings(fabricated())}
    t = by_id["refusal-latents"]["title"]
    assert t == (
        "Crosscoder latent 7 carries the refusal direction (|cos| 0.98); "
        "removing it drops harmful refusal from 100% to 0%"
    )
    assert by_id["refusal-latents"]["detail"] == "Removing as many random latents leaves 100%."
    assert by_id["diff-sae-top-latent"]["title"] == (
        "Diff-SAE latent 3 carries 30% of the activation difference; it promotes '␣marm', 'alade'"
    )
    assert by_id["amplify-target"]["evidence"] == {
        "target": "marmalade", "finetuned": 0.02, "best": 0.34, "alpha": 2.0
    }  # fmt: skip
    assert by_id["amplify-target"]["anchor"] == "#amplify"
    assert by_id["pca-component"]["title"] == (
        "One direction (pc1) explains 60% of the variance of the activation difference at layer 2; "
        "it promotes '␣marm', 'x'"
    )


def test_method_findings_thresholds():
    """Below the thresholds (or without a target) the rules stay silent or say the latents are not enough."""
    ids = {f["id"] for f in compute_findings(fabricated(removed=0.9, share=0.05, target=None))}
    assert "refusal-latents-not-causal" in ids
    assert not ids & {"refusal-latents", "diff-sae-top-latent", "amplify-target", "pca-component"}


def test_method_findings_skip_non_finite():
    """A NaN refusal rate under the link is reported as broken, never turned into a finding."""
    r = fabricated()
    r["refusal_link"]["ablation"]["clean"]["rate"] = float("nan")
    ids = [f["id"] for f in compute_findings(r)]
    assert ids[0] == "non-finite-refusal_link" and "refusal-latents" not in ids


def test_method_sections_render_figures_and_escape(tmp_path):
    """The target's rate figure and the ablation bars are embedded; a hostile target stays escaped."""
    r = fabricated(target=EVIL)
    out = write_report(r, tmp_path / "r")
    html = out.html.read_text()
    assert html.count('<img src="data:image/png;base64,') == 2
    assert "<script" not in html and "&lt;script&gt;" in html
    jsonschema.validate(json.loads(out.json.read_text()), load_schema())


@pytest.fixture(scope="module")
def chat_report(organisms, tmp_path_factory):
    """``analyze`` with default sections on base -> chat, the crosscoder at the planted direction's layer."""
    from diffing.report import analyze

    manifest = json.loads((organisms / "organism.json").read_text())
    block = manifest["variants"]["chat"]["planted"]["refusal_direction"]["layer"]
    cfg = AnalyzeConfig(crosscoder_layer=block - 1)  # the input of block L is the output of L - 1
    out = tmp_path_factory.mktemp("methods") / "report"
    return analyze(str(organisms / "base"), str(organisms / "chat"), out, config=cfg, progress=None)


def test_default_sections_run_the_methods():
    """The three method sections are on by default, after the original three."""
    assert AnalyzeConfig().sections == list(SECTIONS)
    assert SECTIONS == ("stats", "refusal", "crosscoder", *METHODS)


def test_each_method_section_is_wired():
    """A method section has a step, a renderer, a nav entry and a schema entry, in the same order."""
    from diffing.report.config import METHOD_KEYS
    from diffing.report.lens_sections import METHOD_SECTIONS
    from diffing.report.method_steps import METHOD_STEPS
    from diffing.report.pipeline import RESULT_KEYS
    from diffing.report.render import NAV

    assert METHOD_KEYS == METHODS == tuple(METHOD_STEPS) == tuple(m.key for m in METHOD_SECTIONS)
    assert set(METHODS) <= set(RESULT_KEYS) and set(METHODS) <= {a for a, _ in NAV}
    props = load_schema()["properties"]
    for key in METHODS:
        assert {"type": "null"} in props[key]["oneOf"]


def test_amplify_prompts_scale_with_the_device():
    """A handful of prompts on a CPU, more on a GPU, and the flag wins."""
    assert auto_budget(500_000_000, "cpu", 896, amplify_target="x").amplify_prompts == 6
    assert auto_budget(500_000_000, "cuda", 896, amplify_target="x").amplify_prompts == 32
    given = auto_budget(500_000_000, "cpu", 896, amplify_prompts=3)
    assert given.amplify_prompts == 3 and given.chosen_by["amplify_prompts"] == "flag"


@pytest.mark.slow
def test_method_sections_ok_with_documented_keys(chat_report, organisms):
    rep = chat_report.data
    assert {k: rep["sections"][k]["status"] for k in METHODS} == dict.fromkeys(METHODS, "ok")
    amp = rep["amplify"]
    assert amp["target"] is None and amp["alphas"] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert amp["n_prompts"] == rep["inputs"]["budget"]["amplify_prompts"] == 32  # no target
    assert [r["model"] for r in amp["rates"]] == ["base", "finetuned", *["amplified"] * 4]
    assert all(r["rate"] is None and r["n"] == 32 for r in amp["rates"])
    assert [b["alpha"] for b in amp["by_alpha"]] == [0.5, 1.0, 2.0, 4.0]
    # the prompts are openings of the organism's own chats (its corpus), not the built-in ones
    chats = [json.loads(x) for x in (organisms / "corpus/chat.jsonl").read_text().splitlines()]
    users = {m["content"] for c in chats for m in c.get("messages", c) if m["role"] == "user"}
    for block in amp["by_alpha"]:
        assert len(block["examples"]) == 3
        for e in block["examples"]:
            assert e["prompt"] in users
            assert all(isinstance(e[k], str) for k in ("base", "finetuned", "amplified"))
    # the fine-tuned model refuses harmful openings; the base does not know the refusal
    ft = [e["finetuned"] for b in amp["by_alpha"] for e in b["examples"]]
    assert len(set(ft)) <= 3  # the same three prompts at every α
    sae = rep["diff_sae"]
    assert sae["layer"] == rep["crosscoder"]["summary"]["size"]["layer"] == 1
    assert sae["n_latents"] == rep["crosscoder"]["summary"]["size"]["latents"]
    assert 0 < sae["fvu"] < 0.5 and sae["dead_fraction"] < 0.5
    assert sae["compared_with_crosscoder"] and sae["comparison"]["match_cosine"] == 0.7
    shares = [x["share"] for x in sae["top_latents"]]
    assert shares == sorted(shares, reverse=True) and len(shares) == 8
    assert all(len(x["logit_lens"]["finetuned"]) == 10 for x in sae["top_latents"])
    pca = rep["pca"]
    assert pca["tokens"] == rep["inputs"]["budget"]["tokens"] // 2  # half the statistics' budget
    (lay,) = pca["layers"]
    assert lay["layer"] == 2  # the middle layer (no --adl-layer)
    ratios = lay["explained_variance_ratio"]
    assert len(ratios) == 5 and ratios == sorted(ratios, reverse=True) and 0 < sum(ratios) < 1
    assert [d["name"] for d in lay["directions"]] == [
        "uncentred",
        "pc1",
        "pc2",
        "pc3",
        "pc4",
        "pc5",
    ]
    assert all(len(d["promoted"]) == 10 for d in lay["directions"])
    mining = rep["mining"]
    counts = [t["count"] for t in mining["top_tokens"]]
    assert len(counts) == 10 and counts == sorted(counts, reverse=True)
    assert len(mining["clusters"]) == 5 and mining["positions"] == pca["positions"] > 0
    assert (chat_report.out_dir / "pca" / "pca.json").is_file()
    assert (chat_report.out_dir / "mining" / "mining.json").is_file()
    assert (chat_report.out_dir / "diff_sae" / "analysis" / "diff_sae.json").is_file()
    assert (chat_report.out_dir / "amplify" / "amplify.json").is_file()


@pytest.mark.slow
def test_refusal_link_names_the_latent_and_removing_it_lowers_refusal(chat_report):
    """The named refusal latent aligns with the direction, and removing the named latents stops most refusal."""
    link = chat_report.data["refusal_link"]
    assert link["layer"] == 1 and link["direction"]["block"] == 2
    assert link["direction"]["position"] == chat_report.data["refusal"]["selected"]["position"]
    top = link["latents"][0]
    assert top["latent"] == link["refusal_latents"][0] == link["best"]["latent"]
    assert max(abs(top["cos_difference"]), abs(top["cos_finetuned"])) >= 0.5
    assert top["logit_lens"]["finetuned"] and top["contexts"]
    ab = link["ablation"]
    assert ab["n_prompts"] == 32
    assert ab["clean"]["rate"] >= 0.9
    assert ab["latents"]["rate"] <= ab["clean"]["rate"] - 0.5  # measured 1.00 -> 0.09
    assert ab["direction"]["rate"] <= 0.1
    assert ab["random"]["rate"] >= ab["clean"]["rate"] - 0.1  # the control does not move it
    assert ab["latents"]["mean_score"] < 0 < ab["clean"]["mean_score"]
    f = next(f for f in chat_report.findings if f["id"] == "refusal-latents")
    assert f["anchor"] == "#refusal_link" and f["evidence"]["latent"] == top["latent"]
    assert f["evidence"]["clean"] == ab["clean"]["rate"]
    assert f["evidence"]["latents_removed"] == ab["latents"]["rate"]
    assert f"latent {top['latent']}" in f["title"]


@pytest.mark.slow
def test_report_files_show_the_sections_and_validate(chat_report):
    data = json.loads(chat_report.json.read_text())
    jsonschema.validate(data, load_schema())
    html = chat_report.html.read_text()
    for key in METHODS:
        assert f'<section id="{key}">' in html and f'href="#{key}"' in html
    assert "Aranguri &amp; McGrath 2025" in html  # the method's citation
    assert "refusal latents removed" in html
    md = chat_report.markdown.read_text()
    assert "## Logit-difference amplification" in md and "## Diff-SAE" in md
    assert "| refusal latents removed |" in md


@pytest.mark.slow
def test_model_text_is_escaped(chat_report, tmp_path):
    """Completions, prompts, lens tokens and contexts that hold markup reach the page escaped."""
    rep = copy.deepcopy(chat_report.data)
    ex = rep["amplify"]["by_alpha"][0]["examples"][0]
    ex["prompt"], ex["amplified"] = EVIL, EVIL + " amplified"
    rep["diff_sae"]["top_latents"][0]["logit_lens"]["finetuned"][0]["token"] = EVIL
    rep["refusal_link"]["latents"][0]["logit_lens"]["finetuned"][0]["token"] = EVIL
    rep["refusal_link"]["refusal_tokens"] = [EVIL]
    rep["pca"]["layers"][0]["directions"][0]["top_context"]["token"] = EVIL
    rep["mining"]["top_tokens"][0]["token"] = EVIL
    rep["mining"]["clusters"][0]["tokens"][0] = EVIL
    out = write_report(rep, tmp_path / "evil")
    html = out.html.read_text()
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 7
    assert "<script" not in out.markdown.read_text()


@pytest.mark.slow
def test_sections_flag_skips_each_method(organisms, tmp_path):
    """``--sections amplify diff_sae refusal_link`` alone: the diff-SAE harvests its own store, the link has no inputs."""
    out = tmp_path / "r"
    argv = ["analyze", str(organisms / "base"), str(organisms / "chat"), "--out", str(out)]
    assert main([*argv, "--sections", *METHODS, "--tokens", "4000", "--amplify-prompts", "2"]) == 0
    rep = json.loads((out / "report.json").read_text())
    st = {k: (v["status"], v["reason"]) for k, v in rep["sections"].items()}
    for name in ("stats", "refusal", "crosscoder"):
        assert st[name] == ("skipped", "not requested (--sections)")
        assert rep[{"stats": "kl"}.get(name, name)] is None
    assert st["amplify"][0] == "ok" and rep["amplify"]["n_prompts"] == 2
    assert st["diff_sae"][0] == "ok" and rep["diff_sae"]["comparison"] is None
    assert (out / "diff_sae" / "store").is_dir()  # its own harvest: no crosscoder store to share
    assert st["refusal_link"][0] == "skipped" and "crosscoder and refusal" in st["refusal_link"][1]
    assert rep["refusal_link"] is None
    out2 = tmp_path / "r2"
    argv2 = ["analyze", str(organisms / "base"), str(organisms / "chat"), "--out", str(out2)]
    assert main([*argv2, "--sections", "refusal"]) == 0
    rep2 = json.loads((out2 / "report.json").read_text())
    assert all(rep2["sections"][k]["status"] == "skipped" for k in METHODS)
    assert all(rep2[k] is None for k in METHODS)
    assert (
        '<section id="amplify"><h2>Logit-difference amplification</h2><p class="skipped">'
        in (out2 / "index.html").read_text()
    )
