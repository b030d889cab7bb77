"""Where a model's traces run: here, on NDIF (nnsight remote execution), or through NDIF's path locally.

A loaded nnsight model carries its mode (set by :func:`diffing.models.load_model` and
:meth:`diffing.models.ModelPair.load`, or by :func:`set_remote` on a model you built),
and every traced forward or generation in the toolkit passes it on with
:func:`trace_options`. In a remote run the block inside ``with lm.trace(...)`` is
serialised and executed on the server, where ``diffing`` is not installed, so
setting a remote mode registers the package with ``nnsight.register``: the
toolkit functions a block calls travel with it by value. Only values created and
``.save()``-d inside a block come back from a remote run.
"""

from __future__ import annotations

import torch

from diffing.errors import DiffingError

_ATTR = "_diffing_remote"
"""Key in the nnsight model's ``__dict__`` (set directly: nnsight routes attribute writes to the module)."""


def set_remote(lm, mode: bool | str):
    """Mark how ``lm``'s traces run: False (here), True (NDIF), ``"local"`` (NDIF's serialisation, run here).

    ``"local"`` needs the weights here; it is how the remote path is tested offline.
    Returns ``lm``.
    """
    if mode not in (False, True, "local"):
        raise DiffingError(f"remote must be False, True (NDIF) or 'local', got {mode!r}")
    if mode:
        import nnsight

        nnsight.register("diffing")  # the server has no diffing: ship what a block calls, by value
    lm.__dict__[_ATTR] = mode
    return lm


def remote_mode(lm) -> bool | str:
    """How ``lm``'s traces run (see :func:`set_remote`); False unless it was marked."""
    return lm.__dict__.get(_ATTR, False)


def trace_options(lm) -> dict:
    """Keyword arguments for ``lm.trace`` / ``lm.generate`` that carry its remote mode."""
    mode = remote_mode(lm)
    return {"remote": mode} if mode else {}


def input_device(lm) -> torch.device:
    """Where ``lm``'s inputs go: the CPU for a remote model (the server places them), else its weights' device."""
    if remote_mode(lm) is True:
        return torch.device("cpu")
    return next(lm._module.parameters()).device
