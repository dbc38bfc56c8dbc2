"""ReLU with an optional firing cap (ReLU6), the other element-wise activations, and Softmax for prediction."""
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


class ReLU6(ReLU):
    """min(max(x, 0), 6): torch.nn.ReLU6 (MobileNet's).  A ReLU with ``max_activation=6``."""

    def __init__(self):
        super().__init__(6.0)

    def describe(self) -> str:
        return "ReLU6()"


class PointwiseActivation(Layer):
    """An element-wise activation: the backend's ``activation(x, kind, alpha)`` (one fused pass on
    the CPU and the GPU), with torch's formulas and its gradients at the kinks."""

    kind = ""           # set by each subclass: one of backends.ops.activation.ACTIVATIONS

    def __init__(self):
        super().__init__()
        if type(self) is PointwiseActivation:
            raise TypeError("PointwiseActivation is the base of LeakyReLU, ELU, Sigmoid, Tanh, SiLU, GELU, "
                            "HardSigmoid and HardSwish: use one of those")
        self.alpha = 0.0

    def describe(self) -> str:
        return f"{type(self).__name__}()"

    def apply(self, x):
        return backend_of(x).activation(x, self.kind, self.alpha)

    def backprop(self, dy, saved):
        if not self.needs_input_grad:
            return None
        return backend_of(dy).activation_backward(dy, saved)


def _number(layer: str, what: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{layer}: {what} must be a finite number; got {value!r}")
    return float(value)


class LeakyReLU(PointwiseActivation):
    """x for x > 0, else negative_slope * x (torch.nn.LeakyReLU)."""

    kind = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.alpha = self.negative_slope = _number("LeakyReLU", "negative_slope", negative_slope)

    def describe(self) -> str:
        return f"LeakyReLU({self.negative_slope:g})"


class ELU(PointwiseActivation):
    """x for x > 0, else alpha * (exp(x) - 1) (torch.nn.ELU)."""

    kind = "elu"

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = _number("ELU", "alpha", alpha)

    def describe(self) -> str:
        return f"ELU({self.alpha:g})"


class Sigmoid(PointwiseActivation):
    """1 / (1 + exp(-x)) (torch.nn.Sigmoid)."""

    kind = "sigmoid"


class Tanh(PointwiseActivation):
    """torch.nn.Tanh."""

    kind = "tanh"


class SiLU(PointwiseActivation):
    """x * sigmoid(x), also called swish (torch.nn.SiLU)."""

    kind = "silu"


class GELU(PointwiseActivation):
    """x * Phi(x), Phi the standard normal CDF; ``approximate="tanh"``: the tanh approximation
    (torch.nn.GELU)."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh'; got {approximate!r}")
        self.approximate = approximate
        self.kind = "gelu" if approximate == "none" else "gelu_tanh"

    def describe(self) -> str:
        return "GELU()" if self.approximate == "none" else "GELU(approximate='tanh')"


class HardSigmoid(PointwiseActivation):
    """relu6(x + 3) / 6 (torch.nn.Hardsigmoid)."""

    kind = "hardsigmoid"


class HardSwish(PointwiseActivation):
    """x * relu6(x + 3) / 6 (torch.nn.Hardswish, MobileNetV3's)."""

    kind = "hardswish"
