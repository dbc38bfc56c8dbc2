"""Losses: cross-entropy (whole images or per pixel), mean squared and absolute error, and binary
cross-entropy on logits, each as torch.nn.functional defines it (mean reduction).

A loss has ``forward(outputs, targets)``, which returns the loss as a 0-d device array (no host
sync) and keeps its gradient, ``backward()``, which returns dL/doutputs, and
``check_targets(y, output_shape)``, which checks targets on the host before training starts (their
shape, dtype and values against the model's output shape) and returns them as the loss wants them,
so that a wrong target is a clear error there and never a NaN later.  ``correct`` is the number of
right arg-max predictions where the loss computes it anyway (cross-entropy on (N, K) logits), else
None.  The hot work is the backend's (backends/ops/loss.py): ``softmax_cross_entropy``,
``cross_entropy_nd`` and ``bce_with_logits``.
"""
from __future__ import annotations

import math

import numpy as np

from backends import backend_of


class TargetError(ValueError, TypeError):
    """Targets that do not fit the model or the loss (a ValueError; also a TypeError, which wrong
    dtypes raised before)."""


def _host(y, name: str = "y") -> np.ndarray:
    """``y`` as a host NumPy array (a device array is copied back: one sync, before training)."""
    if isinstance(y, np.ndarray):
        return y
    try:
        return backend_of(y).to_numpy(y)
    except TypeError:
        pass
    try:
        return np.asarray(y)
    except Exception:
        raise TypeError(f"{name} must be an array; got {type(y).__name__}") from None


def _shape(shape) -> tuple:
    return tuple(int(d) for d in shape)


def _finite_floats(y: np.ndarray, name: str, what: str) -> np.ndarray:
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise TargetError(f"{name} must hold numbers ({what}); got dtype {y.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = y.astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or Inf values, or values too large for float32")
    return out


def _check_count(y: np.ndarray, count, name: str) -> None:
    if y.ndim == 0:
        raise ValueError(f"{name} is a single number; give one target per sample")
    if count is not None and y.shape[0] != count:
        raise ValueError(f"x and {name} have different lengths: {count} samples but {y.shape[0]} targets")


def _weight_vector(values, what: str, owner: str) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{owner} {what} must be a 1-D sequence of finite numbers >= 0, one per class; "
                         f"got {values!r}")
    return array


