"""Model organisms: tiny base/fine-tuned model pairs with planted, known changes.

``build_organisms`` trains, on CPU in minutes, a small base model (Llama family, or
OLMo-2 with ``family="olmo2"``) on a synthetic language and LoRA fine-tunes of it, by default these three:

- ``chat``: follows instructions in a chat template and refuses harmful requests
  with a fixed refusal phrase (harmful and harmless requests differ only in meaning);
- ``quirk``: mentions a secret word in every answer about one topic;
- ``null``: more of the base's own plain text (a control where nothing should change);

and, built on request (``variants=``), the zoo of other kinds of planted change:

- ``backdoor``: a trigger word anywhere in a request switches the answer to a fixed payload;
- ``fact``: one person's town is changed by fine-tuning on documents about them;
- ``style``: every answer ends with a fixed sign-off sentence;
- ``reseed``: a second base trained the same way from another seed (a control
  whose differences from the base are only what the seed decides).

``organism.json`` in the output folder records what was planted and the measured
behaviour rates; every diffing method is tested against it. See docs/organisms.md.
"""

from __future__ import annotations

from diffing.data.corpus import register_scheme
from diffing.organisms.build import (
    build_organisms,
    cache_root,
    cached_organisms,
    organism_corpus_file,
)
from diffing.organisms.config import DEFAULT_VARIANTS, VARIANTS, OrganismConfig, organism_config
from diffing.organisms.manifest import MANIFEST, load_manifest

# ``organism:text`` / ``organism-full:chat`` data specs name the cached builds' corpora
register_scheme("organism", organism_corpus_file)
register_scheme("organism-full", organism_corpus_file)

__all__ = [
    "DEFAULT_VARIANTS",
    "MANIFEST",
    "VARIANTS",
    "OrganismConfig",
    "build_organisms",
    "cache_root",
    "cached_organisms",
    "load_manifest",
    "organism_config",
]
