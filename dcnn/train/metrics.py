"""Counting how a classifier does: the one confusion matrix (the CLI and dcnn.viz both use it)."""
from __future__ import annotations

import numpy as np


def class_labels(y, name: str = "y") -> np.ndarray:
    """Integer class labels (N,) from labels, one-hot rows or probabilities."""
    y = np.asarray(y)
    if y.ndim == 2:                       # one-hot or probabilities
        y = y.argmax(axis=1)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{name} must be integer class labels of shape (N,); got dtype {y.dtype}, "
                         f"shape {y.shape}")
    if y.size and y.min() < 0:
        raise ValueError(f"{name} has negative labels")
    return y.astype(np.int64)


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    y_true, y_pred = class_labels(y_true, "y_true"), class_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} and {len(y_pred)}")
    largest = int(max(y_true.max(initial=0), y_pred.max(initial=0)))
    n = num_classes or largest + 1
    if largest >= n:
        raise ValueError(f"label {largest} is outside the {n} classes 0..{n - 1}")
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def per_class_accuracy(counts: np.ndarray) -> np.ndarray:
    """The share of each true class (row) that was predicted right."""
    return np.diag(counts) / np.maximum(counts.sum(axis=1), 1)