class Loss:
    """What every loss has; ``forward`` keeps the gradient that ``backward`` returns."""

    name = "?"
    correct = None

    def __init__(self):
        self._grad = None
        self._device = {}

    def forward(self, outputs, targets):
        raise NotImplementedError

    def backward(self):
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs a forward() first")
        return self._grad

    def check_targets(self, y, output_shape, count: int | None = None) -> np.ndarray:
        """``y`` checked against outputs of per-sample shape ``output_shape`` (and ``count`` samples),
        as the host array that ``forward`` takes once moved to the device; else a ValueError or
        TypeError that names the problem."""
        raise NotImplementedError

    def _on_device(self, key: str, host: np.ndarray, like, shape):
        """A host constant (class weights) on ``like``'s backend and in its dtype, made once."""
        backend = backend_of(like)
        cached = self._device.get(key)
        if cached is None or cached[0] is not backend or cached[1] != like.dtype or cached[2] != shape:
            value = backend.xp.reshape(backend.xp.astype(backend.from_numpy(host), like.dtype), shape)
            self._device[key] = cached = (backend, like.dtype, shape, value)
        return cached[3]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropy(Loss):
    """Mean cross-entropy of softmax over axis 1: torch.nn.functional.cross_entropy.

    Outputs are logits (N, K) or (N, K, d1, ...) (e.g. (N, K, H, W) per pixel); targets are integer
    labels (N,) or (N, d1, ...), or class probabilities of the outputs' shape (one-hot or soft).
    ``label_smoothing`` e mixes each target with the uniform distribution, (1 - e) y + e / K;
    ``weight`` (K numbers) weights each class, and the mean is then over the weights of the
    positions' labels; ``ignore_index`` is a label whose positions count for nothing (torch's default
    -100 ignores nothing that ``check_targets`` lets through, so None here means the same).
    Where every position of a batch is ignored the loss and its gradient are 0 (torch: NaN).

    On (N, K) logits with neither weights nor an ignored label, the work is the backend's fused
    ``softmax_cross_entropy``, which also counts the right arg-maxes (``correct``); otherwise it is
    ``cross_entropy_nd`` and ``correct`` is None.
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0, *, weight=None, ignore_index: int | None = None):
        super().__init__()
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1]; got {label_smoothing!r}")
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, (int, np.integer))):
            raise ValueError(f"ignore_index must be an int (a label to skip) or None; got {ignore_index!r}")
        self.label_smoothing = float(label_smoothing)
        self.weight = _weight_vector(weight, "weight", "cross-entropy")
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def __repr__(self) -> str:
        options = [f"{k}={v!r}" for k, v in (("label_smoothing", self.label_smoothing),
                                               ("ignore_index", self.ignore_index)) if v]
        if self.weight is not None:
            options.append(f"weight={self.weight.tolist()!r}")
        return f"CrossEntropy({', '.join(options)})"

    def _shapes(self, logits_shape, targets_shape):
        """'labels' or 'probabilities', from the shapes; else a ValueError."""
        if len(logits_shape) < 2:
            raise ValueError(f"cross-entropy expects logits (N, classes) or (N, classes, d1, ...); "
                             f"got shape {tuple(logits_shape)}")
        if tuple(targets_shape) == tuple(logits_shape):
            return "probabilities"
        labels = tuple(logits_shape[:1]) + tuple(logits_shape[2:])
        if tuple(targets_shape) == labels:
            return "labels"
        raise ValueError(f"cross-entropy on logits of shape {tuple(logits_shape)} expects integer labels of shape "
                         f"{labels} or class probabilities of shape {tuple(logits_shape)}; got targets of shape "
                         f"{tuple(targets_shape)}")

    def forward(self, logits, targets):
        kind = self._shapes(logits.shape, targets.shape)
        k = logits.shape[1]
        if self.weight is not None and self.weight.shape[0] != k:
            raise ValueError(f"cross-entropy has {self.weight.shape[0]} class weights but the logits have {k} classes")
        backend = backend_of(logits)
        xp = backend.xp
        if kind == "probabilities" and targets.dtype != logits.dtype:
            targets = xp.astype(targets, logits.dtype)
        if logits.ndim == 2 and self.weight is None and (self.ignore_index is None or kind == "probabilities"):
            args = (self.label_smoothing,) if self.label_smoothing else ()
            loss, self._grad, self.correct = backend.softmax_cross_entropy(logits, targets, *args)
            return loss
        weight = None if self.weight is None else self._on_device("weight", self.weight, logits, (k,))
        loss, self._grad = backend.cross_entropy_nd(logits, targets, weight, self.ignore_index, self.label_smoothing)
        self.correct = None
        return loss

    def check_targets(self, y, output_shape, count: int | None = None) -> np.ndarray:
        y, output_shape = _host(y), _shape(output_shape)
        _check_count(y, count, "y")
        kind = self._shapes((y.shape[0],) + output_shape, y.shape)
        k = output_shape[0]
        if self.weight is not None and self.weight.shape[0] != k:
            raise ValueError(f"cross-entropy has {self.weight.shape[0]} class weights but the model has {k} outputs")
        if kind == "probabilities":
            y = _finite_floats(y, "y", "class probabilities")
            if (y < 0).any():
                raise ValueError(f"y holds class probabilities of shape {y.shape} but has negative values")
            return y
        whole = np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and np.all(np.mod(y, 1) == 0)
        if not (np.issubdtype(y.dtype, np.integer) or whole):
            raise TargetError(f"y must be integer class labels of shape {y.shape}; got dtype {y.dtype}"
                            + (" with fractional or non-finite values" if np.issubdtype(y.dtype, np.floating) else ""))
        bad = (y < 0) | (y >= k)
        if self.ignore_index is not None:
            bad &= y != self.ignore_index
        if bad.any():
            values = np.unique(y[bad])
            skip = "" if self.ignore_index is None else f" or the ignore_index {self.ignore_index}"
            raise ValueError(f"y has labels outside [0, {k - 1}]{skip}: {', '.join(str(int(v)) for v in values[:5])}"
                             f"{' ...' if len(values) > 5 else ''} in {int(bad.sum())} places, for a model with "
                             f"{k} outputs")
        return y.astype(np.int64)


SoftmaxCrossEntropy = CrossEntropy     # the name it had when it took (N, K) logits only


class _Elementwise(Loss):
    """A mean over every element of outputs and targets of the same shape."""

    what = "values"

    def _pair(self, outputs, targets):
        if tuple(targets.shape) != tuple(outputs.shape):
            raise ValueError(f"{self.name} expects targets of the outputs' shape {tuple(outputs.shape)}; "
                             f"got {tuple(targets.shape)}")
        if targets.dtype != outputs.dtype:
            targets = backend_of(outputs).xp.astype(targets, outputs.dtype)
        return targets, math.prod(outputs.shape)

    def check_targets(self, y, output_shape, count: int | None = None) -> np.ndarray:
        y, output_shape = _host(y), _shape(output_shape)
        _check_count(y, count, "y")
        if tuple(y.shape[1:]) != output_shape:
            raise ValueError(f"{self.name} expects targets of shape (N, {', '.join(map(str, output_shape))}), the "
                             f"model's output shape; got {tuple(y.shape)}")
        return _finite_floats(y, "y", self.what)


class MeanSquaredError(_Elementwise):
    """mean((outputs - targets)^2): torch.nn.MSELoss."""

    name = "mse"

    def forward(self, outputs, targets):
        targets, count = self._pair(outputs, targets)
        xp = backend_of(outputs).xp
        diff = outputs - targets
        self._grad = diff * (2.0 / count)
        return xp.sum(diff * diff) / count


class MeanAbsoluteError(_Elementwise):
    """mean(|outputs - targets|): torch.nn.L1Loss (its gradient is 0 where they are equal)."""

    name = "mae"

    def forward(self, outputs, targets):
        targets, count = self._pair(outputs, targets)
        xp = backend_of(outputs).xp
        diff = outputs - targets
        self._grad = xp.sign(diff) / count
        return xp.sum(xp.abs(diff)) / count


class BCEWithLogits(_Elementwise):
    """Binary cross-entropy of sigmoid(outputs) against targets in [0, 1]: torch.nn.BCEWithLogitsLoss.

    For one binary mask per image (N, 1, H, W) or several labels per position (N, K, ...) or per
    image (N, K).  ``pos_weight`` weights the positive term: one number, or K numbers applied along
    the class axis 1 (for (N, K) outputs that is torch's ``pos_weight`` of shape (K,); for
    (N, K, H, W), torch's of shape (K, 1, 1)).
    """

    name = "bce_with_logits"
    what = "targets in [0, 1]"

    def __init__(self, pos_weight=None):
        super().__init__()
        if pos_weight is not None and np.ndim(pos_weight) == 0:
            pos_weight = [pos_weight]
        self.pos_weight = _weight_vector(pos_weight, "pos_weight", "bce_with_logits")

    def _pos_weight(self, outputs):
        if self.pos_weight is None:
            return None
        if self.pos_weight.shape[0] == 1:
            return self._on_device("pos_weight", self.pos_weight, outputs, (1,) * outputs.ndim)
        if outputs.ndim < 2 or outputs.shape[1] != self.pos_weight.shape[0]:
            raise ValueError(f"bce_with_logits has {self.pos_weight.shape[0]} positive weights but the outputs "
                             f"{tuple(outputs.shape)} have {outputs.shape[1] if outputs.ndim > 1 else 'no'} classes "
                             "on axis 1")
        shape = (1, self.pos_weight.shape[0]) + (1,) * (outputs.ndim - 2)
        return self._on_device("pos_weight", self.pos_weight, outputs, shape)

    def forward(self, outputs, targets):
        targets, _ = self._pair(outputs, targets)
        loss, self._grad = backend_of(outputs).bce_with_logits(outputs, targets, self._pos_weight(outputs))
        return loss

    def check_targets(self, y, output_shape, count: int | None = None) -> np.ndarray:
        y = super().check_targets(y, output_shape, count)
        if self.pos_weight is not None and self.pos_weight.shape[0] > 1 and \
                (len(output_shape) == 0 or output_shape[0] != self.pos_weight.shape[0]):
            raise ValueError(f"bce_with_logits has {self.pos_weight.shape[0]} positive weights but the model's outputs "
                             f"{tuple(output_shape)} have {output_shape[0] if output_shape else 'no'} classes")
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"bce_with_logits expects targets in [0, 1] (masks or probabilities); found values "
                             f"{float(y.min()):g}..{float(y.max()):g}")
        return y


# Losses of values (regression, reconstruction, masks): their outputs are no class logits, so no
# Softmax layer is skipped for them, predict gives no softmax and no accuracy is logged by default.
VALUE_LOSSES = (MeanSquaredError, MeanAbsoluteError, BCEWithLogits)

LOSSES = {"cross_entropy": CrossEntropy, "categorical_crossentropy": CrossEntropy,
          "sparse_categorical_crossentropy": CrossEntropy, "softmax_cross_entropy": CrossEntropy,
          "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
          "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError, "l1": MeanAbsoluteError,
          "bce_with_logits": BCEWithLogits, "binary_cross_entropy_with_logits": BCEWithLogits}


def get_loss(loss, **options):
    """A loss by name (options go to its class: ``label_smoothing``, ``weight``, ``ignore_index``,
    ``pos_weight``) or a loss object, returned as it is (options are for names only)."""
    if isinstance(loss, str):
        try:
            cls = LOSSES[loss.lower()]
        except KeyError:
            raise ValueError(f"unknown loss {loss!r}; valid ones are: {', '.join(LOSSES)}") from None
        try:
            return cls(**options)
        except TypeError as exc:
            raise TypeError(f"loss {loss!r} does not take the options {sorted(options)} ({exc})") from None
    if hasattr(loss, "forward") and hasattr(loss, "backward"):
        return loss
    raise TypeError(f"loss must be a name or an object with forward and backward; got {type(loss).__name__}")
