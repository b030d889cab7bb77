"""Flags generated from config dataclasses: types, defaults, help, limits, validation."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from diffing.cli.options import add_options, config_from_args
from diffing.configs import field_docs, limits, validate
from diffing.errors import DiffingError


@dataclass
class Toy:
    """A config with one field of every kind the adapter handles."""

    steps: int = field(default=100, metadata=limits(gt=0))
    """Optimisation steps."""
    lr: float | None = field(default=None, metadata=limits(gt=0))
    """Learning rate; None picks one from the size."""
    layers: list[int] = field(default_factory=lambda: [1, 2])
    """Layers to read."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas."""
    kind: Literal["batchtopk", "l1"] = "batchtopk"
    """Sparsity scheme."""
    shuffle: bool = True
    """Shuffle the data."""
    resume: bool = False
    """Continue from a checkpoint."""
    scale: float = 1.0
    """A plain float: must still be finite."""

    def __post_init__(self) -> None:
        validate(self)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_options(p, Toy)
    return p


def test_field_docs_are_read_from_the_source():
    docs = field_docs(Toy)
    assert docs["steps"] == "Optimisation steps."
    assert docs["lr"].startswith("Learning rate")


def test_defaults_come_from_the_dataclass_and_flags_override_them():
    p = _parser()
    assert config_from_args(p.parse_args([]), Toy) == Toy()
    cfg = config_from_args(
        p.parse_args(
            [
                "--steps",
                "7",
                "--layers",
                "3",
                "4",
                "5",
                "--betas",
                "0.5",
                "0.6",
                "--kind",
                "l1",
                "--no-shuffle",
                "--resume",
            ]
        ),
        Toy,
    )
    assert cfg == Toy(
        steps=7, layers=[3, 4, 5], betas=(0.5, 0.6), kind="l1", shuffle=False, resume=True
    )
    assert isinstance(cfg.betas, list | tuple)


def test_config_from_args_keeps_a_base_config_for_unset_flags():
    base = Toy(steps=42, kind="l1")
    cfg = config_from_args(_parser().parse_args(["--lr", "0.01"]), Toy, base=base)
    assert (cfg.steps, cfg.kind, cfg.lr) == (42, "l1", 0.01)


def test_help_shows_docstring_and_default():
    text = _parser().format_help()
    assert "Optimisation steps. (default: 100)" in text
    assert "(default: 1 2)" in text
    assert "Learning rate; None picks one from the size." in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "must be positive (got 0)"),
        (["--steps", "-5"], "must be positive (got -5)"),
        (["--lr", "nan"], "must be a finite number"),
        (["--scale", "inf"], "must be a finite number"),
        (["--steps", "ten"], "must be an integer, got 'ten'"),
        (["--kind", "topk"], "invalid choice"),
    ],
)
def test_bad_values_are_rejected_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_python_api_checks_the_same_limits():
    with pytest.raises(DiffingError, match=r"Toy.steps must be positive \(got 0\)"):
        Toy(steps=0)
    with pytest.raises(DiffingError, match="Toy.scale must be a finite number"):
        Toy(scale=float("nan"))
    assert Toy(steps=1, lr=1e-3).steps == 1


@pytest.mark.parametrize(
    "package",
    ["diffing.crosscoder", "diffing.refusal", "diffing.report", "diffing.stats", "diffing.store",
     "diffing.lens"],
)  # fmt: skip
def test_lazy_exports_never_shadow_a_submodule(package):
    """A lazily exported name equal to a submodule's name would resolve to the module once the
    submodule is imported anywhere: every export must resolve to what it names, always."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    clash = sorted(set(pkg.__all__) & modules)
    assert not clash, f"{package} exports names of its own submodules: {clash}"
    for name in pkg.__all__:
        assert not type(getattr(pkg, name)).__name__ == "module", name


def test_no_hand_written_flag_mirrors_a_config_field():
    """A command's options that are config fields come from the config (``add_options``); a flag
    written by hand in the same module must not repeat one of those fields."""
    import ast
    import dataclasses
    import importlib
    from pathlib import Path

    import diffing.cli

    mirrors, seen = [], 0
    for path in sorted(Path(diffing.cli.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            a.asname or a.name: node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            for a in node.names
        }
        configs, flags = set(), []
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            name = getattr(call.func, "id", getattr(call.func, "attr", None))
            if name in ("add_options", "config_from_args") and len(call.args) >= 2:
                if isinstance(call.args[1], ast.Name) and call.args[1].id in imported:
                    configs.add(call.args[1].id)
            first = call.args[0] if call.args else None
            if name == "add_argument" and isinstance(first, ast.Constant):
                if str(first.value).startswith("--"):
                    flags.append(first.value)
        fields = set()
        for cls_name in configs:
            cls = getattr(importlib.import_module(imported[cls_name]), cls_name)
            fields |= {f.name for f in dataclasses.fields(cls)}
        seen += len(configs)
        mirrors += [f"{path.name}: {f}" for f in flags if f[2:].replace("-", "_") in fields]
    assert seen >= 10  # the scan finds the generated options (guards the check itself)
    assert mirrors == []
