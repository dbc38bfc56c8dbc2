"""ReLU with an optional firing cap, and Softmax for prediction."""
import math

from backends import backend_of
from .base import Layer


class ReLU(Layer):
    """max(x, 0), clipped at ``max_activation`` when given (the seed's firing limit).

    The gradient is zero below 0 and above the cap, as for torch.nn.Hardtanh(0, cap).
    A ReLU right after a BatchNorm2D runs fused into it (see ``container.run_order``).
    """

    def __init__(self, max_activation: float | None = None):
        super().__init__()
        if max_activation is not None and not max_activation > 0:
            raise ValueError(f"max_activation must be > 0; got {max_activation!r}")
        self.max_activation = None if max_activation is None else float(max_activation)

    @property
    def cap(self) -> float:
        return math.inf if self.max_activation is None else self.max_activation

    def describe(self) -> str:
        return "ReLU()" if self.max_activation is None else f"ReLU(max_activation={self.max_activation:g})"

    def apply(self, x):
        return backend_of(x).relu(x, self.cap)

    def backprop(self, dy, saved):
        return backend_of(dy).relu_backward(dy, saved)


class Softmax(Layer):
    """Probabilities over the last axis.  For training use the fused SoftmaxCrossEntropy loss."""

    def apply(self, x):
        xp = backend_of(x).xp
        z = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
        y = z / xp.sum(z, axis=-1, keepdims=True)
        return y, y

    def backprop(self, dy, y):
        xp = backend_of(dy).xp
        return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))
