"""Metrics as Keras has them: objects that sum what they need on the device, batch after batch,
and are read once (per epoch, per evaluation).

    metric.reset(backend)            # zero the running sums, on that backend's device
    metric.update(outputs, targets)  # device arrays of one batch; queues device work, never waits
    metric.result()                  # host numbers, from one device-to-host transfer
    metric.logs()                    # {name: float} for History, callbacks and the CSV log
    metric.clone()                   # another with its own sums (validation beside training)

``outputs`` are the model's outputs, class axis 1: logits (N, K) or (N, K, d1, ...), or values for
the regression metrics.  Class ``targets`` are integer labels of the outputs' shape less axis 1, or
class probabilities (one-hot) of the outputs' shape (their arg-max is the label); with one output
channel (N, 1, ...) and targets of the same shape the task is binary: a logit > 0 predicts 1 and a
target > 0.5 is 1.  ``ignore_index`` drops the positions whose label it is.

The definitions are torchmetrics':
- accuracy, pixel_accuracy: MulticlassAccuracy(average="micro"): right positions / counted positions;
- miou: MulticlassJaccardIndex(average="macro") from the confusion matrix: the mean over classes of
  TP / (TP + FP + FN), leaving out the classes absent from both targets and predictions and the
  ignore_index class; iou: the same per class (average="none"; 0 for an absent class);
- dice: the mean over the same classes of 2 TP / (2 TP + FP + FN) (segmentation.DiceScore with
  input_format="index", aggregation_level="global", average="macro"; MulticlassF1Score(macro));
- mae: MeanAbsoluteError; psnr: PeakSignalNoiseRatio(data_range), over all the values seen.
The confusion matrix is built on the device from one-hot products (no bincount: the strict
namespace has none, and it is one small GEMM on every backend).
"""
from __future__ import annotations

import copy
import math

import numpy as np

from backends import backend_of


class Metric:
    """Running sums on a backend's device; ``result`` reads them with one transfer."""

    name = "?"
    higher_is_better = True
    _state_names = ()     # the running sums: each adds over batches, so ranks' sums add too

    def __init__(self):
        self.backend = None

    def state(self) -> list:
        """The running sums as device arrays (host counts moved there), in a fixed order: summing
        each over data-parallel ranks gives the metric of all their batches."""
        xp = self.backend.xp
        return [v if hasattr(v, "shape") else xp.asarray(v, dtype=xp.int64, device=self.backend.device)
                for v in (getattr(self, name) for name in self._state_names)]

    def load_state(self, arrays) -> None:
        """Replace the running sums with ``arrays`` (as ``state`` gives them, e.g. all-reduced)."""
        for name, value in zip(self._state_names, arrays):
            setattr(self, name, value)

    def reset(self, backend=None) -> "Metric":
        """Zero the sums on ``backend`` (by default the one already in use, else the active one)."""
        if backend is None:
            import backends
            backend = self.backend or backends.get_backend()
        self.backend = backend
        self._reset()
        return self

    def _reset(self):
        raise NotImplementedError

    def clone(self) -> "Metric":
        """The same metric with its own sums (e.g. one for training and one for validation); reset it first."""
        twin = copy.copy(self)     # sums are replaced on update, never changed in place: nothing is shared
        twin.backend = None
        return twin

    def _begin(self, outputs):
        if self.backend is None:
            self.reset(backend_of(outputs))

    def update(self, outputs, targets) -> None:
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def logs(self) -> dict:
        return {self.name: float(self.result())}

    def _read(self, *values) -> list:
        """Host values of device 0-d arrays and host numbers, with one transfer for the device ones."""
        host = (int, float, np.ndarray, np.generic)      # NumPy arrays: host copies (load_state's) or NumPy's own
        on_device = [i for i, v in enumerate(values) if not isinstance(v, host)]
        out = [v if isinstance(v, (int, float)) or i in on_device else float(v) for i, v in enumerate(values)]
        if on_device:
            xp = self.backend.xp
            stacked = xp.stack([xp.astype(values[i], xp.float64) for i in on_device])
            for i, v in zip(on_device, self.backend.to_numpy(stacked).tolist()):
                out[i] = v
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _count(shape) -> int:
    return math.prod(int(d) for d in shape)


