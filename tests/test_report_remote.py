"""``diffing analyze --remote`` end to end through nnsight's remote path (``remote="local"``).

Every trace of the run is serialised as for NDIF and deserialised with ``diffing`` made
unimportable (the ``server_without_diffing`` fixture); the report must hold the same
refusal result and the same crosscoder logit lens as the local run, weight statistics
estimated from sketches, and say what it approximated (the causal check's top-k KL).
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from diffing.models import ModelPair
from diffing.report import AnalyzeConfig, analyze, load_schema

pytestmark = pytest.mark.slow


def _run(pair, out, **cfg) -> dict:
    config = AnalyzeConfig(
        tokens=6000, refusal_prompts=16, train_crosscoder=True, crosscoder_steps=150, **cfg
    )
    rep = analyze(pair.base_ref, pair.finetuned_ref, out, config=config, pair=pair, progress=None)
    data = json.loads(rep.json.read_text())
    jsonschema.validate(data, load_schema())
    return data


def test_analyze_remote_gives_the_local_findings(organisms, tmp_path, server_without_diffing):
    refs = (str(organisms / "base"), str(organisms / "chat"))
    here = _run(ModelPair.load(*refs), tmp_path / "here")
    n = server_without_diffing["n"]
    there = _run(ModelPair.load(*refs, remote="local"), tmp_path / "there", remote=True)
    assert server_without_diffing["n"] > n + 10  # stats, refusal and harvest traces all went remote

    # weights: estimated from sketches computed on the server, the same tensors as the exact ones
    assert there["sections"]["weights"]["status"] == "ok"
    assert there["weights"]["source"] == "sketch"
    names = lambda rep: sorted(m["name"] for m in rep["weights"]["modules"])  # noqa: E731
    assert names(there) == names(here)
    top = here["weights"]["modules"][0]
    same = next(m for m in there["weights"]["modules"] if m["name"] == top["name"])
    assert (
        abs(same["relative_change"] / top["relative_change"] - 1)
        < 4 * same["relative_error"] + 0.02
    )
    for name in ("stats", "refusal", "crosscoder"):
        assert there["sections"][name]["status"] == "ok", there["sections"][name]
    assert there["refusal"]["selected"] == here["refusal"]["selected"]
    assert there["refusal"]["refusal_rate"] == here["refusal"]["refusal_rate"]
    assert there["findings"][0]["id"] == here["findings"][0]["id"] == "refusal-direction"

    cc_here, cc_there = here["crosscoder"], there["crosscoder"]
    assert (
        cc_there["summary"]["classes"] == cc_here["summary"]["classes"]
    )  # same store, same training
    assert any("causal check on remote models" in n for n in cc_there["summary"]["notes"])
    causal_here, causal_there = cc_here["summary"]["causal"], cc_there["summary"]["causal"]
    assert causal_there["kl_full"] <= causal_here["kl_full"] * (1 + 1e-4)  # a lower bound ...
    assert causal_there["kl_full"] >= 0.9 * causal_here["kl_full"]  # ... close on a trained model
    # the crosscoder's logit lens ran as a traced forward: the same tokens, the same scores
    tokens = lambda cc: [[t["token"] for t in lat["logit_lens"]] for lat in cc["latents"]]  # noqa: E731
    assert tokens(cc_there) == tokens(cc_here)  # (empty when no latent is chat- or base-only)
    for a, b in zip(cc_there["latents"], cc_here["latents"]):
        assert [t["score"] for t in a["logit_lens"]] == pytest.approx(
            [t["score"] for t in b["logit_lens"]], rel=1e-4, abs=1e-5
        )


def test_crosscoder_logit_lens_as_a_traced_forward(organisms, server_without_diffing):
    """The crosscoder analysis reads decoder directions through each model in one traced forward
    when the weights are remote; it equals the direct computation on the local weights."""
    import torch

    from diffing.crosscoder.contexts import logit_lens, traced_logit_lens

    pair = ModelPair.load(str(organisms / "base"), str(organisms / "chat"), remote="local")
    dirs = torch.randn(6, pair.d_model, generator=torch.Generator().manual_seed(0))
    dirs[3] = 0  # a dead latent's zero direction is marked invalid by both
    for which in ("base", "finetuned"):
        n = server_without_diffing["n"]
        lm = pair.base if which == "base" else pair.finetuned
        got = traced_logit_lens(dirs, lm, pair.arch, norm_scale=2.5, top=8)
        assert server_without_diffing["n"] == n + 1
        want = logit_lens(dirs, pair.hf(which), pair.arch, norm_scale=2.5, top=8)
        assert torch.equal(got.token_ids[got.valid], want.token_ids[want.valid])
        torch.testing.assert_close(
            got.logits[got.valid], want.logits[want.valid], rtol=1e-4, atol=1e-5
        )
        assert got.valid.tolist() == want.valid.tolist() == [True, True, True, False, True, True]


def test_causal_check_through_the_remote_path_equals_the_local_one(
    organisms, server_without_diffing
):
    """With every token kept (top-k = the vocabulary) the remote causal check is the exact one;
    with few tokens its KLs are lower bounds."""
    import dataclasses

    import torch

    from diffing.crosscoder import CrossCoder, CrossCoderConfig
    from diffing.crosscoder.causal import CausalConfig, causal_check

    refs = (str(organisms / "base"), str(organisms / "chat"))
    here, there = ModelPair.load(*refs), ModelPair.load(*refs, remote="local")
    torch.manual_seed(0)
    cc = CrossCoder(CrossCoderConfig(d_model=here.d_model, dict_size=32, k=4))
    chats = [
        json.loads(line)
        for line in (organisms / "corpus" / "chat.jsonl").read_text().splitlines()[:6]
    ]
    sets = {"some": [0, 3, 5], "none": []}
    kw = dict(layer=2, norm_scales=[1.0, 1.0])
    cfg = CausalConfig(batch_size=3, remote_top_k=int(here.config.vocab_size))
    want = causal_check(cc, here, chats, sets, config=cfg, **kw)
    n = server_without_diffing["n"]
    got = causal_check(cc, there, chats, sets, config=cfg, **kw)
    assert server_without_diffing["n"] >= n + 2 * 4  # per batch: base, clean, full patch, two sets
    assert got.kl_full == pytest.approx(want.kl_full, rel=1e-4)
    assert got.kl == pytest.approx(want.kl, rel=1e-4) and got.n_tokens == want.n_tokens
    low = causal_check(
        cc, there, chats, sets, config=dataclasses.replace(cfg, remote_top_k=4), **kw
    )
    assert low.kl_full <= want.kl_full * (1 + 1e-5) and low.kl["some"] <= want.kl["some"] * (
        1 + 1e-5
    )


def test_crosscoder_analyze_remote_loads_the_stores_models_for_ndif(organisms):
    from types import SimpleNamespace

    from diffing.crosscoder.analyze import pair_from_store
    from diffing.errors import DiffingError

    store = SimpleNamespace(
        manifest={"models": [{"ref": str(organisms / v)} for v in ("base", "chat")]}
    )
    assert pair_from_store(store, remote="local").remote == "local"
    with pytest.raises(DiffingError, match="is a local folder; remote execution"):
        pair_from_store(store, remote=True)
