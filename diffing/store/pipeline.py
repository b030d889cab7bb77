"""The harvest's pipeline stages around the models: batches made ahead, copies and writes behind.

Three threads keep the device busy (the design and its measurements are in
docs/benchmarks/harvest-pipeline.md):

- a **prefetch** thread tokenizes the stream and builds the next batches (sorted by
  length within each group, padded only when their lengths differ, input ids pinned
  when the models sit on a GPU) while the models run;
- the **main** thread only queues work on the device: both models' forwards, the keep
  mask and the device-to-host copies of the kept layers into pinned buffers, none of
  which waits for the device;
- a **writer** thread waits for each batch's copies, selects the kept rows, and writes
  shards (serialisation, checksum, fsync, squared-norm sums) while the next batches run.

Each stage hands over in order, so the shards are the same bytes as a harvest that
does everything in one thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import torch

from diffing.store.sequences import Sequence
from diffing.tokens import Batch, Encoded, pad_batch

_POLL_S = 0.1
"""How often a blocked hand-over checks whether the other side failed."""


class Prepared(NamedTuple):
    """One batch ready for the models."""

    seqs: list[Sequence]
    """Its sequences, in batch order."""
    batch: Batch
    """Right-padded ids, mask and roles ``[batch, seq]`` (host; ids pinned for a GPU)."""
    padded: bool
    """True when the sequences differ in length (the models need the attention mask)."""
    group_end: int | None
    """Stream index after the group when this batch ends one (a shard may end here), else None."""


def prepare_batches(
    groups: Iterable[list[Sequence]], batch_size: int, pad_id: int, *, pin: bool = False
) -> Iterator[Prepared]:
    """Each group sorted by length and cut into batches; equal-length batches need no mask."""
    for group in groups:
        ordered = sorted(group, key=lambda s: len(s.input_ids))
        starts = range(0, len(ordered), batch_size)
        for i in starts:
            part = ordered[i : i + batch_size]
            batch = pad_batch([Encoded(s.input_ids, s.roles) for s in part], pad_id)
            if pin:
                batch = Batch(
                    batch.input_ids.pin_memory(), batch.attention_mask.pin_memory(), batch.roles
                )
            padded = len({len(s.input_ids) for s in part}) > 1
            last = i == starts[-1]
            yield Prepared(part, batch, padded, group[-1].seq_id + 1 if last else None)


class Prefetcher:
    """Runs an iterator on a background thread, ``depth`` items ahead; errors re-raise on the consumer."""

    _DONE = object()

    def __init__(self, items: Iterable, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(iter(items),), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as err:  # handed to the consumer
            self._error = err
        self._put(self._DONE)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        """Stop the background thread (it may be blocked on a full queue)."""
        self._stop.set()
        self._thread.join(timeout=5)


class HostCopy(NamedTuple):
    """One batch's kept layers on their way to the host."""

    acts: torch.Tensor
    """``[n_layers, batch, seq, n_models, d_model]`` (a view of a pinned buffer when copied from a GPU)."""
    keep: torch.Tensor
    """``[batch, seq]`` bool: positions to store."""
    event: torch.cuda.Event | None
    """Recorded after the copies; the writer waits on it (None: already on the host)."""
    slot: int | None
    """Pinned buffer to hand back once the rows are taken (None: no buffer)."""


class HostCopier:
    """Copies device tensors into a ring of pinned host buffers without waiting for the device.

    A buffer goes back to the ring when the writer has taken its rows, so at most
    ``slots`` batches are in flight; on a CPU device nothing is copied.
    """

    def __init__(self, slots: int = 3):
        self._free: queue.Queue = queue.Queue()
        self._bufs: list[dict[str, torch.Tensor]] = [{} for _ in range(slots)]
        for i in range(slots):
            self._free.put(i)

    def _pinned(self, slot: int, name: str, like: torch.Tensor) -> torch.Tensor:
        buf = self._bufs[slot].get(name)
        if buf is None or buf.dtype != like.dtype or buf.numel() < like.numel():
            buf = torch.empty(like.numel(), dtype=like.dtype, pin_memory=True)
            self._bufs[slot][name] = buf
        return buf[: like.numel()].view(like.shape)

    def copy(self, acts: torch.Tensor, keep: torch.Tensor, alive: Callable[[], None]) -> HostCopy:
        """Start copying ``acts`` and ``keep`` to the host; ``alive`` raises if the writer failed."""
        if acts.device.type != "cuda":
            return HostCopy(acts, keep, None, None)
        while True:
            alive()
            try:
                slot = self._free.get(timeout=_POLL_S)
                break
            except queue.Empty:
                continue
        host = self._pinned(slot, "acts", acts)
        host_keep = self._pinned(slot, "keep", keep)
        host.copy_(acts, non_blocking=True)
        host_keep.copy_(keep, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return HostCopy(host, host_keep, event, slot)

    def release(self, slot: int | None) -> None:
        """Hand a buffer back once its rows have been taken."""
        if slot is not None:
            self._free.put(slot)


class Writer:
    """A background thread applying ``handle`` to each job in order; its errors re-raise on the caller.

    The caller's :meth:`put` and :meth:`finish` re-raise whatever ``handle`` raised (an
    interruption in a test hook, a full disk) so the harvest stops with it, leaving only
    complete shards behind.
    """

    _DONE = object()

    def __init__(self, handle: Callable, depth: int = 4):
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is self._DONE or self._abort.is_set():
                return
            try:
                self._handle(job)
            except BaseException as err:  # handed to the caller
                self._error = err
                return

    def check(self) -> None:
        """Re-raise the writer's error, if any."""
        if self._error is not None:
            raise self._error

    def put(self, job) -> None:
        """Queue a job (blocks while the writer is ``depth`` jobs behind)."""
        while True:
            self.check()
            try:
                self._queue.put(job, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every queued job is handled; re-raise the writer's error."""
        self.put(self._DONE)
        while self._thread.is_alive():
            self._thread.join(timeout=_POLL_S)
        self.check()

    def abort(self) -> None:
        """Drop queued jobs and stop (the caller is failing)."""
        self._abort.set()
        try:
            self._queue.put_nowait(self._DONE)
        except queue.Full:
            pass
        self._thread.join(timeout=30)