class _ClassMetric(Metric):
    """Metrics on predicted classes (the arg-max over axis 1) against labels."""

    def __init__(self, ignore_index: int | None = None):
        super().__init__()
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, (int, np.integer))):
            raise ValueError(f"ignore_index must be an int (a label to skip) or None; got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def _classes(self, outputs, targets, predicted=None):
        """(predicted, true) labels of the same shape, and the number of classes; ``predicted``: the
        outputs' arg-max over axis 1 where the caller has it already (one arg-max a batch, not one a metric)."""
        backend = backend_of(outputs)
        xp = backend.xp
        if outputs.ndim < 2:
            raise ValueError(f"{self.name} expects outputs (N, classes, ...) with the classes on axis 1; got shape "
                             f"{tuple(outputs.shape)}")
        labels = tuple(outputs.shape[:1]) + tuple(outputs.shape[2:])
        if tuple(targets.shape) == tuple(outputs.shape):
            if outputs.shape[1] == 1:        # one logit: binary
                return (xp.astype(outputs[:, 0, ...] > 0, xp.int64), xp.astype(targets[:, 0, ...] > 0.5, xp.int64),
                        2)
            return self._argmax(backend, outputs, predicted), xp.argmax(targets, axis=1), outputs.shape[1]
        if tuple(targets.shape) != labels:
            raise ValueError(f"{self.name} on outputs of shape {tuple(outputs.shape)} expects labels of shape {labels} "
                             f"or class probabilities of shape {tuple(outputs.shape)}; got {tuple(targets.shape)}")
        return self._argmax(backend, outputs, predicted), targets, outputs.shape[1]

    @staticmethod
    def _argmax(backend, outputs, predicted):
        return backend.class_argmax(outputs) if predicted is None else predicted


class Accuracy(_ClassMetric):
    """The fraction of positions (images, or pixels) whose arg-max is the label."""

    name = "accuracy"
    _state_names = ("_right", "_seen")

    def _reset(self):
        xp = self.backend.xp
        self._right = xp.zeros((), dtype=xp.int64, device=self.backend.device)
        self._seen = 0

    def update(self, outputs, targets, predicted=None) -> None:
        self._begin(outputs)
        xp = self.backend.xp
        predicted, labels, _ = self._classes(outputs, targets, predicted)
        right = predicted == labels
        if self.ignore_index is None:
            self._seen = self._seen + _count(labels.shape)
        else:
            kept = labels != self.ignore_index
            right = right & kept
            self._seen = self._seen + xp.sum(xp.astype(kept, xp.int64))
        self._right = self._right + xp.sum(xp.astype(right, xp.int64))

    def result(self) -> float:
        right, seen = self._read(self._right, self._seen)
        return right / seen if seen else math.nan


class PixelAccuracy(Accuracy):
    """Accuracy over the pixels of dense outputs (N, K, H, W) against masks (N, H, W)."""

    name = "pixel_accuracy"


class ConfusionMatrix(_ClassMetric):
    """counts[true, predicted] over every counted position; ``result`` is the (K, K) int64 matrix.

    ``num_classes`` is K (by default the outputs' axis 1, or 2 for one binary logit)."""

    name = "confusion_matrix"
    _state_names = ("_counts",)

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = None):
        super().__init__(ignore_index)
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None; got {num_classes!r}")
        self.num_classes = None if num_classes is None else int(num_classes)

    def _reset(self):
        k, xp = self.num_classes, self.backend.xp     # k known: the sums exist before any update (all-reducible)
        self._counts = None if k is None else xp.zeros((k, k), dtype=xp.int64, device=self.backend.device)

    def update(self, outputs, targets, predicted=None) -> None:
        self._begin(outputs)
        xp = self.backend.xp
        predicted, labels, k = self._classes(outputs, targets, predicted)
        if self.num_classes is not None and k != self.num_classes:
            raise ValueError(f"{self.name} was made for {self.num_classes} classes; the outputs have {k}")
        if self._counts is None:
            self.num_classes = k
            self._counts = xp.zeros((k, k), dtype=xp.int64, device=self.backend.device)
        elif self._counts.shape[0] != k:
            raise ValueError(f"{self.name} has counted {self._counts.shape[0]} classes; these outputs have {k}")
        self._counts = self._counts + self.backend.confusion_counts(predicted, labels, k, self.ignore_index)

    def result(self) -> np.ndarray:
        if self._counts is None:
            k = self.num_classes or 0
            return np.zeros((k, k), np.int64)
        counts = self._counts if isinstance(self._counts, np.ndarray) else self.backend.to_numpy(self._counts)
        return counts.astype(np.int64)

    def logs(self) -> dict:
        return {}          # a matrix, not a number per epoch


def _present(counts: np.ndarray, ignore_index, include_background: bool = True) -> np.ndarray:
    """The classes a macro average counts: those in the targets or the predictions, less the ignored one."""
    present = (counts.sum(0) + counts.sum(1)) > 0
    if ignore_index is not None and 0 <= ignore_index < len(present):
        present[ignore_index] = False
    if not include_background and len(present):
        present[0] = False
    return present


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den > 0)


def iou_per_class(counts: np.ndarray) -> np.ndarray:
    """TP / (TP + FP + FN) per class from a confusion matrix (0 where the class is absent)."""
    counts = np.asarray(counts, np.float64)
    tp = np.diag(counts)
    return _safe_ratio(tp, counts.sum(0) + counts.sum(1) - tp)


