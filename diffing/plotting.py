"""The figures' one entry into matplotlib: the Agg backend and one way to save a PNG.

Every method draws its figures from its own JSON numbers with the non-interactive Agg
backend (no display needed, the same on a server and a laptop) and saves them the
same way, so a change of resolution or layout is made here once.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` (a PNG; its folder is created) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
