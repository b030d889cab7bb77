"""A dependency-free progress bar for long harvests: tokens done, tokens/s, ETA (stderr)."""

from __future__ import annotations

import sys
import time


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressBar:
    """``harvest [####......] 1.2M/10.0M tokens  35.1k tok/s  ETA 0:04:10`` redrawn at most twice a second."""

    def __init__(
        self,
        total: int,
        *,
        done: int = 0,
        label: str = "harvest",
        enabled: bool = True,
        stream=None,
        width: int = 24,
    ):
        self.total = max(int(total), 1)
        self.start_done = self.done = int(done)
        self.label, self.enabled, self.width = label, enabled, width
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._last = 0.0

    @property
    def rate(self) -> float:
        """Tokens per second since this bar started (resumed tokens excluded)."""
        return (self.done - self.start_done) / max(time.perf_counter() - self.t0, 1e-9)

    def line(self) -> str:
        """The current bar as text."""
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * self.width)
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_s = _fmt_time(eta) if eta == eta else "?"
        return (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {_fmt_count(self.done)}/{_fmt_count(self.total)} tokens"
            f"  {_fmt_count(rate)} tok/s  ETA {eta_s}"
        )

    def update(self, n: int) -> None:
        """Add ``n`` processed tokens; redraw if half a second has passed."""
        self.done += int(n)
        now = time.perf_counter()
        if self.enabled and now - self._last >= 0.5:
            self._last = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
