"""The on-disk layout of an activation store: manifest, shard names, checksums.

A store is a folder::

    STORE/manifest.json                      # what is in it (this module's Manifest)
    STORE/shard-r000-000000.safetensors      # a block of tokens, both models, every layer
    STORE/shard-r001-000000.safetensors      # (one series of shards per harvesting rank)

Each shard is a safetensors file holding, for ``n`` kept tokens::

    acts.<layer>   [n, n_models, d_model]   raw activations (model axis: base=0, finetuned=1)
    token_ids      [n]  int32               the token each activation sits on
    doc_ids        [n]  int64               the sequence ("document") it belongs to
    positions      [n]  int32               its position in that sequence
    roles          [n]  int8                its role (index into diffing.tokens.ROLES)
    seq_ids        [s]  int64               every sequence in the shard, including dropped tokens,
    seq_starts     [s+1] int64              ... as offsets into
    seq_tokens     [S]  int32               ... the full token ids (for context display)
    seq_roles      [S]  int8                ... and their roles

Shards are self-describing (their safetensors metadata repeats their counts and
norm sums) so an interrupted harvest can rebuild its state from the files alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from diffing.errors import DiffingError
from diffing.io import write_json

FORMAT_VERSION = 1
"""Bumped when the layout changes incompatibly."""
MANIFEST = "manifest.json"
"""File name of the manifest inside a store folder."""
MODEL_NAMES = ["base", "finetuned"]
"""Order of the model axis in every activation tensor."""
STORAGE_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
"""Storage dtype of activations (manifest name) -> its safetensors header code."""
_SHARD_RE = re.compile(r"^shard-r(\d{3,})-(\d{6,})\.safetensors$")


def shard_name(rank: int, index: int) -> str:
    """File name of shard ``index`` written by ``rank``."""
    return f"shard-r{rank:03d}-{index:06d}.safetensors"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """``(rank, index)`` of a shard file name, or None if it is not one."""
    m = _SHARD_RE.fullmatch(name)  # fullmatch: "$" alone would accept a trailing newline
    return (int(m.group(1)), int(m.group(2))) if m else None


def shard_path(folder: str | Path, file: str) -> Path:
    """Path of shard ``file`` of the store at ``folder``, refusing anything that reads outside it.

    A manifest is a plain JSON file anyone can edit; its ``file`` entries must be bare
    shard names of this store (no ``..``, no absolute paths), and the file they name,
    links followed, must lie in the store folder itself.
    """
    folder = Path(folder)
    if not isinstance(file, str) or parse_shard_name(file) is None:
        raise DiffingError(
            f"the manifest of store {str(folder)!r} lists shard {file!r}, which is not a shard name of "
            "this store (shard-rNNN-NNNNNN.safetensors); the manifest was edited or damaged: re-harvest the store"
        )
    path = folder / file
    real, root = path.resolve(), folder.resolve()
    if real.parent != root:
        raise DiffingError(
            f"shard {file} of store {str(folder)!r} is a link to {str(real)!r}, outside the store; "
            "copy the file into the store folder instead of linking it (or re-harvest)"
        )
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ShardInfo:
    """One shard as the manifest lists it."""

    file: str
    """File name inside the store folder."""
    n_tokens: int
    """Kept tokens (rows of every ``acts.<layer>``)."""
    sha256: str
    """Checksum of the whole file; :meth:`ActivationStore.verify` recomputes it."""
    bytes: int
    """File size; a mismatch on read means the file was truncated or replaced."""
    rank: int = 0
    """Harvesting process that wrote it."""
    index: int = 0
    """Its number within that rank's series."""
    first_seq: int = 0
    """Stream index of the first sequence it holds."""
    next_seq: int = 0
    """Stream index just after its last sequence (where a resumed harvest continues)."""
    n_seqs: int = 0
    """Sequences it holds."""
    sq_norm_sums: dict[str, list[float]] = field(default_factory=dict)
    """Layer (as a string) -> per model, the sum of squared norms of its kept activations."""


