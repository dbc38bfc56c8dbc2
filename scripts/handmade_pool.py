"""A small hand-written pool of worker processes that make batches into shared memory, in order:
a contender in ``scripts/bench_loader.py`` (dcnn's loader runs on grain, which measured as fast
and is kept by others; see dcnn/data/workers.py).

``BatchPool(plan, workers, prefetch)`` runs ``plan(g)`` (a ``BatchPlan``: global step g -> Batch) in
``workers`` processes.  The main process keeps ``workers * prefetch`` steps in flight; step g goes to
worker g % workers, which writes the images into one of a ring of shared-memory slots and sends the
slot's number, the labels and the unreadable files back on a queue.  ``next()`` copies the images
out (so a batch stays valid after the slot is reused) and returns the batches in step order.

Failure never hangs:

- every wait on the result queue has a timeout, after which the workers are checked: a dead one
  (``kill -9``, out of memory) raises ``WorkerError`` naming it and how it ended, within about a second;
- an exception in a worker comes back with its traceback and is raised in the main process;
- workers ignore SIGINT (Ctrl-C stops the main process, which then closes them), and exit by
  themselves when the main process is gone (they poll their parent), so none is orphaned;
- ``close()`` (also at exit and on garbage collection) stops and joins the workers, killing those
  that do not stop in time, and unlinks the shared memory.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import queue
import signal
import traceback
import weakref
from multiprocessing import shared_memory

import numpy as np

POLL_S = 0.5            # how often a waiting main process checks its workers, and a worker its parent
JOIN_S = 2.0            # how long close() waits for a worker before killing it


class WorkerError(RuntimeError):
    """A loader worker died or failed."""


def _slot_bytes(plan) -> int:
    per_image = plan.channels * plan.size[0] * plan.size[1] * np.dtype(_dtype(plan)).itemsize
    return max(1, per_image * plan.batch_size)


def _dtype(plan):
    return getattr(plan.source, "dtype", np.dtype(np.uint8))


def _worker(index, plan, tasks, results, slot_names):
    """A worker's loop: take (g, slot), make batch g into the slot, report; None stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the main process handles Ctrl-C and closes us
    slots = [shared_memory.SharedMemory(name=name) for name in slot_names]
    try:
        while True:
            try:
                task = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if not mp.parent_process().is_alive():     # the main process is gone: stop
                    return
                continue
            if task is None:
                return
            g, slot = task
            try:
                batch = plan(g)
                view = np.ndarray(batch.x.shape, batch.x.dtype, buffer=slots[slot].buf)
                view[...] = batch.x
                results.put(("ok", g, slot, batch.x.shape, batch.x.dtype.str, batch.y, batch.bad, batch.epoch,
                             batch.step))
                del view
            except Exception as exc:                  # noqa: BLE001 - reported to the main process
                results.put(("error", g, slot, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        for s in slots:
            s.close()


class BatchPool:
    """Worker processes making ``plan``'s batches from global step ``start`` on, in order."""

    def __init__(self, plan, workers: int, prefetch: int = 2, start: int = 0, context: str = "forkserver"):
        if workers < 1:
            raise ValueError(f"BatchPool needs at least one worker; got {workers}")
        self.plan, self.workers, self.depth = plan, int(workers), max(1, int(workers) * int(prefetch))
        ctx = mp.get_context(context)
        size = _slot_bytes(plan)
        self._slots = []
        self._procs = []
        self._closed = False
        try:
            self._slots = [shared_memory.SharedMemory(create=True, size=size) for _ in range(self.depth)]
            self._results = ctx.Queue()
            self._tasks = [ctx.Queue() for _ in range(self.workers)]
            names = [s.name for s in self._slots]
            for i in range(self.workers):
                p = ctx.Process(target=_worker, args=(i, plan, self._tasks[i], self._results, names),
                                name=f"dcnn-loader-{i}", daemon=True)
                p.start()
                self._procs.append(p)
        except BaseException:
            self.close()
            raise
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._tasks, self._slots)
        atexit.register(self.close)
        self._free = list(range(self.depth))
        self._sent = self._next = int(start)
        self._ready = {}
        self._fill()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _fill(self):
        while self._free:
            slot = self._free.pop()
            self._tasks[self._sent % self.workers].put((self._sent, slot))
            self._sent += 1

    def _check_workers(self):
        for i, p in enumerate(self._procs):
            if p.exitcode is not None:
                how = (f"was killed by signal {-p.exitcode} ({signal.Signals(-p.exitcode).name})"
                       if p.exitcode < 0 else f"exited with status {p.exitcode}")
                self.close()
                raise WorkerError(f"data loader worker {i} (pid {p.pid}) {how}; the loader has stopped its "
                                  "other workers. If the system ran out of memory, use fewer workers or a "
                                  "smaller prefetch.")

    def __next__(self):
        """The batch of the next global step (its images copied out of shared memory)."""
        if self._closed:
            raise WorkerError("the data loader's workers are closed")
        g = self._next
        while g not in self._ready:
            try:
                message = self._results.get(timeout=POLL_S)
            except queue.Empty:
                self._check_workers()
                continue
            if message[0] == "error":
                _, step, slot, summary, trace = message
                self.close()
                raise WorkerError(f"a data loader worker failed on global step {step}: {summary}\n"
                                  f"worker traceback:\n{trace}")
            self._ready[message[1]] = message
        _, _, slot, shape, dtype, y, bad, epoch, step = self._ready.pop(g)
        x = np.ndarray(shape, np.dtype(dtype), buffer=self._slots[slot].buf).copy()
        self._free.append(slot)
        self._next += 1
        self._fill()
        from dcnn.data.batches import Batch
        return Batch(epoch, step, x, y, bad)

    def close(self):
        """Stop and join the workers (killing any that hang) and unlink the shared memory; idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        _shutdown(self._procs, getattr(self, "_tasks", []), self._slots)
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()


def _shutdown(procs, tasks, slots):
    for q in tasks:
        try:
            q.put_nowait(None)
        except (ValueError, OSError, queue.Full):
            pass
    for p in procs:
        p.join(timeout=JOIN_S)
        if p.is_alive():
            p.kill()
            p.join(timeout=JOIN_S)
    for q in tasks:
        q.cancel_join_thread()
        q.close()
    for s in slots:
        try:
            s.close()
            s.unlink()
        except FileNotFoundError:
            pass
