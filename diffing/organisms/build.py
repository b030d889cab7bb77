"""Build the organisms: tokenizer and data, base model, variants, evaluation, manifest.

The build is a list of stages (:mod:`~diffing.organisms.stages`); finished ones
are skipped, so re-running a build, or the same command after an interruption,
only does what is missing. A file lock keeps two processes from building into
the same folder at once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import diffing
from diffing.errors import DiffingError
from diffing.organisms.config import (
    DEFAULT_VARIANTS,
    RECIPE,
    VARIANTS,
    OrganismConfig,
    organism_config,
)
from diffing.organisms.manifest import MANIFEST, PLANTED_FILES, assemble
from diffing.organisms.materials import Materials
from diffing.organisms.parallel import plan_groups, run_in_parallel, use_workers
from diffing.organisms.recipes import (
    EVAL_WORK,
    Progress,
    base_stage,
    data_stage,
    eval_stage,
    reseed_stage,
    variant_stage,
)
from diffing.organisms.stages import (
    STAGE_DIR,
    Stage,
    clean_temporaries,
    is_done,
    read_record,
    run_stage,
    write_json_atomic,
)
from diffing.organisms.variants import heldout_files
from diffing.progress import bar as progress_bar

BUILD_INFO = "build.json"
"""Records the arguments a folder was built with, to refuse mixing builds."""


def build_threads() -> int:
    """Torch threads for training: ``$DIFFING_BUILD_THREADS``, else every core on an idle machine, one fewer
    on a busy one (tiny models on contended cores train several times slower with every core than with one)."""
    env = os.environ.get("DIFFING_BUILD_THREADS")
    if env:
        return max(1, int(env))
    n = os.cpu_count() or 1
    return n if busy_cores() < 0.5 * n else max(1, n - 1)


def busy_cores(interval: float = 0.3) -> float:
    """How many cores other work keeps busy right now (``/proc/stat`` sampled over ``interval``).

    The load average would be the portable choice, but it trails by a minute: right after
    ``pip install`` (as in ``make demo``) it reads busy on an idle machine. Falls back
    to the 1-minute load average where ``/proc/stat`` does not exist.
    """

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    first = sample()
    if first is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    time.sleep(interval)
    second = sample()
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total if total > 0 else 0.0


def _check_variants(variants) -> list[str]:
    if isinstance(variants, str):
        variants = (variants,)
    out: list[str] = []
    for v in variants:
        if v == "all":
            out += [x for x in VARIANTS if x not in out]
        elif v in VARIANTS:
            out += [v] if v not in out else []
        else:
            raise DiffingError(
                f"unknown organism variant {v!r}: choose from {', '.join(VARIANTS)} or all"
            )
    if not out:
        raise DiffingError(
            f"no organism variant requested: choose from {', '.join(VARIANTS)} or all"
        )
    return [v for v in VARIANTS if v in out]


def _prepare_folder(root: Path, config: OrganismConfig) -> None:
    """Create the folder, check it is writable and holds no other build."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise DiffingError(
            f"cannot write the organism folder {str(root)!r}: {err.strerror or err}"
        ) from err
    info = {
        "seed": config.seed,
        "fast": config.fast,
        "family": config.family,
        "package_version": diffing.__version__,
        "recipe": RECIPE,
        "config_digest": config.digest(),
    }
    info_path = root / BUILD_INFO
    if info_path.exists():
        try:
            old = json.loads(info_path.read_text())
        except ValueError:
            old = None
        if isinstance(old, dict):
            old.setdefault("family", "llama")  # written before there were families
        if old != info:
            raise DiffingError(
                f"{str(root)!r} holds an organism build with other settings ({old}); "
                f"choose another folder or delete it to build seed={config.seed} fast={config.fast} "
                f"family={config.family}"
            )
    else:
        leftovers = [
            p.name
            for p in root.iterdir()
            if p.name not in (".lock", STAGE_DIR) and not p.name.startswith(".tmp-")
        ]
        if leftovers:
            raise DiffingError(
                f"{str(root)!r} is not empty and holds no organism build; choose an empty or new folder"
            )
        write_json_atomic(info_path, info)