@dataclass
class Manifest:
    """Everything needed to read a store and to know how it was made."""

    layers: list[int]
    """Layers stored (index k = output of decoder block k)."""
    d_model: int
    """Width of each activation vector."""
    dtype: str
    """Storage dtype of activations (``float32``, ``bfloat16`` or ``float16``)."""
    n_tokens: int
    """Total kept tokens over all shards."""
    shards: list[ShardInfo]
    """The shards, in storage order (rank, then index)."""
    norm_scales: dict[str, list[float]]
    """Layer (as a string) -> per model, the scalar that makes the mean squared norm equal d_model."""
    model_names: list[str] = field(default_factory=lambda: list(MODEL_NAMES))
    """Names of the model axis, in order."""
    models: list[dict] = field(default_factory=list)
    """Per model: ``ref`` (hub id or folder), ``revision``, ``hash`` (sha256 of config and weight sizes)."""
    data: list[str] = field(default_factory=list)
    """The data specs the tokens came from."""
    settings: dict = field(default_factory=dict)
    """Harvest settings (seq_len, batch_size, chat_fraction, drop_bos, drop_outliers, outlier_factor, ...)."""
    format_version: int = FORMAT_VERSION
    """Layout version of this store."""
    package_version: str = ""
    """``diffing.__version__`` that wrote it."""
    tokenizer: str = ""
    """Where the tokenizer came from (the fine-tuned model's ref), to decode token ids."""

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        """Parse a manifest dict; unknown keys are ignored so newer writers stay readable."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        shard_fields = set(ShardInfo.__dataclass_fields__)
        kw["shards"] = [
            ShardInfo(**{k: v for k, v in s.items() if k in shard_fields})
            for s in d.get("shards", [])
        ]
        return cls(**kw)


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON to a temporary name, then rename: readers never see half a file."""
    # NaN activations (norm sums) are written as null and listed: never bare NaN
    write_json(path, obj, indent=1, non_finite="null")


def read_manifest(folder: str | Path) -> Manifest:
    """Load and validate ``folder/manifest.json``; DiffingError with the fix when unusable."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DiffingError(
            f"activation store {str(folder)!r} does not exist; harvest one into it first (`out`)",
            fields=("out",),
        )
    path = folder / MANIFEST
    if not path.is_file():
        partial = sorted(p.name for p in folder.glob("shard-*.safetensors"))
        hint = (
            f"it has {len(partial)} shard(s) but no manifest: the harvest did not finish; rerun the same harvest command to resume"
            if partial
            else "it is not an activation store; create one with `diffing harvest`"
        )
        raise DiffingError(f"activation store {str(folder)!r} has no {MANIFEST}: {hint}")
    try:
        raw = json.loads(path.read_text())
        manifest = Manifest.from_dict(raw)
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError) as err:
        raise DiffingError(
            f"{path} is not a valid store manifest ({err}); re-harvest the store"
        ) from err
    if manifest.format_version > FORMAT_VERSION:
        raise DiffingError(
            f"{path} has store format {manifest.format_version}, newer than this version reads ({FORMAT_VERSION}); upgrade model-diffing"
        )
    _check_manifest(folder, manifest)
    if not manifest.shards or manifest.n_tokens <= 0:
        raise DiffingError(
            f"activation store {str(folder)!r} is empty (no tokens); harvest with more data or `tokens`",
            fields=("tokens",),
        )
    return manifest


def _check_manifest(folder: Path, m: Manifest) -> None:
    """Structural checks a reader relies on: shard names, counts that add up, a known dtype."""

    def bad(what: str) -> DiffingError:
        return DiffingError(
            f"the manifest of store {str(folder)!r} is inconsistent: {what}; "
            "it was edited or damaged: re-harvest the store (the same harvest command rewrites it)"
        )

    if m.dtype not in STORAGE_DTYPES:
        raise bad(f"dtype {m.dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
    if not isinstance(m.d_model, int) or isinstance(m.d_model, bool) or m.d_model <= 0:
        raise bad(f"d_model {m.d_model!r} is not a positive integer")
    if not isinstance(m.layers, list) or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in m.layers
    ):
        raise bad(f"layers {m.layers!r} is not a list of layer indices")
    seen = set()
    for s in m.shards:
        shard_path(folder, s.file)  # names only; containment of links is checked on open
        if s.file in seen:
            raise bad(f"shard {s.file} is listed twice")
        seen.add(s.file)
        if not isinstance(s.n_tokens, int) or isinstance(s.n_tokens, bool) or s.n_tokens < 0:
            raise bad(f"shard {s.file} has token count {s.n_tokens!r}")
    total = sum(s.n_tokens for s in m.shards)
    if m.n_tokens != total:
        raise bad(f"n_tokens is {m.n_tokens!r} but its shards hold {total} tokens")
