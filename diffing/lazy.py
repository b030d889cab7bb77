"""Package exports that load on first use.

A package whose public names live in modules that import torch would make every
``import`` of a light submodule (a config the command line reads) pay for torch
too; resolving the names on first access keeps ``diffing --help`` fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` resolving each name in ``exports`` from its module."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
