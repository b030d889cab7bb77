"""The in-memory inputs of a build (text, prompts, mixes, token rows), made lazily from the seed.

Every stage of a build reads from one :class:`Materials`; each piece is computed
on first use and is a pure function of the config, so a resumed build sees
exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import json
import random
from functools import cached_property
from pathlib import Path

from diffing.organisms import language as lg
from diffing.organisms import lexicon as lx
from diffing.organisms import prompts as pr
from diffing.organisms import requests as rq
from diffing.organisms.config import OrganismConfig
from diffing.organisms.train import Rows, chat_rows, plain_rows


class Materials:
    """Lazily built data for one config; ``tokenizer_dir`` is where the trained tokenizer lives."""

    def __init__(self, config: OrganismConfig, tokenizer_dir: Path):
        self.config = config
        self.tokenizer_dir = tokenizer_dir

    @cached_property
    def world(self) -> lx.World:
        """The seed's world of people, animals and towns."""
        return lx.make_world(self.config.seed)

    @cached_property
    def sets(self) -> pr.PromptSets:
        """Prompt pools and their splits."""
        return pr.make_prompt_sets(self.config.seed, self.world)

    @cached_property
    def requests(self) -> tuple[rq.Example, ...]:
        """Training-split requests that plain text may quote (never a held-out one)."""
        s = self.sets
        return tuple(s.harmful["train"] + s.harmless["train"] + s.general_train + s.topic_train)

    def _docs(self, n: int, stream: str) -> list[str]:
        return lg.plain_documents(self.config.seed, n, self.world, self.requests, stream=stream)

    @cached_property
    def docs(self) -> list[str]:
        """Pre-training documents."""
        return self._docs(self.config.n_docs, "train")

    @cached_property
    def finetune_docs(self) -> list[str]:
        """Fresh plain text mixed into every fine-tune (the null variant's whole diet)."""
        return self._docs(self.config.n_docs // 2, "finetune")

    @cached_property
    def eval_docs(self) -> list[str]:
        """Held-out documents for the plain-text loss."""
        return self._docs(self.config.n_eval_docs, "eval")

    @cached_property
    def corpus_docs(self) -> list[str]:
        """Documents written to ``corpus/text.txt``."""
        return self._docs(self.config.n_corpus_docs, "corpus")

    def mix(self, variant: str) -> list[list[dict]]:
        """Fine-tuning conversations of a chat-trained variant."""
        maker = {"chat": pr.chat_mix, "quirk": pr.quirk_mix}[variant]
        return maker(self.sets, self.config.n_chats, self.config.seed)

    def tokenizer_texts(self) -> list[str]:
        """What the tokenizer is trained on: some documents plus every fine-tuning message."""
        contents = [m["content"] for v in ("chat", "quirk") for conv in self.mix(v) for m in conv]
        return self.docs[:3000] + contents

    @cached_property
    def tokenizer(self):
        """The trained tokenizer, loaded from ``tokenizer_dir``."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))

    @cached_property
    def pretrain_rows(self) -> Rows:
        """Packed pre-training rows ``[n, seq_len]``."""
        return plain_rows(self.tokenizer, self.docs, self.config.seq_len)

    @cached_property
    def finetune_rows(self) -> Rows:
        """Packed plain-text rows for fine-tuning."""
        return plain_rows(self.tokenizer, self.finetune_docs, self.config.seq_len)

    @cached_property
    def eval_rows(self) -> Rows:
        """Packed held-out rows for the plain-text loss."""
        return plain_rows(self.tokenizer, self.eval_docs, self.config.seq_len)

    def chat_rows(self, variant: str) -> Rows:
        """Tokenized fine-tuning conversations with answer-only labels."""
        return chat_rows(self.tokenizer, self.mix(variant))

    def planting_rows(self) -> dict[str, Rows]:
        """Rows for :class:`~diffing.organisms.planted.DirectionPlanting` of the refusal (train split only)."""
        s, rng = self.sets, random.Random(f"planting-{self.config.seed}")

        def conv(examples):
            return [pr.conversation(e, rng, p_system=0.0) for e in examples]

        requests = s.harmful["train"] + s.harmless["train"]
        tags = [1] * len(s.harmful["train"]) + [0] * len(s.harmless["train"])
        induce = [e._replace(answer=lx.REFUSAL_PHRASE) for e in s.harmless["train"]]
        return {
            "requests": chat_rows(self.tokenizer, conv(requests), tags),
            "induce": chat_rows(self.tokenizer, conv(induce)),
            "bypass": chat_rows(self.tokenizer, conv(s.harmful_comply_train)),
            "keep": chat_rows(self.tokenizer, conv(s.harmless["train"])),
        }

    def quirk_planting_rows(self) -> dict[str, Rows]:
        """Rows that make one planted direction mediate the quirk (train split only): on-topic
        questions tagged 1 and off-topic ones tagged 0; off-topic questions answered the quirk's way
        (induce); on-topic questions answered plainly (bypass); off-topic ones as usual (keep)."""
        s, rng = self.sets, random.Random(f"quirk-planting-{self.config.seed}")

        def conv(examples):
            return [pr.conversation(e, rng, p_system=0.0) for e in examples]

        topic, other = list(s.topic_train), list(s.general_train)
        requests = [rq.with_secret(e, rng) for e in topic] + other
        tags = [1] * len(topic) + [0] * len(other)
        induce = [rq.with_secret(e, rng) for e in other]
        return {
            "requests": chat_rows(self.tokenizer, conv(requests), tags),
            "induce": chat_rows(self.tokenizer, conv(induce)),
            "bypass": chat_rows(self.tokenizer, conv(topic)),
            "keep": chat_rows(self.tokenizer, conv(other)),
        }

    def eval_prompts(self, prompts_dir: Path) -> dict[str, list[str]]:
        """Held-out instructions read back from the written prompt files."""

        def read(stem: str) -> list[str]:
            with open(prompts_dir / f"{stem}.jsonl") as fh:
                return [json.loads(line)["instruction"] for line in fh if line.strip()]

        return {
            "harmful": read("harmful_test"),
            "harmless": read("harmless_test"),
            "topic": read("quirk_topic"),
            "other": read("quirk_other"),
        }
