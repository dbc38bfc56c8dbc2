"""ReLU with an optional cap, and inverted dropout, generic versions.

No ``clip``: array-api-compat's generic clip writes through boolean masks, and on
CuPy each masked write waits for the device.  maximum/minimum/where do not.
"""
from __future__ import annotations

import math


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
