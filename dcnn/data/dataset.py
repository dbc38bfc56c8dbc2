"""A dataset in memory (``Dataset``) and the errors that loading any dataset raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(Exception):
    """A dataset cannot be loaded; the message says which file or which places, and what to do."""


class DataNotFoundError(DatasetError, FileNotFoundError):
    pass


class CorruptDataError(DatasetError, ValueError):
    pass


@dataclass
class Dataset:
    """Images as float32 (N, C, H, W) in [0, 1]; labels as int64: one per image (N,) for
    classification, or one per pixel (N, H, W) for segmentation (``task`` says which), each a class
    index into ``classes``."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def task(self) -> str:
        """'classification' (a label per image) or 'segmentation' (a label per pixel: y is (N, H, W))."""
        return "segmentation" if self.y_train.ndim == 3 else "classification"

    def limit(self, count: int | None) -> "Dataset":
        """The first ``count`` training images and the first ``count`` test images: a quick run
        is quick to test too (a test pass over all 10,000 images after 100 training ones would not be)."""
        if count is None or count >= max(len(self.y_train), len(self.y_test)):
            return self
        if count < 1:
            raise ValueError(f"limit must be a positive number of training images; got {count}")
        return Dataset(self.name, self.x_train[:count], self.y_train[:count], self.x_test[:count], self.y_test[:count],
                       self.classes, self.source, dict(self.meta))

    def split_validation(self, fraction: float, seed: int = 0) -> tuple["Dataset", tuple]:
        """(this dataset less a held-out ``fraction`` of its training images, (x_val, y_val)).

        The held-out images are a seeded random sample, never trained on; the test set is untouched.
        """
        if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
            raise ValueError(f"the validation split must be a fraction between 0 and 1; got {fraction!r}")
        n = len(self.y_train)
        n_val = int(round(n * fraction))
        if not 0 < n_val < n:
            raise ValueError(f"a validation split of {fraction} leaves no training or no validation images "
                             f"out of {n}")
        order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A1])).permutation(n)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        rest = Dataset(self.name, self.x_train[train], self.y_train[train], self.x_test, self.y_test, self.classes,
                       self.source, dict(self.meta))
        return rest, (self.x_train[val], self.y_train[val])

    def __repr__(self):
        return (f"Dataset({self.name!r}, train {self.x_train.shape}, test {self.x_test.shape}, "
                f"source={str(self.source)!r})")
