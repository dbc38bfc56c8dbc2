"""Counting how a classifier does: the one confusion matrix (the CLI and dcnn.viz both use it), and its
per-pixel twin for a segmentation model (``dense_confusion_matrix``, ``final_confusion_matrix``,
``segmentation_scores``)."""
from __future__ import annotations

import numpy as np

from ..model import fitting
from ..model.metrics import ConfusionMatrix, iou_per_class


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


def dense_confusion_matrix(net, x, y, batch_size: int = 128) -> np.ndarray:
    """Pixel counts[true, predicted] of a per-pixel classifier over images ``x`` and masks ``y`` (host
    arrays), in eval mode: summed on the device (``metrics.ConfusionMatrix``) and read back once."""
    fitting.check_batch_size(batch_size)
    matrix = ConfusionMatrix(net.num_classes, ignore_index=getattr(net.loss, "ignore_index", None))
    matrix.reset(net.backend)
    for start, stop in fitting.spans(len(x), batch_size):
        xb = fitting.device_images(net, x[start:stop])     # a batch at a time: the test set stays on the host
        matrix.update(net.logits(xb, training=False), fitting.targets(net, y[start:stop], xb.shape[0]))
    return matrix.result()


def final_confusion_matrix(net, x, y, batch_size: int = 128, *, last_pass_was_this: bool = False) -> np.ndarray:
    """``dense_confusion_matrix(net, x, y)``, taken from the network's latest evaluation where that
    pass was over these images with these weights (``last_pass_was_this``: fit's last validation pass
    was on this test set) and counted every pixel of ``y``: one pass over the test set, not two."""
    ignore = getattr(net.loss, "ignore_index", None)
    if last_pass_was_this and net.last_evaluation is not None:
        counted = np.asarray(y).size if ignore is None else int(np.count_nonzero(np.asarray(y) != ignore))
        for metric in net.last_evaluation.device:
            if isinstance(metric, ConfusionMatrix) and metric.ignore_index == ignore:
                counts = ConfusionMatrix.result(metric)     # the counts, whatever the subclass makes of them
                if int(counts.sum()) == counted:
                    return counts
    return dense_confusion_matrix(net, x, y, batch_size)


def segmentation_scores(counts: np.ndarray, classes) -> dict:
    """Mean IoU, pixel accuracy and each class's IoU (by name; None for a class in neither the masks nor the
    predictions, which the mean leaves out, as torchmetrics does) from a pixel confusion matrix."""
    counts = np.asarray(counts, np.int64)
    present = (counts.sum(0) + counts.sum(1)) > 0
    iou = iou_per_class(counts)
    total = int(counts.sum())
    return {"miou": float(iou[present].mean()) if present.any() else None,
            "pixel_accuracy": float(np.trace(counts) / total) if total else None,
            "per_class_iou": {str(name): float(v) if seen else None for name, v, seen in zip(classes, iou, present)},
            "confusion_matrix": counts.tolist(), "pixels": total}
