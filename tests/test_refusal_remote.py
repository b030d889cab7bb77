"""The refusal pipeline through nnsight's remote path (``remote="local"``), as on NDIF.

nnsight's ``remote="local"`` serialises every trace exactly as for NDIF, deserialises it
with the user's own modules hidden, and runs it here; the ``server_without_diffing`` fixture
(conftest) also blocks the editable install's finder, so a block that reached toolkit code
by reference (not shipped by value) fails here as it would on the server.
"""

from __future__ import annotations

import pytest
import torch

from diffing.errors import DiffingError


@pytest.fixture(scope="module")
def chat_models(organisms):
    """The organism chat model loaded twice: traced here, and traced through the remote path."""
    from diffing.models import load_model

    here = load_model(str(organisms / "chat"))
    remote = load_model(str(organisms / "chat"), remote="local")
    return here, remote


def _prompts(organisms, name: str, n: int) -> list[str]:
    from diffing.refusal import read_prompts

    return read_prompts(organisms / "prompts" / f"{name}.jsonl")[:n]


def test_interventions_give_the_same_results_remotely(
    chat_models, organisms, server_without_diffing
):
    from diffing.refusal.candidates import encode_prompts
    from diffing.refusal.evaluation import text_loss
    from diffing.refusal.interventions import ablate, add, complete, forward_last
    from diffing.tokens import pad_batch, pad_id_of

    (lm, tok, arch), (rlm, _, _) = chat_models
    prompts = _prompts(organisms, "harmful_test", 4)
    enc = pad_batch(encode_prompts(tok, prompts), pad_id_of(tok))  # right-padded
    d_model = lm._module.config.hidden_size
    u = torch.randn(d_model, generator=torch.Generator().manual_seed(0))
    ivs = [ablate(u), add(u, 1, 0.5)]
    positions = torch.tensor([[0, 1]] * len(prompts))  # [batch, 2]
    lp, acts = forward_last(lm, arch, enc.input_ids, enc.attention_mask, ivs, positions=positions)
    n = server_without_diffing["n"]
    rlp, racts = forward_last(
        rlm, arch, enc.input_ids, enc.attention_mask, ivs, positions=positions
    )
    assert server_without_diffing["n"] == n + 1  # it did go through the remote path
    assert acts.shape == racts.shape == (lm._module.config.num_hidden_layers, 4, 2, d_model)
    torch.testing.assert_close(rlp, lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(racts, acts, rtol=1e-5, atol=1e-5)
    # the ablation really acted in the remote run: no block input keeps a component along u
    assert float((racts @ (u / u.norm())).abs().max()) < 1e-4

    texts = complete(lm, tok, arch, prompts, [ablate(u)], max_new_tokens=6)
    assert complete(rlm, tok, arch, prompts, [ablate(u)], max_new_tokens=6) == texts
    docs = (organisms / "corpus" / "text.txt").read_text().splitlines()[:4]
    assert text_loss(rlm, arch, tok, docs, [ablate(u)]) == pytest.approx(
        text_loss(lm, arch, tok, docs, [ablate(u)]), rel=1e-5
    )


def test_extraction_selects_the_same_direction_remotely(
    chat_models, organisms, server_without_diffing
):
    from diffing.refusal import RefusalConfig
    from diffing.refusal.pipeline import extract_direction

    (lm, tok, arch), (rlm, _, _) = chat_models
    sets = [
        _prompts(organisms, f"{s}_{split}", n)
        for split, n in (("train", 16), ("val", 8))
        for s in ("harmful", "harmless")
    ]
    cfg = RefusalConfig(n_train=16, n_val=8, max_new_tokens=6, phrase_tokens=6)
    cfg.kl_threshold, cfg.induce_threshold = float("inf"), float("-inf")
    here = extract_direction(lm, tok, arch, *sets, config=cfg)
    n = server_without_diffing["n"]
    there = extract_direction(rlm, tok, arch, *sets, config=cfg)
    assert server_without_diffing["n"] > n
    assert (there.direction.layer, there.direction.position) == (
        here.direction.layer,
        here.direction.position,
    )
    torch.testing.assert_close(
        there.candidates.vectors, here.candidates.vectors, rtol=1e-4, atol=1e-5
    )
    assert there.direction.refusal_phrases == here.direction.refusal_phrases


def test_remote_needs_hub_ids_and_cannot_export(organisms, tmp_path, capsys):
    from diffing.cli.main import main
    from diffing.models import load_model

    prompts = organisms / "prompts"
    for args in (
        ["extract", str(organisms / "chat"), "--out", str(tmp_path / "x")],
        ["compare", str(organisms / "base"), str(organisms / "chat"), "--out", str(tmp_path / "y")],
    ):
        sets = ["--harmful", str(prompts / "harmful_train.jsonl")]
        sets += ["--harmless", str(prompts / "harmless_train.jsonl")]
        assert main(["refusal", *args, *sets, "--remote"]) == 2
        err = capsys.readouterr().err.strip()
        assert "is a local folder; remote execution (NDIF)" in err and "\n" not in err
    from diffing.refusal.orthogonalize import orthogonalize_model
    from diffing.tiny import build_tiny_model

    with pytest.raises(DiffingError, match="local folder"):
        load_model(str(organisms / "chat"), remote=True)
    with pytest.raises(DiffingError, match="remote must be"):
        load_model(str(organisms / "chat"), remote="ndif")
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = build_tiny_model(tmp_path / "m", "llama")
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    from diffing.arch import arch_for

    with pytest.raises(DiffingError, match="weights are not here"):
        orthogonalize_model(meta, torch.ones(meta.config.hidden_size), arch_for(meta.config))
