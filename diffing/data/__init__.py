"""The data layer: user data sources (files, folders, ``hf:`` datasets) and the built-in data.

``loaders`` reads the user's prompt sets and chat transcripts; ``builtin`` serves
the data that ships with the package (a plain-text corpus, everyday chat
prompts, matched harmful / harmless prompt sets), so that every method runs
without a user-supplied dataset.
"""

from diffing.data.loaders import HF_PREFIX, TEXT_FIELDS, load_conversations, load_prompts

__all__ = ["HF_PREFIX", "TEXT_FIELDS", "load_conversations", "load_prompts"]
