"""The one greedy-generation helper: padding, EOS cuts, prompt encoding, nnsight steps."""

from __future__ import annotations

import pytest
import torch

from diffing.errors import DiffingError
from diffing.generation import (
    cut_at_eos,
    generate_ids,
    greedy_answers,
    left_pad,
    prompt_ids,
    prompt_text,
)

PROMPTS = ["the quick brown fox", "hi", "a much longer prompt about mountains and rivers and lakes"]


def test_left_pad_and_cut_at_eos_known_answers():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(DiffingError, match="no tokens"):
        left_pad([[1], []], 0)
    rows = torch.tensor([[4, 2, 9, 9], [4, 4, 4, 4], [3, 1, 2, 0]])
    assert cut_at_eos(rows, [2, 3]) == [[4], [4, 4, 4, 4], []]
    assert cut_at_eos(rows, [2, 3], keep_eos=True) == [[4, 2], [4, 4, 4, 4], [3]]
    assert cut_at_eos(rows, []) == rows.tolist()


def test_prompt_ids_and_text_forms(tiny_pair):
    tok = tiny_pair.tokenizer
    user = [{"role": "user", "content": "hello"}]
    chat = prompt_ids(tok, "hello", chat=True)
    assert (
        chat == prompt_ids(tok, user, chat=False) == prompt_ids(tok, {"messages": user}, chat=True)
    )
    assert (
        prompt_ids(tok, "hello", chat=False) == tok("hello", add_special_tokens=True)["input_ids"]
    )
    assert len(chat) > len(prompt_ids(tok, "hello", chat=False))  # the template's tokens
    assert prompt_text("hello") == "hello" == prompt_text({"messages": user}) == prompt_text(user)
    with pytest.raises(DiffingError, match="prompt of type int"):
        prompt_ids(tok, 3, chat=True)


def test_batched_answers_equal_each_prompt_alone(tiny_pair):
    """Left padding makes a row's answer independent of its batch mates (HF ``generate`` alone)."""
    tok, ft = tiny_pair.tokenizer, tiny_pair.hf("finetuned")
    got = greedy_answers(ft, tok, PROMPTS, max_new_tokens=8, batch_size=3)
    assert got.chat_template
    for p, answer, tokens in zip(PROMPTS, got.answers, got.tokens):
        ids = torch.tensor([prompt_ids(tok, p, chat=True)])
        alone = ft.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )[0, ids.shape[1] :].tolist()  # fmt: skip
        assert tokens == cut_at_eos([alone], [tok.eos_token_id])[0]
        assert answer == tok.decode(tokens, skip_special_tokens=True)
        assert tok.pad_token_id not in tokens and tok.eos_token_id not in tokens


def test_max_prompt_tokens_keeps_the_last_tokens(tiny_pair):
    tok, ft = tiny_pair.tokenizer, tiny_pair.hf("finetuned")
    full = prompt_ids(tok, PROMPTS[2], chat=False)
    cut = greedy_answers(ft, tok, [PROMPTS[2]], chat=False, max_new_tokens=6, max_prompt_tokens=4)
    ids, mask = left_pad([full[-4:]], tok.pad_token_id)
    new = generate_ids(ft, ids, mask, max_new_tokens=6, pad_id=tok.pad_token_id, eos_ids=[1])
    assert cut.tokens == cut_at_eos(new, [1])
    assert not cut.chat_template


def test_nnsight_model_matches_the_torch_module_and_steps_run_every_token(tiny_pair):
    """The nnsight path gives the HF path's answers; ``step`` runs once per decoding step."""
    tok, lm, arch = tiny_pair.tokenizer, tiny_pair.finetuned, tiny_pair.arch
    plain = greedy_answers(tiny_pair.hf("finetuned"), tok, PROMPTS, max_new_tokens=5)
    assert greedy_answers(lm, tok, PROMPTS, max_new_tokens=5).answers == plain.answers
    from diffing.arch import get_module

    ids, mask = left_pad([prompt_ids(tok, p, chat=True) for p in PROMPTS], tok.pad_token_id)
    widths = []

    def count() -> None:  # the widths block 1 sees: the prompt, then one new token per step
        widths.append(get_module(lm, arch.layers)[1].input.shape[1])

    new = generate_ids(
        lm, ids, mask, max_new_tokens=5, pad_id=tok.pad_token_id, eos_ids=[], step=count
    )
    assert new.shape == (3, 5)
    assert widths == [ids.shape[1], 1, 1, 1, 1]

    def push() -> None:  # a large addition to block 1's input changes the answers
        x = get_module(lm, arch.layers)[1].input  # [batch, seq, d_model]
        x[:] = x + 50.0

    pushed = greedy_answers(lm, tok, PROMPTS, max_new_tokens=5, step=push)
    assert pushed.answers != plain.answers
    with pytest.raises(TypeError, match="nnsight"):
        greedy_answers(tiny_pair.hf("finetuned"), tok, PROMPTS, step=push)
