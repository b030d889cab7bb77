"""Background batch prefetch for crosscoder training: the reader works while the step runs.

Reading a store batch (gather rows out of the memory map, widen bfloat16 to
float32, multiply by the normalisation scalars, check for NaN) is single-threaded
work that, done in line, stalls the optimiser step: end-to-end training from a
bfloat16 store ran at a fraction of the step-only rate. :class:`Prefetcher` runs
the batch iterator in a thread, ``depth`` batches ahead. On CUDA it pins each raw
batch and copies it with ``non_blocking=True`` on a side stream, then widens and
normalises it on the GPU, so the host moves half the bytes of a bfloat16 store and
does no arithmetic (the NaN check runs on the GPU too). Numerics are those of the
store reader (cast, then multiply).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple

import torch

_DONE = object()


class Prepared(NamedTuple):
    """One training batch, ready on the device."""

    x: torch.Tensor
    """``[batch, n_models, d_model]`` float32 normalised activations on the training device."""
    finite: bool
    """False when the batch holds a NaN or inf (the trainer stops with a clear error)."""


def prepare(raw, scales: torch.Tensor | None, device: torch.device | str) -> Prepared:
    """Widen to float32, normalise (``x * scales[None, :, None]``), move to ``device``; checked for NaN/inf."""
    raw = getattr(raw, "acts", raw)  # [B, M, d] (a StoreBatch or a tensor)
    finite = bool(torch.isfinite(raw).all())
    x = raw.to(device=device, dtype=torch.float32)
    if scales is not None:
        x = x.mul_(scales.to(device=x.device, dtype=torch.float32)[None, :, None])
    return Prepared(x, finite)


class Prefetcher:
    """Iterate ``batches`` in a background thread, ``depth`` ahead, yielding :class:`Prepared` batches.

    Errors raised by the iterator (e.g. a corrupt shard) are raised again by ``next``
    in the training thread. ``waited_s`` is the time the trainer spent waiting for data.
    Call :meth:`close` (or use it as a context manager) to stop the thread.
    """

    def __init__(
        self,
        batches: Iterator,
        *,
        device: torch.device | str = "cpu",
        scales: torch.Tensor | None = None,
        depth: int = 3,
    ):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.scales = None if scales is None else scales.to(self.device, torch.float32)
        self.waited_s = 0.0
        self._batches = batches
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._stream = None
        if self.cuda:
            self._stream = torch.cuda.Stream(self.device)
            # the side stream must see what the main stream queued so far (the scales' copy)
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        self._thread = threading.Thread(target=self._work, name="crosscoder-prefetch", daemon=True)
        self._thread.start()

    def _produce(self, raw):
        if not self.cuda:
            return prepare(raw, self.scales, self.device), None
        raw = getattr(raw, "acts", raw)
        pinned = raw.pin_memory()  # page-locked: the copy below overlaps the running step
        with torch.cuda.stream(self._stream):
            x = pinned.to(self.device, non_blocking=True).to(torch.float32)
            if self.scales is not None:
                x.mul_(self.scales[None, :, None])
            # checked on the GPU: on the host this pass costs as much as reading the batch
            finite = torch.isfinite(x).all()
            event = torch.cuda.Event()
            event.record(self._stream)
        return Prepared(x, finite), event

    def _work(self) -> None:
        try:
            for raw in self._batches:
                item = self._produce(raw)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final(_DONE)
        except BaseException as err:  # handed to the training thread, raised there
            self._put_final(err)

    def _put_final(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Prepared:
        start = time.perf_counter()
        item = self._queue.get()
        self.waited_s += time.perf_counter() - start
        if item is _DONE:
            self._queue.put(_DONE)  # later calls stop too
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(item)
            raise item
        prepared, event = item
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            prepared.x.record_stream(stream)  # allocated on the side stream, used on this one
            prepared = Prepared(prepared.x, bool(prepared.finite))
        return prepared

    def close(self) -> None:
        """Stop the background thread (it may be blocked inside the iterator for one batch)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
