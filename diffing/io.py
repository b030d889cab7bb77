"""Writing files safely: atomic replaces and strict JSON that every parser reads.

Readers (a resumed run, a browser, ``jq``) must never see half a file, so every
file goes to a per-process temporary name in the same folder, is flushed to disk,
and replaces the target in one ``os.replace``. JSON is strict (``allow_nan=False``):
Python's bare ``NaN``/``Infinity`` are not JSON and break other parsers. A
non-finite number is either an error or, in results files, written as ``null``
with its JSON path listed under a top-level ``"non_finite"`` key, so a reader can
tell "broken" from "not measured".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from diffing.errors import DiffingError

NON_FINITE_KEY = "non_finite"
"""Top-level key of a results file listing the JSON paths whose value was NaN or infinite."""

NonFinite = Literal["error", "null"]
"""What to do with a NaN or infinite number: raise, or write ``null`` and list its path."""


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table, so a rename survives a power cut (best effort: not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    The temporary name carries the process id, so two processes writing the same
    file never write into each other's temporary; on an exception it is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def json_default(obj: Any) -> Any:
    """The one converter for values ``json`` does not know: tensors, numpy, paths, dataclasses, sets."""
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and numpy scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def to_jsonable(
    obj: Any,
    non_finite: list[str] | None = None,
    path: str = "",
    *,
    default: Callable[[Any], Any] = json_default,
) -> Any:
    """``obj`` as plain JSON values; each NaN/infinity becomes ``None`` and its JSON path is appended to ``non_finite``.

    Paths read like ``kl.mean`` or ``activations.layers[3].cosine``. With ``non_finite``
    None the non-finite floats are kept (for :func:`dumps` to reject). ``default``
    converts other objects (:func:`json_default` unless given).
    """
    if isinstance(obj, float):
        if math.isfinite(obj) or non_finite is None:
            return obj
        non_finite.append(path or "(top level)")
        return None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, dict):
        return {
            str(k): to_jsonable(v, non_finite, _child(path, k), default=default)
            for k, v in obj.items()
        }
    if hasattr(obj, "_asdict"):  # NamedTuple: a record, not a list
        return to_jsonable(obj._asdict(), non_finite, path, default=default)
    if isinstance(obj, (list, tuple)):
        return [
            to_jsonable(v, non_finite, _child(path, i), default=default) for i, v in enumerate(obj)
        ]
    return to_jsonable(default(obj), non_finite, path, default=default)


def non_finite_paths(obj: Any, path: str = "") -> list[str]:
    """JSON paths of every NaN or infinite float inside ``obj`` (dicts, lists, tuples, floats)."""
    out: list[str] = []
    if isinstance(obj, float):
        if not math.isfinite(obj):
            out.append(path or "(top level)")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += non_finite_paths(v, _child(path, k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += non_finite_paths(v, _child(path, i))
    return out


def strict(obj: Any, non_finite: NonFinite = "error", what: str = "JSON") -> Any:
    """``obj`` converted to strict JSON values.

    ``non_finite="error"`` raises :class:`DiffingError` naming the first NaN/infinite
    value; ``"null"`` writes ``null`` and, for a dict, lists the paths under
    ``"non_finite"`` (merged with any list already there). A non-dict with a
    non-finite value under ``"null"`` is an error too: there is nowhere to flag it.
    """
    found: list[str] = []
    out = to_jsonable(obj, found)
    if not found:
        return out
    if non_finite == "null" and isinstance(out, dict):
        known = [p for p in out.get(NON_FINITE_KEY) or [] if p not in found]
        out[NON_FINITE_KEY] = known + found
        return out
    raise DiffingError(
        f"{what} would hold a non-finite number (NaN or infinity) at {found[0]}"
        + (f" and {len(found) - 1} more place(s)" if len(found) > 1 else "")
        + ": the model or the data is broken; check them (diffing inspect flags NaN weights)"
    )


def dumps(
    obj: Any,
    *,
    non_finite: NonFinite = "error",
    indent: int | None = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    what: str = "JSON",
) -> str:
    """Strict JSON text of ``obj`` (never bare NaN/Infinity; see :func:`strict`).

    ASCII by default (``\\u`` escapes), so a reader on any locale decodes it the same way.
    """
    return json.dumps(
        strict(obj, non_finite, what),
        indent=indent,
        sort_keys=sort_keys,
        ensure_ascii=ensure_ascii,
        allow_nan=False,
    )


def write_json(
    path: str | Path,
    obj: Any,
    *,
    non_finite: NonFinite = "error",
    indent: int | None = 2,
    sort_keys: bool = False,
) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    path = Path(path)
    return write_text_atomic(
        path,
        dumps(obj, non_finite=non_finite, indent=indent, sort_keys=sort_keys, what=path.name)
        + "\n",
    )


def check_out_dir(path: str | Path, name: str = "`out`") -> Path:
    """``path`` as an output folder: an existing file there is a clear :class:`DiffingError`, not a crash later.

    ``name`` is how the message calls the folder (by default the ``out`` argument).
    """
    p = Path(path).expanduser()
    fields = ("out",) if name == "`out`" else ()
    if p.exists() and not p.is_dir():
        raise DiffingError(
            f"{name} {path} is an existing file, not a folder; give a folder path (it is created if missing)",
            fields=fields,
        )
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DiffingError(
                    f"{name} {path} lies under {parent}, an existing file; give a folder path",
                    fields=fields,
                )
            break
    return p


def folder_lock(folder: str | Path, name: str, what: str):
    """Hold ``folder/.NAME.lock`` while a process writes ``folder``; a DiffingError naming ``what``
    when another process holds it. Returns the acquired lock (a context manager that releases it)."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f".{name}.lock"), timeout=0)
    try:
        return lock.acquire()
    except Timeout:
        raise DiffingError(
            f"another {what} is writing {folder}; wait for it to finish, or choose another `out`",
            fields=("out",),
        ) from None


