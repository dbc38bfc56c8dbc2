"""Where a loader's batches are made: in the main process (``workers=0``) or in worker processes on
Google's grain (``workers=N``).

Both run a ``BatchPlan`` (global step g -> Batch) from a given step on and hand the batches over
in order.  Grain was chosen by measurement (``scripts/bench_loader.py``): on 64x64 JPEGs with two
workers it made batches as fast as PyTorch's ``DataLoader`` (on the same batch function) and
faster than a hand-written pool (``scripts/handmade_pool.py``), and it is kept by others.  It is used as

    MapDataset.range(start, ...).map(plan).to_iter_dataset(ReadOptions(num_threads=0))
        .mp_prefetch(MultiprocessingOptions(num_workers=N, per_worker_buffer_size=prefetch))

- one element is one whole batch (made by dcnn's vectorised augmentation), worker i making steps
  i, i + N, ...; grain interleaves them back in order and moves the arrays through shared memory;
- ``num_threads=0``: grain's default (16 threads and 500 buffered elements per worker) held about
  800 MB per worker here, for no gain;
- the workers are spawned once and live across epochs (the step numbers run on); they ignore
  SIGINT (the main process closes them) and exit when the main process is gone (a watchdog thread),
  so Ctrl-C or a kill of the main process leaves no orphans;
- a worker killed (kill -9, out of memory) is noticed by grain within about a second and raised
  here as ``WorkerError``;
- a batch's images are written once, by the worker, into a shared-memory segment named after the
  loader and the step: whatever a killed worker leaves there is unlinked by name when the loader
  closes (or, if the main process was killed, by the workers' watchdog).
"""
from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re
import secrets
import signal
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from .batches import Batch

POLL_S = 0.5          # how often a worker checks that the main process is still there
SPAN = 1 << 40        # steps a grain pipeline runs for: more than any run takes
GRAIN_HINT = "pip install grain (in a clone of dcnn: pip install -e '.[stream]')"
MAIN_GUARD = ("a loader's worker processes start by importing the main script, so a script that makes a loader "
              "with workers > 0 must do so under `if __name__ == \"__main__\":` (as with multiprocessing)")


class WorkerError(RuntimeError):
    """A loader worker died or failed; the loader's workers have been stopped."""


class _NoJaxProfilerWarning(logging.Filter):
    def filter(self, record):      # grain looks for JAX's profiler at import and warns when it is absent
        return "jax profiler" not in record.getMessage()


def import_grain():
    """grain, quietly; an ImportError that says what to install when it is missing."""
    logging.getLogger("absl").addFilter(_NoJaxProfilerWarning())
    try:
        import grain
    except ImportError as exc:
        raise ImportError(f"a loader with workers > 0 runs its workers on grain, which is not installed "
                          f"({exc}): {GRAIN_HINT}; or use workers=0 (batches made in this process)") from None
    return grain


SHM_DIR = Path("/dev/shm")


def unlink_segments(prefix: str) -> int:
    """Unlink the shared-memory segments whose names start with ``prefix`` (Linux: listed in /dev/shm;
    elsewhere nothing is found); how many.  What a dead worker made and no one will free."""
    count = 0
    for entry in SHM_DIR.glob(prefix + "*") if SHM_DIR.is_dir() else ():
        try:
            shared_memory.SharedMemory(entry.name).unlink()     # (unregisters it from the resource tracker)
            count += 1
        except (FileNotFoundError, OSError):
            pass
    return count


def _watch_parent(parent: int, prefix: str) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:         # the main process is gone (killed): do not outlive it
            unlink_segments(prefix)
            os._exit(0)


def _worker_init(parent: int, prefix: str, index: int, count: int) -> None:
    """Run in each worker before it starts: Ctrl-C is the main process's to handle (it closes us)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent, prefix), daemon=True, name="dcnn-parent-watch").start()


class _IntoSharedMemory:
    """The plan's batch with its images written once into a shared-memory segment named
    ``<prefix><step>``: grain passes it on as it is (no second copy), and the loader can find and
    unlink, by name, whatever a worker that died had made."""

    def __init__(self, plan, prefix: str):
        self.plan, self.prefix = plan, prefix

    def __call__(self, g: int) -> Batch:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
        b = self.plan(g)
        shm = shared_memory.SharedMemory(name=f"{self.prefix}{g:x}", create=True, size=max(1, b.x.nbytes))
        x = SharedMemoryArray.from_shared_memory(shm, b.x.shape, b.x.dtype)
        x[...] = b.x
        return Batch(b.epoch, b.step, x, b.y, b.bad)


def _explain(exc: Exception) -> str:
    """What grain's error means, for someone who has never heard of grain."""
    found = re.search(r"terminated unexpectedly with exit code (-?\d+)", str(exc))
    if found is None:
        return f"a data loader worker failed: {type(exc).__name__}: {exc}"
    code = int(found.group(1))
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}" + (" (kill -9, or the system ran out of memory)" if -code == signal.SIGKILL else "")
    else:
        how = f"exited with status {code}"
    hint = f" If it stopped as it started: {MAIN_GUARD}." if code == 1 else ""
    return f"a data loader worker process {how}; the other workers have been stopped.{hint}"


class InProcess:
    """Batches made in the calling process, one at a time, when asked."""

    workers = 0

    def __init__(self, plan, start: int):
        self.plan, self.next_step = plan, int(start)

    def __next__(self) -> Batch:
        batch = self.plan(self.next_step)
        self.next_step += 1
        return batch

    def close(self):
        pass


class GrainWorkers:
    """``workers`` grain processes making the plan's batches from global step ``start`` on."""

    def __init__(self, plan, workers: int, prefetch: int, start: int):
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # A worker re-imports the main script as it starts; a script without a main guard then
            # makes loaders of its own, which would start workers of their own, and so on.
            raise RuntimeError(MAIN_GUARD)
        grain = import_grain()
        self.workers, self.next_step = int(workers), int(start)
        self.prefix = f"dcnn{os.getpid():x}_{secrets.token_hex(3)}_"      # short: macOS allows 31 characters
        ds = grain.MapDataset.range(start, start + SPAN).map(_IntoSharedMemory(plan, self.prefix))
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=1))
        # the labels and the rest travel pickled; only the images go through shared memory
        ds = grain.experimental.WithOptionsIterDataset(ds, grain.experimental.DatasetOptions(min_shm_size=1 << 16))
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=prefetch),
                            worker_init_fn=functools.partial(_worker_init, os.getpid(), self.prefix))
        self._it = iter(ds)

    def __next__(self) -> Batch:
        if self._it is None:
            raise WorkerError("the data loader's workers are closed")
        try:
            b = next(self._it)
        except Exception as exc:                  # noqa: BLE001 - a worker died or raised
            self.close()
            raise WorkerError(_explain(exc)) from exc
        self.next_step += 1
        # The arrays arrive in shared memory (grain unlinks it when they are freed); np.asarray keeps
        # them alive as plain ndarray views.
        return Batch(int(b.epoch), int(b.step), np.asarray(b.x), np.asarray(b.y), tuple(map(tuple, b.bad)))

    def close(self):
        """Stop the workers (grain joins them, killing any that hang) and free their shared memory,
        also what a worker that died left behind."""
        it, self._it = getattr(self, "_it", None), None
        if it is not None:
            it.close()
            unlink_segments(self.prefix)

    def __del__(self):
        self.close()
