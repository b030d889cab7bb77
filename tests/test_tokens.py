"""Chat formatting and per-token roles, found without knowing the template."""

from __future__ import annotations

import pytest

from diffing.errors import DiffingError
from diffing.tiny import tiny_tokenizer
from diffing.tokens import ROLE_IDS, encode, encode_chat, encode_text, pad_batch

CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "tell me how to bake bread"},
    {"role": "assistant", "content": "here is a short answer"},
]

OTHER_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] | upper }}]: {{ m['content'] }} [/END]\n{% endfor %}"
    "{% if add_generation_prompt %}[ASSISTANT]:{% endif %}"
)


@pytest.mark.parametrize("template", [None, OTHER_TEMPLATE])
def test_roles_follow_message_contents(template):
    tok = tiny_tokenizer()
    enc = encode_chat(tok, CHAT, template=template)
    assert enc.input_ids == tok.apply_chat_template(
        CHAT, tokenize=True, chat_template=template, return_dict=False
    )
    for msg in CHAT:
        ids = [t for t, r in zip(enc.input_ids, enc.roles) if r == ROLE_IDS[msg["role"]]]
        assert tok.decode(ids).strip() == msg["content"]
    template_ids = [t for t, r in zip(enc.input_ids, enc.roles) if r == ROLE_IDS["template"]]
    assert template_ids, "the template's own tokens are labelled 'template'"
    assert ROLE_IDS["text"] not in enc.roles


def test_generation_prompt_is_template():
    tok = tiny_tokenizer()
    with_prompt = encode_chat(tok, CHAT[:2], add_generation_prompt=True)
    without = encode_chat(tok, CHAT[:2])
    extra = with_prompt.roles[len(without.roles) :]
    assert extra and all(r == ROLE_IDS["template"] for r in extra)


def test_plain_text_role_and_batch_padding():
    tok = tiny_tokenizer()
    a, b = encode_text(tok, "the quick brown fox"), encode(tok, {"messages": CHAT})
    assert set(a.roles) == {ROLE_IDS["text"]}
    batch = pad_batch([a, b], tok.pad_token_id)
    assert batch.input_ids.shape == (2, len(b.input_ids))
    assert (
        batch.attention_mask[0].sum() == len(a.input_ids) and batch.attention_mask[0, 0] == 1
    )  # right padding
    assert batch.roles[0, : len(a.input_ids)].tolist() == a.roles


def test_no_chat_template_is_a_clear_error():
    tok = tiny_tokenizer(chat_template=None)
    with pytest.raises(DiffingError, match="no chat template.*`template`"):
        encode_chat(tok, CHAT)
    with pytest.raises(DiffingError, match="cannot encode"):
        encode(tok, 42)