OUT_MARKER = ".diffing-output.json"
"""File in an output folder naming the command whose results it holds."""
RESULT_FILES = {
    "manifest.json": "harvest",
    "stats.json": "stats",
    "report.json": "analyze",
    "crosscoder.safetensors": "crosscoder train",
    "direction.safetensors": "refusal extract",
    "organism.json": "organism build",
    "config.json": "a model checkpoint",
}
"""Files whose presence says which command's results (or what) a folder holds, for folders
written before output folders were marked."""


def claim_out_dir(
    path: str | Path, command: str, *, inputs: Iterable[str | Path] = (), force: bool = False
) -> Path:
    """Make ``path`` the output folder of ``command``, or say why it must not be.

    Refused unless ``force``: a folder that is one of the run's ``inputs`` or lies inside one
    (the run would write over what it reads: a model, a store), and a folder holding another
    command's results (its marker, or files such as ``manifest.json`` or a model's
    ``config.json``). A folder of the same command is fine: reruns resume or refresh it.
    """
    out = check_out_dir(path)
    here = out.resolve()
    for ref in inputs:
        src = Path(str(ref)).expanduser()
        if not src.exists():  # a hub id, a named dataset
            continue
        src = src.resolve()
        if not force and (here == src or (src.is_dir() and src in here.parents)):
            raise DiffingError(
                f"`out` {path} is {'an input' if here == src else 'inside an input'} of this run ({ref}); "
                "writing there would overwrite what the run reads: choose another `out` (or pass `force=True`)",
                fields=("out", "force"),
            )
    owner = None
    if (out / OUT_MARKER).is_file():
        try:
            owner = json.loads((out / OUT_MARKER).read_text()).get("command")
        except (OSError, ValueError):
            owner = None
    elif out.is_dir():
        owner = next((who for name, who in RESULT_FILES.items() if (out / name).exists()), None)
    if owner is not None and owner != command and not force:
        raise DiffingError(
            f"`out` {path} holds the results of {owner if ' ' in owner or owner.startswith('a ') else 'diffing ' + owner}; "
            "choose another `out`, or pass `force=True` to write into it anyway",
            fields=("out", "force"),
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / OUT_MARKER, {"command": command})
    return out


def not_utf8(path: str | Path, err: UnicodeDecodeError) -> DiffingError:
    """The one-line error for a data file that is not UTF-8 text (raise it ``from err``)."""
    bad = err.object[err.start : err.start + 1].hex() if isinstance(err.object, bytes) else "?"
    return DiffingError(
        f"{path} is not UTF-8 text (byte 0x{bad} at offset {err.start}); re-save it as UTF-8"
    )
