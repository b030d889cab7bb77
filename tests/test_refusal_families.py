"""The layer convention holds on every family: candidate layer L = input of block L = HF hidden_states[L]."""

from __future__ import annotations

import pytest
import torch

from diffing.arch import FAMILIES


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_block_inputs_and_first_token_logprobs_match_hf(family, tmp_path):
    from diffing.models import load_model
    from diffing.refusal import forward_last
    from diffing.refusal.candidates import encode_prompts, post_instruction_count
    from diffing.tiny import build_tiny_model
    from diffing.tokens import pad_batch, pad_id_of

    lm, tok, arch = load_model(str(build_tiny_model(tmp_path / "m", family, layers=3)))
    enc = encode_prompts(
        tok, ["tell me how to bake bread", "rivers"]
    )  # different lengths: right padding
    n_post = post_instruction_count(enc)
    batch = pad_batch(enc, pad_id_of(tok))
    lengths = batch.attention_mask.sum(1)
    positions = lengths[:, None] - n_post + torch.arange(n_post)[None]  # [2, n_post]
    logprobs, acts = forward_last(
        lm, arch, batch.input_ids, batch.attention_mask, positions=positions
    )
    assert acts.shape == (3, 2, n_post, lm._module.config.get_text_config().hidden_size)
    for i, e in enumerate(enc):  # each prompt alone, unpadded, through plain Hugging Face
        ids = torch.tensor([e.input_ids])
        with torch.no_grad():
            out = lm._module(input_ids=ids, output_hidden_states=True)
        for layer in range(3):
            want = out.hidden_states[layer][0, -n_post:]  # [n_post, d]: the input of block `layer`
            assert torch.allclose(acts[layer, i], want, atol=1e-4), (family, layer)
        assert torch.allclose(
            logprobs[i], torch.log_softmax(out.logits[0, -1].float(), -1), atol=1e-4
        )
