"""Which images make each batch, and the batch itself: a pure function of (epoch, step).

``BatchPlan`` is what a loader sends to its workers.  Batch ``step`` of ``epoch`` is

- the images ``order(epoch)[step * B:(step + 1) * B]``, where ``order`` is a permutation drawn from
  (seed, epoch) (or 0..N-1 without shuffling), B the *global* batch size;
- of those, rank r of ``size`` ranks takes the r-th contiguous part (sizes differing by at most one,
  as ``dcnn.distributed`` shards a global batch), so the ranks read disjoint parts of every epoch
  and their union is the epoch;
- augmented with draws from a generator keyed by (seed, epoch, step), one row per image of the
  global batch, each rank using its rows.

So a batch never depends on which worker made it, how many workers there are, or what came
before it: the same seed gives the same batches, and a loader resumes from (epoch, step) alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .transforms import DRAWS, Augment

_ORDER, _AUGMENT = 0x0D3E, 0xA06


class Batch(NamedTuple):
    """A batch as a worker hands it over: uint8 (or float32) images (b, C, H, W), int64 labels (b,),
    and the images that could not be read as (path, reason).  (A named tuple, so that grain moves
    its arrays through shared memory.)"""
    epoch: int
    step: int
    x: np.ndarray
    y: np.ndarray
    bad: tuple = ()


def shard_span(n: int, rank: int, size: int) -> tuple[int, int]:
    """(start, stop) of rank's contiguous part of n items (as dcnn.distributed.data_parallel.shard_span)."""
    return rank * n // size, (rank + 1) * n // size


@dataclass
class BatchPlan:
    source: object
    batch_size: int
    channels: int
    size: tuple
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False
    augment: Augment | None = None
    decoder: str = "pillow"
    rank: int = 0
    ranks: int = 1

    def __post_init__(self):
        self._cached = (None, None)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_cached"}

    def __setstate__(self, state):
        self.__dict__.update(state, _cached=(None, None))

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        n = len(self.source)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of the source (kept for the last epoch asked)."""
        if self._cached[0] != epoch:
            n = len(self.source)
            order = np.random.default_rng(np.random.SeedSequence([self.seed, _ORDER, epoch])).permutation(n) \
                if self.shuffle else np.arange(n)
            self._cached = (epoch, order)
        return self._cached[1]

    def global_indices(self, epoch: int, step: int) -> np.ndarray:
        return self.order(epoch)[step * self.batch_size:(step + 1) * self.batch_size]

    def indices(self, epoch: int, step: int) -> np.ndarray:
        """This rank's source indices of batch ``step``."""
        found = self.global_indices(epoch, step)
        start, stop = shard_span(len(found), self.rank, self.ranks)
        return found[start:stop]

    def draws(self, epoch: int, step: int) -> np.ndarray:
        """This rank's rows of the augmentation draws of batch ``step``."""
        n = len(self.global_indices(epoch, step))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _AUGMENT, epoch, step]))
        start, stop = shard_span(n, self.rank, self.ranks)
        return rng.random((n, DRAWS))[start:stop]

    def __call__(self, key) -> Batch:
        """Batch ``key`` = (epoch, step), or a global step number (epoch * steps + step)."""
        epoch, step = divmod(int(key), self.steps) if np.isscalar(key) else (int(key[0]), int(key[1]))
        idx = self.indices(epoch, step)
        x, bad = self.source.load(idx, self.channels, self.size, self.decoder)
        if self.augment is not None and self.augment.active and len(idx):
            x = self.augment(x, self.draws(epoch, step))
        y = self.source.labels[idx]
        if bad:
            keep = np.ones(len(idx), bool)
            keep[[k for k, _, _ in bad]] = False
            x, y = x[keep], y[keep]
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return Batch(epoch, step, x, np.ascontiguousarray(y), tuple((path, why) for _, path, why in bad))
