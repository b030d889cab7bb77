"""The data layer: user data sources (files, folders, ``hf:`` datasets) and the built-in data.

``loaders`` reads the user's prompt sets and chat transcripts; ``builtin`` serves
the data that ships with the package (a plain-text corpus, everyday chat
prompts, matched harmful / harmless prompt sets), so that every method runs
without a user-supplied dataset; ``transcripts`` has the fine-tuned model write
its own chat transcripts (cached) when the data holds none; ``named`` maps short
names (``advbench``, ``fineweb``, ...) to Hugging Face datasets.
"""

from diffing.data.loaders import HF_PREFIX, TEXT_FIELDS, load_conversations, load_prompts
from diffing.data.named import NAMED, NamedDataset, load_named_prompts, resolve_named
from diffing.data.transcripts import Transcripts, TranscriptSettings, self_transcripts

__all__ = [
    "HF_PREFIX",
    "NAMED",
    "TEXT_FIELDS",
    "NamedDataset",
    "TranscriptSettings",
    "Transcripts",
    "load_conversations",
    "load_named_prompts",
    "load_prompts",
    "resolve_named",
    "self_transcripts",
]
