"""``Loader``: batches streamed from a lazy source, made in worker processes, handed over as uint8.

    from dcnn.data.loader import Loader
    from dcnn.data.sources import image_folder
    from dcnn.data.transforms import Augment

    train, test = image_folder("pets/")                  # file names only
    loader = Loader(train, 128, image_size=(64, 64), workers=2, seed=0,
                    augment=Augment(flip=True, crop_padding=4))
    net.fit(loader, epochs=10)                            # uint8 -> float32 / 255 on the device
    net.evaluate(Loader(test, 256, image_size=(64, 64), shuffle=False))

What a loader promises:

- **Deterministic**: batch ``step`` of ``epoch`` is a pure function of (seed, epoch, step)
  (``dcnn.data.batches``), so the same seed gives the same batches in the same order with 0, 1 or
  N workers, on one rank or sharded.
- **Resumable**: ``state_dict()`` is the position (epoch, step) and what fixes the random streams
  (the seed; the augmentation draws are keyed by position, so they need no other state);
  ``load_state_dict`` on a loader built alike continues with exactly the remaining batches.
- **Sharded**: with ``rank``/``ranks``, each rank gets its contiguous part of every global batch
  (``batch_size`` is the global batch), so the ranks read disjoint parts of every epoch whose union
  is the epoch.  Every rank takes every step, even when its part is empty (a last global batch
  smaller than the ranks), so that they stay in step.
- **Bad data** (truncated, empty, not an image, unreadable, deleted since indexing) is skipped:
  its rows are dropped from the batch (a batch left empty is left out, on one rank), and at the end of the epoch one ``SkippedImagesWarning``
  gives the count and the first few paths with the reasons.  ``strict=True`` raises instead.
- **Visible**: ``last_wait`` is how long the last batch was waited for (``waits``: each step's of this
  epoch); ``fit`` passes it to callbacks as ``data_wait``.  ``last_step`` is that batch's step number,
  ``(epoch, step)`` the position of the next one.
- **Clean**: ``close()`` (or ``with Loader(...)``, or the end of the program) stops the workers; a
  dead worker raises ``WorkerError`` within seconds (``dcnn.data.workers``).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .batches import BatchPlan
from .dataset import CorruptDataError
from .decode import resolve_decoder
from .transforms import Augment
from .workers import GrainWorkers, InProcess, WorkerError, import_grain  # noqa: F401 (WorkerError: API)

STATE_FORMAT = "dcnn.loader/1"
SHOWN_PATHS = 5


class SkippedImagesWarning(UserWarning):
    """Some images could not be read and were left out of their batches."""


def _positive_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return int(value)


class Loader:
    """Batches (x, y) of a source: x uint8 (B, C, H, W) (float32 for float arrays), y int64 (B,)."""

    def __init__(self, source, batch_size: int = 32, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, augment: Augment | None = None, image_size=None,
                 channels: int | None = None, decoder: str = "auto", workers: int = 0, prefetch: int = 2,
                 rank: int = 0, ranks: int = 1, strict: bool = False, split: str = "train"):
        if isinstance(source, (str, Path)):
            from .sources import open_sources
            train, test = open_sources(source, seed=seed)
            source = {"train": train, "test": test}[split]
        if not (hasattr(source, "load") and hasattr(source, "labels")):
            raise TypeError(f"source must be a dcnn.data.sources source (ImageFiles, ArrayImages) or a path; "
                            f"got {type(source).__name__}")
        if len(source) == 0:
            raise ValueError(f"{source!r} holds no images")
        if augment is not None and not isinstance(augment, Augment):
            raise TypeError(f"augment must be a dcnn.data.transforms.Augment; got {type(augment).__name__}")
        self.workers = _positive_int("workers", workers, 0)
        if self.workers:
            import_grain()                    # now, not at the first batch: a clear ImportError when missing
        self.prefetch = _positive_int("prefetch", prefetch)
        ranks, rank = _positive_int("ranks", ranks), _positive_int("rank", rank, 0)
        if rank >= ranks:
            raise ValueError(f"rank must be in [0, {ranks - 1}] for {ranks} ranks; got {rank}")
        c, size = source.probe() if (channels is None or image_size is None) else (None, None)
        if channels is not None:
            if channels not in (1, 3):
                raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB); got {channels!r}")
            c = channels
        if image_size is not None:
            size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
            if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
                raise ValueError(f"image_size must be (height, width) of positive ints, or one int; got {image_size!r}")
        c, size = int(c), tuple(int(v) for v in size)
        if hasattr(source, "layout") and (c, size) != (source.channels, source.size):
            raise ValueError(f"{source.name} holds {source.channels}x{source.size[0]}x{source.size[1]} images; "
                             f"arrays are not resized or recoloured, so channels and image_size must match or be left out")
        self.strict = bool(strict)
        self.plan = BatchPlan(source, _positive_int("batch_size", batch_size), c, size, seed=_positive_int("seed", seed, 0),
                              shuffle=bool(shuffle), drop_last=bool(drop_last), augment=augment,
                              decoder=resolve_decoder(decoder) if hasattr(source, "read") else "",
                              rank=rank, ranks=ranks)
        if self.plan.steps == 0:
            raise ValueError(f"{len(source)} images make no whole batch of {batch_size} (drop_last=True)")
        self.epoch, self.step, self.last_step = 0, 0, None
        self.last_wait, self.waits = 0.0, []
        self.skipped, self.skipped_total = [], 0
        self._engine = None

    # --- what it holds ------------------------------------------------------------------------------
    @property
    def source(self):
        return self.plan.source

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.plan.channels, *self.plan.size)

    @property
    def classes(self) -> tuple:
        return tuple(self.source.classes)

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def rank(self) -> int:
        return self.plan.rank

    @property
    def ranks(self) -> int:
        return self.plan.ranks

    def __len__(self) -> int:
        """Batches per epoch (some may come out smaller, or be left out, when images are unreadable)."""
        return self.plan.steps

    def __repr__(self):
        return (f"Loader({self.source!r}, batch_size={self.batch_size}, input_shape={self.input_shape}, "
                f"workers={self.workers}, epoch={self.epoch}, step={self.step}/{len(self)})")

    # --- iterating ----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch`` unless already in it (as torch's ``DistributedSampler.set_epoch``;
        a loader restored mid-epoch keeps its place)."""
        epoch = _positive_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self._report_skipped()
            self.epoch, self.step = epoch, 0

    def __iter__(self):
        """The remaining batches of the current epoch.  The position is always that of the next batch:
        with the last batch of an epoch the loader moves on to the start of the next one."""
        if self.step >= len(self):
            self._next_epoch()
        steps = len(self)
        engine = self._engine_at(self.epoch * steps + self.step)
        if self.step == 0:
            self.waits = []
        for step in range(self.step, steps):
            t = time.perf_counter()
            try:
                batch = next(engine)
            except BaseException:             # a dead worker, Ctrl-C while waiting: stop them all
                self._stop_engine()
                raise
            self.last_wait = time.perf_counter() - t
            self.waits.append(self.last_wait)
            self.last_step, self.step = step, step + 1
            if batch.bad:
                self._bad(batch.bad)
            if self.step == steps:
                self._next_epoch()
            if len(batch.y) or self.ranks > 1:       # ranks stay in step: each takes every step
                yield batch.x, batch.y

    def _engine_at(self, g: int):
        if self._engine is None or self._engine.next_step != g:
            self._stop_engine()
            self._engine = InProcess(self.plan, g) if self.workers == 0 else \
                GrainWorkers(self.plan, self.workers, self.prefetch, g)
        return self._engine

    def _bad(self, bad):
        if self.strict:
            path, reason = bad[0]
            self.close()
            raise CorruptDataError(f"{path} cannot be read: {reason} (strict=True stops on unreadable images; "
                                   "without it they are skipped with a warning)")
        self.skipped += list(bad)
        self.skipped_total += len(bad)

    def _next_epoch(self):
        self._report_skipped()
        self.epoch, self.step = self.epoch + 1, 0

    def _report_skipped(self):
        if self.skipped:
            shown = "; ".join(f"{path} ({reason})" for path, reason in self.skipped[:SHOWN_PATHS])
            more = f"; and {len(self.skipped) - SHOWN_PATHS} more" if len(self.skipped) > SHOWN_PATHS else ""
            warnings.warn(f"{len(self.skipped)} image{'s' if len(self.skipped) > 1 else ''} of {self.source.name} could "
                          f"not be read in epoch {self.epoch} and {'were' if len(self.skipped) > 1 else 'was'} skipped: "
                          f"{shown}{more}. Pass strict=True to stop on the first one.", SkippedImagesWarning,
                          stacklevel=3)
            self.skipped = []

    # --- resuming -----------------------------------------------------------------------------------
    def _identity(self) -> dict:
        p = self.plan
        return {"images": len(p.source), "batch_size": p.batch_size, "seed": p.seed, "shuffle": p.shuffle,
                "drop_last": p.drop_last, "rank": p.rank, "ranks": p.ranks,
                "augment": None if p.augment is None else asdict(p.augment),
                "input_shape": list(self.input_shape), "decoder": p.decoder}

    def state_dict(self) -> dict:
        """The position and what fixes its random streams, as plain JSON-friendly values."""
        return {"format": STATE_FORMAT, "epoch": self.epoch, "step": self.step, **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` was taken: the next batch is the one that followed it there.
        The loader must be built as that one was (same images, batch size, seed, augmentation...)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a loader state ({STATE_FORMAT}): {state!r:.200}")
        mine = self._identity()
        differ = [f"{k} {state.get(k)!r} (this loader: {v!r})" for k, v in mine.items() if state.get(k) != v]
        if differ:
            raise ValueError("the loader state was taken from a loader built differently, so the remaining batches "
                             "would not be the same: " + "; ".join(differ))
        epoch, step = _positive_int("epoch", state["epoch"], 0), _positive_int("step", state["step"], 0)
        if step > len(self):
            raise ValueError(f"the loader state's step {step} is past the epoch's {len(self)} batches")
        self._report_skipped()
        self.epoch, self.step = epoch, step

    # --- closing ------------------------------------------------------------------------------------
    def _stop_engine(self):
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def close(self) -> None:
        """Stop the workers and free their shared memory.  Iterating again starts new ones."""
        self._stop_engine()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        self._report_skipped()

    def __del__(self):
        try:
            self._stop_engine()
        except Exception:                 # noqa: BLE001 - at interpreter exit, modules may be gone
            pass