class StageBars(Progress):
    """A tqdm bar per stage: the base, each variant (its training and evaluation), on stderr.

    One bar that stands still for half an hour while a variant trains looks like a hang;
    a bar per variant, named after it and sized to its steps, shows which one is running
    and how far it got. Variants trained side by side share one bar named after all of them.
    """

    def __init__(self, works: dict[str, int], enabled: bool):
        super().__init__(0, False)
        self.works, self.enabled = works, enabled
        self.name: str | None = None
        """The stage the current bar belongs to."""

    def _total(self, name: str) -> int:
        names = [n.strip() for n in name.split("+")]
        keys = [k for n in names for k in (n, f"eval-{n}", n.replace("evaluate ", "eval-"))]
        return sum(self.works.get(k, 0) for k in dict.fromkeys(keys)) or 1

    def stage(self, name: str) -> None:
        from tqdm.auto import tqdm

        if not isinstance(self.bar, tqdm):  # inside a worker: the parent owns the bars
            return
        if name.startswith("evaluate ") and self.name == name[len("evaluate ") :]:
            self.bar.set_description_str(f"organisms: {name}")  # evaluation continues its bar
            return
        self.bar.close()
        self.name = name
        self.bar = progress_bar(
            total=self._total(name), enabled=self.enabled, unit="step", desc=f"organisms: {name}"
        )


def _stages(root: Path, m: Materials, variants: list[str], prog: Progress) -> dict[str, Stage]:
    c = m.config
    stages = [
        Stage("data", ("tokenizer", "prompts", "corpus"), (), data_stage(m, prog), 20),
        Stage("base", ("base",), ("data",), base_stage(m, prog), c.base_steps),
        Stage(
            "eval-base",
            ("eval/base.json",),
            ("data", "base"),
            eval_stage(root, m, "base", prog),
            EVAL_WORK,
        ),
    ]
    for v in variants:
        if v == "reseed":  # a second base, not a fine-tune of the first
            stages.append(Stage(v, (v,), ("data",), reseed_stage(m, prog), c.base_steps))
        else:
            outputs = (v, f"{v}-adapter") + ((PLANTED_FILES[v][1],) if v in PLANTED_FILES else ())
            outputs += tuple(heldout_files(v).values())
            stages.append(
                Stage(
                    v,
                    outputs,
                    ("data", "base"),
                    variant_stage(root, m, v, prog),
                    c.quirk_steps if v == "quirk" else c.ft_steps,
                )
            )
        stages.append(
            Stage(
                f"eval-{v}",
                (f"eval/{v}.json",),
                ("data", v),
                eval_stage(root, m, v, prog),
                EVAL_WORK,
            )
        )
    return {s.name: s for s in stages}


def build_organisms(
    out_dir: str | os.PathLike,
    *,
    variants=DEFAULT_VARIANTS,
    seed: int = 0,
    fast: bool = False,
    family: str = "llama",
    progress: bool = True,
) -> Path:
    """Build (or finish building) the base model and ``variants`` into ``out_dir``; returns the folder.

    ``family`` is the model family of every model (``llama`` or ``olmo2``; see families.py).
    Finished stages are kept and skipped; an interrupted stage restarts from
    scratch. The result is described by ``out_dir/organism.json``.
    """
    from filelock import FileLock, Timeout

    chosen = _check_variants(variants)
    config = organism_config(seed=int(seed), fast=bool(fast), family=family)
    root = Path(out_dir).expanduser().resolve()
    _prepare_folder(root, config)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # the build forks workers (parallel.py); a tokenizer's thread pool does not survive a fork
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        lock = FileLock(str(root / ".lock"), timeout=3600)
        lock.acquire()
    except Timeout as err:
        raise DiffingError(
            f"another process has been building into {str(root)!r} for an hour; is it stuck?"
        ) from err
    import torch

    old_threads = torch.get_num_threads()
    try:
        t0 = time.perf_counter()
        clean_temporaries(root)
        m = Materials(config, root / "tokenizer")
        stages = _stages(root, m, chosen, Progress(0, False))
        todo = [s for s in stages.values() if not is_done(root, stages, s.name)]
        threads = build_threads() if todo else None
        if threads:
            torch.set_num_threads(threads)
        prog = StageBars({s.name: s.work for s in todo}, progress and bool(todo))
        stages = _stages(root, m, chosen, prog)
        try:
            workers = _run_stages(root, stages, chosen, prog, threads or 1)
        finally:
            prog.close()
        if todo or not (root / MANIFEST).exists() or _manifest_variants(root) != chosen:
            records = {name: read_record(root, name) for name in stages}
            manifest = assemble(
                root,
                config.to_dict(),
                records,
                chosen,
                package_version=diffing.__version__,
                last_run_seconds=time.perf_counter() - t0,
                threads=threads,
                workers=workers,
            )
            write_json_atomic(root / MANIFEST, manifest)
    finally:
        torch.set_num_threads(old_threads)
        lock.release()
    return root


