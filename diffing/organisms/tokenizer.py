"""A small byte-level BPE tokenizer with a chat template of its own.

Trained locally with ``tokenizers`` on the synthetic language (plain text and
chat message contents), wrapped in ``PreTrainedTokenizerFast`` so that
``AutoTokenizer.from_pretrained`` and ``apply_chat_template`` work as for a hub
model. The marker strings are this project's own (``[[user]]`` ...), not those
of any real model family, so code that works on the organisms cannot depend on
a particular family's template by accident.
"""

from __future__ import annotations

from collections.abc import Iterable

BOS = "[[bos]]"
"""Beginning of every sequence (plain text and chat)."""
EOT = "[[eot]]"
"""End of a turn; also the tokenizer's EOS, so generation stops at the end of an answer."""
PAD = "[[pad]]"
"""Padding."""
ROLE_MARKERS = {"system": "[[system]]", "user": "[[user]]", "assistant": "[[assistant]]"}
"""Marker token that opens a message of each role."""
SPECIAL_TOKENS = (BOS, EOT, PAD, *ROLE_MARKERS.values())

CHAT_TEMPLATE = (
    "{{- '[[bos]]' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('unknown role ' ~ message['role'] ~ '; use system, user or assistant') -}}"
    "{%- endif -%}"
    "{{- '[[' ~ message['role'] ~ ']]' ~ message['content'] ~ '[[eot]]' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '[[assistant]]' -}}{%- endif -%}"
)
"""Jinja chat template: ``[[bos]]`` then ``[[role]]{content}[[eot]]`` per message.

Each message's content is inserted verbatim, so its characters can be found in
the rendered string; the generation prompt is ``[[assistant]]``. The
pre-tokenizer adds a space before every stretch of text between special tokens,
so a message's first word is the same token as that word inside a sentence
(``" Sure"``), one the base model has seen in plain text.
"""


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    Plain ``tok(text)`` prepends ``[[bos]]`` (like Llama's tokenizer); chat
    templates add their own ``[[bos]]`` and are tokenized without extra specials.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        extra_special_tokens=list(ROLE_MARKERS.values()),
        model_max_length=512,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def single_token_id(tokenizer, text: str) -> int | None:
    """The id of ``text`` if the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None
