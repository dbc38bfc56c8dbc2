"""``dcnn train --data FOLDER --workers N``: the image folder streamed through ``dcnn.data.loader.Loader``.

Only the file names are read up front; the pictures are decoded (and resized) a batch at a time in N
worker processes (``--workers 0``: in the training process), so a folder far larger than memory
trains.  The test set streams too.  Under MPI each rank's loader reads its part of every global
batch (``rank``/``ranks``: disjoint parts whose union is the epoch).

``StreamData`` stands where the job holds a ``Dataset``: the same names (``name``, ``classes``,
``input_shape``, ``y_train``/``y_test`` as the labels, which are in memory) with ``train``/``test``
loaders in place of the image arrays.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.loader import Loader
from ..data.sources import ImageFiles, image_folder
from ..model.callbacks import Callback


class StreamData:
    """A folder's train and test loaders, and what the job reports about the data."""

    def __init__(self, folder, *, batch_size: int, seed: int, workers: int, strict: bool, image_size=None,
                 channels=None, limit=None, rank: int = 0, ranks: int = 1):
        folder = Path(folder).expanduser()
        train, test = image_folder(folder, seed=seed)
        train, test = _first(train, limit), _first(test, limit)
        size = None if image_size is None else tuple(int(v) for v in image_size)
        common = dict(seed=seed, workers=workers, strict=strict, image_size=size, channels=channels,
                      rank=rank, ranks=ranks)
        self.train = Loader(train, batch_size, shuffle=True, **common)
        self.test = Loader(test, max(batch_size, 256), shuffle=False, **common) if len(test) else None
        self.name, self.source, self.classes = folder.name, folder, tuple(train.classes)
        self.y_train, self.y_test = train.labels, test.labels
        self.input_shape = self.train.input_shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def close(self) -> None:
        for loader in (self.train, self.test):
            if loader is not None:
                loader.close()


def memory_budget() -> int:
    """Bytes a folder may take once decoded and still be loaded whole: a quarter of the memory available
    now (the training itself needs the rest), at most 4 GiB."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):      # no sysconf: assume a small machine
        available = 4 << 30
    return min(available // 4, 4 << 30)


def decoded_bytes(folder, image_size=None, channels=None) -> tuple[int, int]:
    """(images, bytes as float32 once decoded) of an image folder, from its file names and first picture."""
    train, test = image_folder(Path(folder).expanduser())
    count = len(train) + len(test)
    if not count:
        return 0, 0
    size = None if image_size is None else tuple(int(v) for v in image_size)
    with Loader(train, 1, shuffle=False, image_size=size, channels=channels, workers=0) as probe:
        shape = probe.input_shape
    return count, count * int(np.prod(shape)) * 4


def _first(source: ImageFiles, limit):
    """The first ``limit`` images of a source (--limit: a quick run)."""
    if limit is None or limit >= len(source):
        return source
    paths = [source.describe(i) for i in range(limit)]
    return ImageFiles(paths, source.labels[:limit], source.classes, source.name)


class MidEpochCheckpoints(Callback):
    """``--checkpoint-every STEPS``: every STEPS steps inside an epoch, a checkpoint holding the loader's
    position (its RNG streams are keyed by it) and the epoch's running sums, so that ``--resume``
    continues at the next batch and the epoch's history comes out as if never interrupted.

    ``save(epoch, extra)`` writes the checkpoint (the job's ``Checkpointer._save``).  Reading the
    sums waits for the device, once per checkpoint."""

    def __init__(self, every: int, loader, save):
        self.every, self.loader, self.save = int(every), loader, save

    def on_train_begin(self, net, epochs, steps):
        self.net, self.steps = net, steps

    def on_epoch_begin(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, step, logs):
        if (step + 1) % self.every or step + 1 >= self.steps or self.net.stop_training:
            return
        xp = self.net.backend.xp
        sums = self.net.backend.to_numpy(xp.stack([xp.astype(logs["loss_sum"], xp.float64),
                                                   xp.astype(logs["correct"], xp.float64)]))
        self.save(self.epoch, {"mid_epoch": {"epoch": self.epoch, "step": step + 1,
                                             "loader": self.loader.state_dict(),
                                             "sums": {"loss": float(sums[0]), "correct": int(sums[1]),
                                                      "seen": int(logs["seen"])}}})


class ResumeLR(Callback):
    """After the schedule has set the learning rate of an epoch's first step, set that of the step a
    mid-epoch resume starts at (once)."""

    def __init__(self, schedule, step: int):
        self.schedule, self.step = schedule, int(step)

    def on_train_begin(self, net, epochs, steps):
        self.net, self.steps = net, steps

    def on_epoch_begin(self, epoch):
        if self.step:
            self.net.optimizer.lr = self.schedule.lr_at(epoch * self.steps + self.step)
            self.step = 0