def _run_stages(
    root: Path, stages: dict[str, Stage], variants: list[str], prog, threads: int
) -> int:
    """Run every unfinished stage: data and base here, then the variants side by side when that pays.

    Returns how many processes trained the variants (1: this one).
    """
    head = ("data", "base")
    for name in head:
        if not is_done(root, stages, name):
            run_stage(root, stages, stages[name])
    pending = [n for n in stages if n not in head and not is_done(root, stages, n)]
    groups = plan_groups(stages, pending, variants)
    if use_workers(threads, len(groups)):
        run_in_parallel(root, stages, groups, prog)
        return len(groups)
    for name in pending:
        run_stage(root, stages, stages[name])
    return 1


def _manifest_variants(root: Path) -> list[str] | None:
    """The variants the manifest describes; None when it is missing, unreadable or written before
    every variant's ground truth gained its ``kind`` and ``targets`` (then it is written again)."""
    try:
        variants = json.loads((root / MANIFEST).read_text())["variants"]
    except (OSError, ValueError, KeyError):
        return None
    if not all({"kind", "targets"} <= set(v.get("planted", {})) for v in variants.values()):
        return None
    return list(variants)


def cache_root() -> Path:
    """``$DIFFING_CACHE`` or ``~/.cache/diffing``."""
    return Path(os.environ.get("DIFFING_CACHE") or Path.home() / ".cache" / "diffing").expanduser()


def cached_organisms(
    *,
    seed: int = 0,
    fast: bool = False,
    variants=DEFAULT_VARIANTS,
    family: str = "llama",
    progress: bool = False,
) -> Path:
    """Build once, then reuse, the organisms under the cache folder (keyed by arguments and version)."""
    chosen = _check_variants(variants)
    digest = organism_config(seed=int(seed), fast=bool(fast), family=family).digest()
    # a llama build keeps the key it had before there were families (its cache stays valid)
    fam = "" if family == "llama" else f"-{family}"
    key = (
        f"v{diffing.__version__}-seed{int(seed)}-{'fast' if fast else 'full'}{fam}-"
        f"{'-'.join(chosen)}-{digest}"
    )
    return build_organisms(
        cache_root() / "organisms" / key,
        variants=chosen,
        seed=seed,
        fast=fast,
        family=family,
        progress=progress,
    )


def organism_corpus_file(spec: str) -> Path:
    """The file an ``organism:NAME`` / ``organism-full:NAME`` data spec names (the cached build's corpus)."""
    prefix, _, name = spec.partition(":")
    root = Path(cached_organisms(fast=prefix != "organism-full")) / "corpus"
    for suffix in (".jsonl", ".txt", ".json", ".parquet"):
        if (root / f"{name}{suffix}").is_file():
            return root / f"{name}{suffix}"
    names = sorted({p.stem for p in root.glob("*")}) if root.is_dir() else []
    raise DiffingError(
        f"the organism build has no corpus named {name!r}; known: {', '.join(names) or 'none'} "
        "(use e.g. organism:text)"
    )
