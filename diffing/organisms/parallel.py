"""Run independent build stages side by side in forked worker processes.

Once the base model exists, each variant (its fine-tune, then its evaluation) depends
on nothing but the base, so the variants can train at the same time. Tiny models use
cores poorly from inside one process (two single-threaded trainings get ~1.4x the
throughput of one two-threaded training on two cores), so the build gives each
variant its own process with one torch thread.

Workers are forked (the materials and tokenizer are already in memory, and a fresh
interpreter would spend seconds importing torch); each runs its stages through the
same :func:`~diffing.organisms.stages.run_stage` as a serial build, so records,
atomic renames and resuming are unchanged. Progress comes back through a queue.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from diffing.organisms.stages import Stage, is_done, run_stage

QUEUE_POLL_SECONDS = 0.2
"""How often the parent checks on its workers while no progress message arrives."""


def can_fork() -> bool:
    """Whether the workers can be forked: Linux only (macOS offers ``fork``, but system frameworks
    a torch process has loaded are not safe to use in a forked child there)."""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def plan_groups(
    stages: dict[str, Stage], pending: Sequence[str], variants: Sequence[str]
) -> list[list[str]]:
    """Split the pending stages after the base into one group per variant (fine-tune, then its evaluation).

    Stages that belong to no variant (the base's evaluation) join the group with the
    least work (in steps; on a tie the last group), so the groups finish at about the same time.
    """
    groups = {v: [n for n in (v, f"eval-{v}") if n in pending] for v in variants}
    groups = {v: g for v, g in groups.items() if g}
    loose = [n for n in pending if not any(n in g for g in groups.values())]
    for name in loose:
        if not groups:
            groups[name] = [name]
            continue
        # ties go to the last group: the null control's steps are the cheapest
        lightest = min(reversed(groups), key=lambda v: sum(stages[n].work for n in groups[v]))
        groups[lightest].append(name)
    return list(groups.values())


class _Forwarder:
    """Stands in for the progress bar inside a worker: sends updates to the parent."""

    def __init__(self, q, label: str):
        self.q, self.label = q, label

    def update(self, n: int = 1) -> None:
        self.q.put(("n", n))

    def set_postfix_str(self, text: str) -> None:
        self.q.put(("postfix", f"{self.label} {text}"))

    def set_description_str(self, text: str) -> None:
        pass  # the parent names all running groups at once

    def close(self) -> None:
        pass


def _worker(root: Path, stages: dict[str, Stage], group: list[str], prog, q) -> None:
    import torch

    torch.set_num_threads(1)
    prog.bar = _Forwarder(q, group[0])  # this process's copy of the bar; the parent's is untouched
    try:
        for name in group:
            if not is_done(root, stages, name):
                run_stage(root, stages, stages[name])
        q.put(("done", group[0]))
    except BaseException:  # report, then let the parent decide; never print a second bar here
        q.put(("error", group[0], traceback.format_exc()))
        raise SystemExit(1) from None


def run_in_parallel(root: Path, stages: dict[str, Stage], groups: list[list[str]], prog) -> None:
    """Run each group (its stages in order) in its own forked process; return when all finished.

    Raises ``RuntimeError`` naming the failed group and its error in one line, with the worker's
    traceback as a note; stages that finished in the other workers stay finished (a rerun skips them).
    """
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    prog.stage(" + ".join(g[0] for g in groups))
    procs = [
        ctx.Process(target=_worker, args=(root, stages, g, prog, q), daemon=True) for g in groups
    ]
    errors: list[str] = []
    tracebacks: list[str] = []
    try:
        for p in procs:
            p.start()
        while True:
            try:
                msg = q.get(timeout=QUEUE_POLL_SECONDS)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if msg[0] == "n":
                prog.advance(msg[1])
            elif msg[0] == "postfix":
                prog.bar.set_postfix_str(msg[1])
            elif msg[0] == "error":
                last = msg[2].strip().splitlines()[-1]  # "ValueError: ..."
                errors.append(f"building {msg[1]} failed: {last}")
                tracebacks.append(f"traceback of the worker building {msg[1]}:\n{msg[2]}")
    except (
        BaseException
    ):  # Ctrl-C or an error here: stop the workers; their stages restart on rerun
        for p in procs:
            p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
    for p, g in zip(procs, groups):
        if p.exitcode not in (0, 1):  # 1 is a failure the worker reported itself
            errors.append(
                f"the worker building {g[0]} died (exit code {p.exitcode}; out of memory?)"
            )
    if errors:
        err = RuntimeError("; ".join(errors) + " (the other variants are built; rerun to retry)")
        for tb in tracebacks:
            err.add_note(tb)  # shown with the traceback (--debug), kept off the one-line message
        raise err


def use_workers(threads: int, n_groups: int) -> bool:
    """Whether to fork one worker per group: two or more groups, two or more cores to use, fork available,
    and ``$DIFFING_BUILD_PARALLEL`` not set to 0."""
    if os.environ.get("DIFFING_BUILD_PARALLEL", "1").strip() in ("0", "false", "no"):
        return False
    return n_groups >= 2 and threads >= 2 and can_fork()
