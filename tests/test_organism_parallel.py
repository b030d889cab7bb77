"""Variants trained side by side in forked workers (diffing.organisms.parallel), on stand-in stages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from diffing.organisms.parallel import can_fork, plan_groups, run_in_parallel, use_workers
from diffing.organisms.stages import STAGE_DIR, Stage, is_done, read_record

pytestmark = pytest.mark.skipif(not can_fork(), reason="workers are forked on Linux only")


class _Bar:
    def __init__(self):
        self.n, self.postfix = 0, ""

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, text):
        self.postfix = text


class _Progress:
    """What the build's Progress offers the stages (stage name, steps, advance)."""

    def __init__(self):
        self.bar = _Bar()

    def stage(self, name):
        pass

    def advance(self, n):
        self.bar.update(n)


def _stage(name: str, prog: _Progress, *, deps=(), fail: bool = False, work: int = 3) -> Stage:
    def run(tmp: dict[str, Path]) -> dict:
        for _ in range(work):
            prog.advance(1)
        prog.bar.set_postfix_str(f"loss of {name}")
        if fail:
            raise ValueError(f"{name} broke")
        tmp[f"{name}.json"].write_text(json.dumps({"pid": os.getpid()}))
        return {"pid": os.getpid()}

    return Stage(name, (f"{name}.json",), tuple(deps), run, work)


def _stages(prog, fail=()):
    names = ["base", "eval-base", "chat", "eval-chat", "quirk", "eval-quirk", "null", "eval-null"]
    out = {}
    for n in names:
        deps = (
            ()
            if n == "base"
            else ("base",)
            if n in ("eval-base", "chat", "quirk", "null")
            else (n[5:],)
        )
        out[n] = _stage(n, prog, deps=deps, fail=n in fail, work=10 if n == "quirk" else 3)
    return out


def test_groups_keep_each_variant_with_its_evaluation_and_balance_the_rest():
    prog = _Progress()
    stages = _stages(prog)
    pending = [n for n in stages if n != "base"]
    groups = plan_groups(stages, pending, ["chat", "quirk", "null"])
    assert groups == [
        ["chat", "eval-chat"],
        ["quirk", "eval-quirk"],
        ["null", "eval-null", "eval-base"],
    ]
    assert plan_groups(stages, ["eval-quirk"], ["chat", "quirk", "null"]) == [["eval-quirk"]]
    assert plan_groups(stages, ["eval-base"], ["chat"]) == [["eval-base"]]


def test_workers_run_every_group_and_report_progress(tmp_path, monkeypatch):
    from diffing.organisms.stages import run_stage

    prog = _Progress()
    stages = _stages(prog)
    run_stage(tmp_path, stages, stages["base"])
    prog.bar.n = 0
    groups = plan_groups(stages, [n for n in stages if n != "base"], ["chat", "quirk", "null"])
    run_in_parallel(tmp_path, stages, groups, prog)
    assert all(is_done(tmp_path, stages, n) for n in stages)
    pids = {g[0]: read_record(tmp_path, g[0])["facts"]["pid"] for g in groups}
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()  # one process each
    assert prog.bar.n == sum(s.work for n, s in stages.items() if n != "base")  # every step arrived
    assert prog.bar.postfix.startswith(("chat", "quirk", "null"))
    monkeypatch.setenv("DIFFING_BUILD_PARALLEL", "0")
    assert not use_workers(2, 3)
    monkeypatch.delenv("DIFFING_BUILD_PARALLEL")
    assert use_workers(2, 3) and not use_workers(1, 3) and not use_workers(2, 1)


def test_a_failed_worker_names_its_variant_and_the_others_stay_built(tmp_path):
    from diffing.organisms.stages import run_stage

    prog = _Progress()
    stages = _stages(prog, fail=("quirk",))
    run_stage(tmp_path, stages, stages["base"])
    groups = plan_groups(stages, [n for n in stages if n != "base"], ["chat", "quirk", "null"])
    with pytest.raises(
        RuntimeError, match=r"^building quirk failed: ValueError: quirk broke \("
    ) as err:
        run_in_parallel(tmp_path, stages, groups, prog)
    assert "\n" not in str(err.value)  # one line for the CLI; the traceback rides along as a note
    assert "in run" in err.value.__notes__[0] and "quirk broke" in err.value.__notes__[0]
    assert is_done(tmp_path, stages, "chat") and is_done(tmp_path, stages, "eval-null")
    assert (
        not is_done(tmp_path, stages, "quirk")
        and not (tmp_path / STAGE_DIR / "quirk.json").exists()
    )
    assert not (tmp_path / "quirk.json").exists()  # nothing half-written under the final name
