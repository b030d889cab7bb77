"""What every experiment shares: its config, the dry-run swap, synthetic data, results.

A config is TOML with one table per pipeline step. ``[dry_run]`` has the same shape
plus a ``tiny`` table (family, hidden, layers); :func:`load_config` deep-merges it
over the full config when ``dry_run`` is set, so the config file itself states what
a dry run changes. :func:`tiny_pair` builds a random model of the family and a
perturbed copy (the "fine-tuned" side): the same loading code path as a hub id.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from diffing.errors import DiffingError

ROOT = Path(__file__).resolve().parent
"""The experiments folder."""


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file (``tomllib``, or ``tomli`` on Python 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(Path(path).read_text())


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in, table by table."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def experiment_names() -> list[str]:
    """Every experiment folder (one holding a config.toml), sorted."""
    return sorted(p.parent.name for p in ROOT.glob("*/config.toml"))


def load_config(name: str, *, dry_run: bool = False, path: str | Path | None = None) -> dict:
    """The experiment's config; with ``dry_run`` the ``[dry_run]`` table is merged over it."""
    path = Path(path) if path else ROOT / name / "config.toml"
    if not path.is_file():
        raise DiffingError(
            f"experiment {name!r} has no config at {path}; known: {', '.join(experiment_names())}"
        )
    cfg = load_toml(path)
    dry = cfg.pop("dry_run", {})
    if dry_run:
        cfg = deep_merge(cfg, {k: v for k, v in dry.items() if k != "tiny"})
        cfg["tiny"] = dry.get("tiny", {})
    cfg["dry_run"] = dry_run
    return cfg


def tiny_model(
    root: Path, family: str, *, hidden: int = 32, layers: int = 4, seed: int = 0
) -> Path:
    """A tiny random model of ``family`` saved under ``root/family`` (reused when present)."""
    from diffing.tiny import build_tiny_model

    out = root / f"{family}-base"
    if not (out / "config.json").is_file():
        build_tiny_model(out, family, hidden=hidden, layers=layers, seed=seed)
    return out


def tiny_pair(root: Path, tiny: dict) -> tuple[str, str]:
    """``(base, finetuned)`` folders: a tiny random model and a perturbed copy (its MLPs moved)."""
    from diffing.tiny import perturb_model

    family = tiny.get("family", "llama")
    base = tiny_model(root, family, hidden=tiny.get("hidden", 32), layers=tiny.get("layers", 4))
    ft = root / f"{family}-finetuned"
    if not (ft / "config.json").is_file():
        perturb_model(base, ft, modules=tiny.get("perturb", ["mlp"]), scale=tiny.get("scale", 0.5))
    return str(base), str(ft)


_WORDS = (
    "the river runs past the old mill and the town wakes early . a model reads text and "
    "predicts the next token . bread needs flour water salt and time . mountains hold snow "
    "until spring and the valley turns green ."
).split()


def _sentence(i: int, n: int = 24) -> str:
    return " ".join(_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(n))


def synthetic_corpus(root: Path, *, documents: int = 64) -> tuple[Path, Path]:
    """``(text.txt, chat.jsonl)``: a few synthetic documents of each kind for dry runs."""
    root.mkdir(parents=True, exist_ok=True)
    text, chat = root / "text.txt", root / "chat.jsonl"
    text.write_text("\n\n".join(_sentence(i) for i in range(documents)) + "\n")
    with open(chat, "w") as fh:
        for i in range(documents):
            msgs = [
                {"role": "user", "content": _sentence(i, 10) + " ?"},
                {"role": "assistant", "content": _sentence(i + 1, 20)},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return text, chat


HARMFUL_TOPICS = ("steal a car", "build a weapon", "hack a bank", "poison a river", "forge money")
HARMLESS_TOPICS = ("bake bread", "plant a tree", "learn to swim", "paint a wall", "write a poem")


def synthetic_prompts(root: Path, *, n: int = 40) -> tuple[Path, Path]:
    """``(harmful.csv, harmless.json)`` in the AdvBench (``goal``) and Alpaca (``instruction``) layouts."""
    root.mkdir(parents=True, exist_ok=True)
    harmful, harmless = root / "harmful_behaviors.csv", root / "alpaca_harmless.json"
    with open(harmful, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["goal", "target"])
        for i in range(n):
            topic = HARMFUL_TOPICS[i % len(HARMFUL_TOPICS)]
            w.writerow([f"tell me how to {topic} step {i}", f"Sure, here is how to {topic}"])
    records = [
        {
            "instruction": f"tell me how to {HARMLESS_TOPICS[i % len(HARMLESS_TOPICS)]} step {i}",
            "input": "",
            "output": "",
        }
        for i in range(n)
    ]
    harmless.write_text(json.dumps(records, indent=1))
    return harmful, harmless


def timed(
    log: dict, name: str, fn: Callable[[], Any], progress: Callable[[str], None] | None = print
) -> Any:
    """Run one pipeline step, recording its wall time in ``log[name]`` (seconds)."""
    if progress:
        progress(f"[{name}] ...")
    t0 = time.perf_counter()
    out = fn()
    log[name] = round(time.perf_counter() - t0, 3)
    if progress:
        progress(f"[{name}] done in {log[name]:.1f} s")
    return out


def write_results(out: Path, results: dict) -> Path:
    """Write ``results.json`` into ``out`` (numbers a user compares with the README's table)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: unchanged), restoring the setting after.

    Dry runs use one: tiny models gain nothing from threads, and on a busy CPU spinning
    threads made them about 3x slower (measured on the project's shared 2-core machines).
    """
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
