"""ReLU with an optional cap, the other activations (``activation``), and inverted dropout
(whole channels too), generic versions.

No ``clip``: array-api-compat's generic clip writes through boolean masks, and on
CuPy each masked write waits for the device.  maximum/minimum/where do not.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .special import erf


class ActivationOps:
    def relu(self, x, cap: float = math.inf):
        """min(max(x, 0), cap); returns (y, saved).  The gradient is 1 strictly
        between 0 and the cap, else 0 (torch.nn.Hardtanh(0, cap))."""
        xp = self.xp
        y = xp.maximum(x, 0.0)
        if cap != math.inf:
            y = xp.minimum(y, cap)
        passes = x > 0
        if cap != math.inf:
            passes = passes & (x < cap)
        return y, xp.astype(passes, x.dtype)   # a 0/1 mask: backward is one product

    def relu_backward(self, dy, saved):
        return dy * saved

    def dropout(self, x, rate: float, generator):
        """Zero a fraction ``rate`` and scale the rest by 1/(1 - rate); returns (y, saved)."""
        xp = self.xp
        scale = 1.0 / (1.0 - rate)
        mask = xp.astype(generator.random(tuple(x.shape), x.dtype) >= rate, x.dtype) * scale
        return x * mask, mask

    def dropout_backward(self, dy, saved):
        return dy * saved

    # --- the smooth and piecewise-linear activations, one method for all ------------------------
    def activation(self, x, kind: str, alpha: float = 0.0):
        """y = f(x) for ``kind`` in ACTIVATIONS (``alpha``: LeakyReLU's negative slope, ELU's alpha);
        returns (y, saved).  Torch's formulas and its gradients at the kinks."""
        xp = self.xp
        y = _FORWARD[kind](xp, x, alpha)
        return y, ActivationSaved(kind, alpha, y if kind in FROM_OUTPUT else x)

    def activation_backward(self, dy, saved):
        return dy * _SLOPE[saved.kind](self.xp, saved.value, saved.alpha)

    def dropout2d(self, x, rate: float, generator):
        """Zero whole channels of NCHW ``x`` (torch.nn.Dropout2d): one draw per (sample, channel),
        the kept ones scaled by 1/(1 - rate); returns (y, saved) for ``dropout_backward``."""
        xp = self.xp
        n, c = x.shape[:2]
        draws = xp.reshape(generator.random((n, c), x.dtype), (n, c) + (1,) * (x.ndim - 2))
        mask = xp.astype(draws >= rate, x.dtype) * (1.0 / (1.0 - rate))
        return x * mask, mask


class ActivationSaved(NamedTuple):
    kind: str
    alpha: float
    value: object        # x, or y for the kinds in FROM_OUTPUT


ACTIVATIONS = ("leaky_relu", "elu", "sigmoid", "tanh", "silu", "gelu", "gelu_tanh", "hardsigmoid", "hardswish")
FROM_OUTPUT = ("sigmoid", "tanh")          # their slopes are functions of y: keep y, not x
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_RSQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))                # never overflows
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _phi(xp, x):
    """The standard normal CDF."""
    return 0.5 * (1.0 + erf(xp, x * (1.0 / math.sqrt(2.0))))


def _gelu_tanh_parts(xp, x):
    inner = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
    return xp.tanh(inner)


_FORWARD = {
    "leaky_relu": lambda xp, x, a: xp.where(x > 0, x, x * a),
    "elu": lambda xp, x, a: xp.where(x > 0, x, (xp.exp(xp.minimum(x, 0.0)) - 1.0) * a),
    "sigmoid": lambda xp, x, a: _sigmoid(xp, x),
    "tanh": lambda xp, x, a: xp.tanh(x),
    "silu": lambda xp, x, a: x * _sigmoid(xp, x),
    "gelu": lambda xp, x, a: x * _phi(xp, x),
    "gelu_tanh": lambda xp, x, a: 0.5 * x * (1.0 + _gelu_tanh_parts(xp, x)),
    "hardsigmoid": lambda xp, x, a: xp.minimum(xp.maximum(x + 3.0, 0.0), 6.0) * (1.0 / 6.0),
    "hardswish": lambda xp, x, a: x * xp.minimum(xp.maximum(x + 3.0, 0.0), 6.0) * (1.0 / 6.0),
}


def _silu_slope(xp, x, a):
    s = _sigmoid(xp, x)
    return s * (1.0 + x * (1.0 - s))


def _gelu_tanh_slope(xp, x, a):
    t = _gelu_tanh_parts(xp, x)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)


# dy/dx as torch takes it (at x = 0: LeakyReLU's slope, ELU's alpha; HardSwish's ends as torch's).
_SLOPE = {
    "leaky_relu": lambda xp, x, a: xp.where(x > 0, 1.0, xp.zeros_like(x) + a),
    "elu": lambda xp, x, a: xp.where(x > 0, 1.0, xp.exp(xp.minimum(x, 0.0)) * a),
    "sigmoid": lambda xp, y, a: y * (1.0 - y),
    "tanh": lambda xp, y, a: 1.0 - y * y,
    "silu": _silu_slope,
    "gelu": lambda xp, x, a: _phi(xp, x) + x * xp.exp(-0.5 * x * x) * _RSQRT_2PI,
    "gelu_tanh": _gelu_tanh_slope,
    "hardsigmoid": lambda xp, x, a: xp.astype((x > -3.0) & (x < 3.0), x.dtype) * (1.0 / 6.0),
    "hardswish": lambda xp, x, a: xp.where(x <= -3.0, 0.0, xp.where(x < 3.0, x * (1.0 / 3.0) + 0.5, 1.0)),
}
