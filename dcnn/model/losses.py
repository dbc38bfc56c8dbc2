"""Softmax cross-entropy, fused for stability (log-sum-exp) and a simple gradient."""
from backends import backend_of


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels or one-hot/soft targets.

    ``forward`` returns the loss as a 0-d device array (no host sync) and keeps
    ``correct``, the number of rows whose arg-max is right, also on the device;
    ``backward`` returns dL/dlogits = (softmax(logits) - y) / N.  ``label_smoothing``
    has torch.nn.CrossEntropyLoss's meaning: y becomes (1 - e) * y + e / classes.  The work is the
    backend's ``softmax_cross_entropy`` (backends/ops/loss.py).
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0):
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1]; got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self._grad = None
        self.correct = None

    def forward(self, logits, targets):
        if logits.ndim != 2:
            raise ValueError(f"cross-entropy expects (N, classes) logits; got shape {tuple(logits.shape)}")
        if targets.ndim != 1 and tuple(targets.shape) != tuple(logits.shape):
            raise ValueError(f"one-hot targets must have shape {tuple(logits.shape)}; got {tuple(targets.shape)}")
        backend = backend_of(logits)
        if targets.ndim == 2 and targets.dtype != logits.dtype:
            targets = backend.xp.astype(targets, logits.dtype)
        if self.label_smoothing:
            loss, self._grad, self.correct = backend.softmax_cross_entropy(logits, targets, self.label_smoothing)
        else:
            loss, self._grad, self.correct = backend.softmax_cross_entropy(logits, targets)
        return loss

    def backward(self):
        if self._grad is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward() needs a forward() first")
        return self._grad


LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "categorical_crossentropy": SoftmaxCrossEntropy,
          "sparse_categorical_crossentropy": SoftmaxCrossEntropy, "softmax_cross_entropy": SoftmaxCrossEntropy}


def get_loss(loss, **options):
    if isinstance(loss, str):
        try:
            cls = LOSSES[loss.lower()]
        except KeyError:
            raise ValueError(f"unknown loss {loss!r}; valid ones are: {', '.join(LOSSES)}") from None
        return cls(**options)
    if hasattr(loss, "forward") and hasattr(loss, "backward"):
        return loss
    raise TypeError(f"loss must be a name or an object with forward and backward; got {type(loss).__name__}")
