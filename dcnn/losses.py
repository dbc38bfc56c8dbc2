"""Softmax cross-entropy, fused for stability (log-sum-exp) and a simple gradient."""
from backends import backend_of


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels or one-hot/soft targets.

    ``forward`` returns the loss as a 0-d device array (no host sync); ``backward``
    returns dL/dlogits = (softmax(logits) - y) / N.
    """

    name = "cross_entropy"

    def forward(self, logits, targets):
        xp = backend_of(logits).xp
        n, k = logits.shape
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        y = self._as_distribution(xp, targets, k, logits)
        self._cache = (xp, log_probs, y, n)
        return -xp.sum(y * log_probs) / n

    def backward(self):
        xp, log_probs, y, n = self._cache
        return (xp.exp(log_probs) - y) / n

    @staticmethod
    def _as_distribution(xp, targets, classes, logits):
        if targets.ndim == 1:
            classes_row = xp.reshape(xp.arange(classes, device=backend_of(logits).device), (1, classes))
            return xp.astype(xp.reshape(targets, (-1, 1)) == classes_row, logits.dtype)
        if tuple(targets.shape) != tuple(logits.shape):
            raise ValueError(f"one-hot targets must have shape {tuple(logits.shape)}; got {tuple(targets.shape)}")
        return xp.astype(targets, logits.dtype)


LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "categorical_crossentropy": SoftmaxCrossEntropy,
          "sparse_categorical_crossentropy": SoftmaxCrossEntropy, "softmax_cross_entropy": SoftmaxCrossEntropy}


def get_loss(loss):
    if isinstance(loss, str):
        try:
            return LOSSES[loss.lower()]()
        except KeyError:
            raise ValueError(f"unknown loss {loss!r}; valid ones are: {', '.join(LOSSES)}") from None
    if hasattr(loss, "forward") and hasattr(loss, "backward"):
        return loss
    raise TypeError(f"loss must be a name or an object with forward and backward; got {type(loss).__name__}")
