"""Counting predictions, generic versions: the predicted classes and the confusion matrix that the
class metrics (accuracy, confusion matrix, IoU, Dice) add up every step."""
from __future__ import annotations

EXACT_FLOAT32_COUNT = 1 << 24     # counts up to this are exact in float32


class CountOps:
    def class_argmax(self, outputs):
        """The predicted class of every position: the arg-max over axis 1 (first maximum, or first
        NaN, as NumPy's), int64 of the outputs' shape without axis 1."""
        return self.xp.argmax(outputs, axis=1)

    def confusion_counts(self, predicted, labels, k: int, ignore_index=None):
        """counts[true, predicted] (k, k) int64 over every position, skipping labels equal to
        ``ignore_index``; ``predicted`` and ``labels`` are integer arrays of one shape.

        One-hot rows and one product: no scatter-add, which not every array namespace has."""
        xp = self.xp
        m = 1
        for d in labels.shape:
            m *= int(d)
        dtype = xp.float32 if m <= EXACT_FLOAT32_COUNT else xp.float64
        classes = xp.reshape(xp.arange(k, dtype=labels.dtype, device=self.device), (1, k))
        true = xp.astype(xp.reshape(labels, (m, 1)) == classes, dtype)
        if ignore_index is not None:    # an ignored label's row of ``true`` is all 0 once masked
            true = true * xp.astype(xp.reshape(labels != ignore_index, (m, 1)), dtype)
        hit = xp.astype(xp.reshape(xp.astype(predicted, labels.dtype), (m, 1)) == classes, dtype)
        return xp.astype(xp.matrix_transpose(true) @ hit, xp.int64)
