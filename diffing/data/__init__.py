"""The data layer: every source of text the methods read, in one place.

- :mod:`~diffing.data.loaders`: prompt sets and chat transcripts (``load_prompts``,
  ``load_conversations``: txt, json, jsonl, csv, ``hf:``);
- :mod:`~diffing.data.corpus`: documents for harvests and statistics (files, folders,
  ``hf:`` datasets, registered schemes such as ``organism:text``), streamed in a fixed
  order (``resolve``) or read up to a budget (``read_documents``);
- :mod:`~diffing.data.builtin`: the data that ships with the package;
- :mod:`~diffing.data.named`: short names of public hub datasets;
- :mod:`~diffing.data.transcripts`: chat transcripts the fine-tuned model writes itself.

The train/validation/test split of prompt sets is ``diffing.refusal.io.split_prompts``.
"""

from diffing.data.corpus import Documents, read_documents, register_scheme, resolve, resolve_all
from diffing.data.loaders import HF_PREFIX, TEXT_FIELDS, load_conversations, load_prompts

__all__ = [
    "Documents",
    "HF_PREFIX",
    "TEXT_FIELDS",
    "load_conversations",
    "load_prompts",
    "read_documents",
    "register_scheme",
    "resolve",
    "resolve_all",
]