def dice_per_class(counts: np.ndarray) -> np.ndarray:
    """2 TP / (2 TP + FP + FN) per class from a confusion matrix (0 where the class is absent)."""
    counts = np.asarray(counts, np.float64)
    tp = np.diag(counts)
    return _safe_ratio(2 * tp, counts.sum(0) + counts.sum(1))


class MeanIoU(ConfusionMatrix):
    """The mean of the classes' intersection over union (torchmetrics' MulticlassJaccardIndex, macro)."""

    name = "miou"

    def result(self) -> float:
        counts = super().result()
        present = _present(counts, self.ignore_index)
        return float(iou_per_class(counts)[present].mean()) if present.any() else math.nan

    def logs(self) -> dict:
        return {self.name: self.result()}


class PerClassIoU(ConfusionMatrix):
    """Each class's intersection over union, as a (K,) float64 array; logs ``iou_<class>``."""

    name = "iou"

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = None, class_names=None):
        super().__init__(num_classes, ignore_index)
        self.class_names = None if class_names is None else [str(c) for c in class_names]

    def result(self) -> np.ndarray:
        return iou_per_class(super().result())

    def logs(self) -> dict:
        values = self.result()
        names = self.class_names if self.class_names and len(self.class_names) == len(values) else range(len(values))
        return {f"{self.name}_{name}": float(v) for name, v in zip(names, values)}


class Dice(ConfusionMatrix):
    """The mean over classes of the Dice coefficient 2 TP / (2 TP + FP + FN); ``include_background``
    False leaves class 0 out of the mean."""

    name = "dice"

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = None,
                 include_background: bool = True):
        super().__init__(num_classes, ignore_index)
        self.include_background = bool(include_background)

    def result(self) -> float:
        counts = super().result()
        present = _present(counts, self.ignore_index, self.include_background)
        return float(dice_per_class(counts)[present].mean()) if present.any() else math.nan

    def logs(self) -> dict:
        return {self.name: self.result()}


class _ValueMetric(Metric):
    """A sum over every value of outputs and targets of the same shape (regression, reconstruction)."""

    _state_names = ("_sum", "_seen")

    def _reset(self):
        xp = self.backend.xp
        self._sum = xp.zeros((), dtype=xp.float64, device=self.backend.device)
        self._seen = 0

    def _term(self, diff):
        raise NotImplementedError

    def update(self, outputs, targets) -> None:
        self._begin(outputs)
        if tuple(targets.shape) != tuple(outputs.shape):
            raise ValueError(f"{self.name} expects targets of the outputs' shape {tuple(outputs.shape)}; "
                             f"got {tuple(targets.shape)}")
        xp = self.backend.xp
        diff = outputs - xp.astype(targets, outputs.dtype)
        self._sum = self._sum + xp.astype(xp.sum(self._term(diff)), xp.float64)
        self._seen += _count(outputs.shape)


class MAE(_ValueMetric):
    """The mean absolute error over every value seen."""

    name = "mae"
    higher_is_better = False

    def _term(self, diff):
        return self.backend.xp.abs(diff)

    def result(self) -> float:
        total, seen = self._read(self._sum, self._seen)
        return total / seen if seen else math.nan


class PSNR(_ValueMetric):
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), the MSE over every value seen
    (torchmetrics' PeakSignalNoiseRatio with ``data_range``; images in [0, 1] have 1)."""

    name = "psnr"

    def __init__(self, data_range: float = 1.0):
        super().__init__()
        if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0 \
                or not math.isfinite(data_range):
            raise ValueError(f"data_range must be a positive number (the span of the values); got {data_range!r}")
        self.data_range = float(data_range)

    def _term(self, diff):
        return diff * diff

    def result(self) -> float:
        total, seen = self._read(self._sum, self._seen)
        if not seen:
            return math.nan
        return math.inf if total == 0 else 10.0 * math.log10(self.data_range ** 2 / (total / seen))


METRICS = {"accuracy": Accuracy, "acc": Accuracy, "pixel_accuracy": PixelAccuracy, "miou": MeanIoU,
           "mean_iou": MeanIoU, "iou": PerClassIoU, "per_class_iou": PerClassIoU, "dice": Dice, "mae": MAE,
           "psnr": PSNR, "confusion_matrix": ConfusionMatrix}


def get_metric(metric, **options) -> Metric:
    """A metric by name (options go to its class, e.g. ``ignore_index``, ``data_range``) or a Metric,
    returned as it is."""
    if isinstance(metric, str):
        try:
            cls = METRICS[metric.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown metric {metric!r}; valid ones are: {', '.join(METRICS)}") from None
        try:
            return cls(**options)
        except TypeError as exc:
            raise TypeError(f"metric {metric!r} does not take the options {sorted(options)} ({exc})") from None
    if all(hasattr(metric, a) for a in ("reset", "update", "result", "name")):
        return metric
    raise TypeError(f"a metric must be a name or an object with reset, update, result and name; "
                    f"got {type(metric).__name__}")
