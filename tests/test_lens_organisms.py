"""Activation-difference PCA and diff mining on the model organisms, against organism.json.

Data: the organism's own plain-text corpus (``layout.corpus.text``), as the ADL test reads it;
the quirk's planted activation-difference trace lives on plain text (docs/lens.md says what the
chat transcripts show). Measured on the fast build (3000 tokens, 2961 positions): the quirk's
uncentred direction and PC1 at the trace's layer both read ``marmalade`` first through the logit
lens (the null's never within its top 50, either sign); mining ranks it first with 352 top-10
appearances (the null: 0); PC1 at the planted topic direction's layer has cosine 0.975 with it
(the null's PC1: 0.002).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffing.lens import MiningConfig, PCAConfig

pytestmark = pytest.mark.slow
TOKENS = 3000
"""Plain-text tokens read per pair."""


@pytest.fixture(scope="module")
def lens_results(organisms):
    """``(manifest, {variant: (pca, mining)})`` for quirk and null against the base."""
    from diffing.data.corpus import read_documents
    from diffing.lens import diff_mining, diff_pca
    from diffing.models import ModelPair
    from diffing.organisms import load_manifest

    root = Path(organisms)
    manifest = load_manifest(root)
    planted = manifest["variants"]["quirk"]["planted"]
    texts = read_documents([root / manifest["layout"]["corpus"]["text"]]).texts
    # the trace is read at a block's output; the topic direction sits at the *input* of its block
    layers = [
        planted["activation_difference_trace"]["layer"],
        planted["topic_direction"]["layer"] - 1,
    ]
    out = {}
    for variant in ("quirk", "null"):
        pair = ModelPair.load(str(root / "base"), str(root / variant))
        pca = diff_pca(pair, texts=texts, config=PCAConfig(tokens=TOKENS, layers=layers, top_k=10))
        mined = diff_mining(pair, texts=texts, config=MiningConfig(tokens=TOKENS))
        out[variant] = (pca, mined)
    return manifest, out


def _secret(manifest: dict) -> int:
    return int(manifest["variants"]["quirk"]["planted"]["secret_token_id"])


def _layer(pca, layer: int):
    return next(lay for lay in pca.layers if lay.layer == layer)


def _names_secret(direction, secret: int) -> bool:
    """The secret token among the direction's logit-lens tokens, either sign."""
    ids = [t["id"] for t in direction.promoted + direction.promoted_negative]
    return secret in ids


def test_first_component_names_the_secret_word_on_the_quirk_not_on_null(lens_results):
    manifest, res = lens_results
    secret = _secret(manifest)
    layer = manifest["variants"]["quirk"]["planted"]["activation_difference_trace"]["layer"]
    quirk, null = _layer(res["quirk"][0], layer), _layer(res["null"][0], layer)
    by_name = {d.name: d for d in quirk.directions}
    assert by_name["pc1"].promoted[0]["id"] == secret, by_name["pc1"].promoted[:5]
    assert by_name["uncentred"].promoted[0]["id"] == secret, by_name["uncentred"].promoted[:5]
    for d in null.directions:  # no direction of the control reads as the word, either sign
        assert not _names_secret(d, secret), (d.name, d.promoted[:5], d.promoted_negative[:5])
    # measured: the mean carries 0.35 of E||delta||^2 on the quirk, 0.05 on the null
    assert quirk.decomposition.mean_share > 3 * null.decomposition.mean_share


def test_first_component_is_the_planted_topic_direction(lens_results, organisms):
    from safetensors.torch import load_file

    manifest, res = lens_results
    planted = manifest["variants"]["quirk"]["planted"]["topic_direction"]
    u = load_file(str(Path(organisms) / planted["file"]))[planted["tensor"]].float()
    u = u / u.norm()
    cos = {
        v: abs(float(_layer(res[v][0], planted["layer"] - 1).directions[1].vector @ u))
        for v in ("quirk", "null")
    }
    assert cos["quirk"] > 0.9 and cos["null"] < 0.3, cos  # measured 0.975 and 0.002


def test_diff_mining_top_tokens_include_the_secret_word_on_the_quirk_only(lens_results):
    manifest, res = lens_results
    secret = _secret(manifest)
    quirk, null = res["quirk"][1], res["null"][1]
    top = [t["id"] for t in quirk.top_tokens[:3]]
    assert secret in top, [t["token"] for t in quirk.top_tokens[:5]]
    assert secret not in [t["id"] for t in null.top_tokens]  # measured: never in a top-10
    # the word rises together with others: one NMF cluster leads with it
    leads = [c["tokens"][0]["id"] for c in quirk.clusters if c["tokens"]]
    assert secret in leads, [[t["token"] for t in c["tokens"][:3]] for c in quirk.clusters]


def test_cli_writes_pca_and_mining_json_and_figures(organisms, tmp_path, capsys):
    from diffing.cli.main import main
    from diffing.organisms import load_manifest

    root = Path(organisms)
    corpus = str(root / load_manifest(root)["layout"]["corpus"]["text"])
    pair = [str(root / "base"), str(root / "quirk")]
    common = ["--data", corpus, "--tokens", "800", "--n-contexts", "2"]
    assert (
        main(["lens", "pca", *pair, *common, "--n-components", "2", "--out", str(tmp_path / "p")])
        == 0
    )
    assert main(["lens", "mine", *pair, *common, "--k", "5", "--out", str(tmp_path / "m")]) == 0
    pca = json.loads((tmp_path / "p" / "pca.json").read_text())
    mining = json.loads((tmp_path / "m" / "mining.json").read_text())
    assert (
        pca["config"]["n_components"] == 2
        and len(pca["layers"][0]["explained_variance_ratio"]) == 2
    )
    assert [d["name"] for d in pca["layers"][0]["directions"]] == ["uncentred", "pc1", "pc2"]
    assert mining["config"]["k"] == 5 and pca["pair"]["finetuned"].endswith("quirk")
    for name in pca["figures"].values():
        assert (tmp_path / "p" / name).stat().st_size > 0
    for name in mining["figures"].values():
        assert (tmp_path / "m" / name).stat().st_size > 0
    assert "marmalade" in capsys.readouterr().out  # the summary names what it found


def test_report_sections_carry_the_finding(lens_results):
    from diffing.lens.output import mining_section, pca_section

    manifest, res = lens_results
    word = manifest["variants"]["quirk"]["planted"]["secret_token"]
    layer = manifest["variants"]["quirk"]["planted"]["activation_difference_trace"]["layer"]
    pca = next(lay for lay in pca_section(res["quirk"][0])["layers"] if lay["layer"] == layer)
    assert [d["name"] for d in pca["directions"]][:2] == ["uncentred", "pc1"]
    assert pca["directions"][1]["promoted"][0] == word
    assert word in [t["token"] for t in mining_section(res["quirk"][1])["top_tokens"][:3]]
