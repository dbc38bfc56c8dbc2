"""Batch normalisation (torch.nn.BatchNorm2d), optionally followed by a ReLU, generic version.

The ReLU is fused because BatchNorm -> ReLU is the commonest pair in a CNN: one
pass over the maps instead of two, and the ReLU's mask is read off the output.
"""
from __future__ import annotations

import math
from typing import NamedTuple


class NormSaved(NamedTuple):
    xhat: object            # (x - mean) * inv_std, NCHW
    y: object               # the output (its zeros and cap values are the ReLU's mask)
    inv_std: object         # (C,)
    scale: object           # gamma * inv_std, (C,)
    training: bool
    relu_cap: float | None


class NormOps:
    def batch_norm(self, x, weight, bias, running_mean, running_var, *, training: bool, momentum: float,
                   eps: float, relu_cap: float | None = None):
        """Normalise each channel of NCHW ``x`` by the batch's statistics (training) or
        the running ones (eval), then scale and shift; then min(max(., 0), relu_cap)
        unless ``relu_cap`` is None.  Training updates ``running_mean`` and
        ``running_var`` in place (the variance unbiased, as torch).  Returns (y, saved)."""
        xp = self.xp
        n, c, h, w = x.shape
        count = n * h * w
        as_map = lambda v: xp.reshape(v, (1, c, 1, 1))
        if training:
            mean = xp.mean(x, axis=(0, 2, 3))
            centered = x - as_map(mean)
            var = xp.mean(centered * centered, axis=(0, 2, 3))
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * (count / (count - 1))
        else:
            mean, var = running_mean, running_var
            centered = x - as_map(mean)
        inv_std = 1.0 / xp.sqrt(var + eps)
        scale = weight * inv_std
        xhat = centered * as_map(inv_std)
        y = xhat * as_map(weight) + as_map(bias)
        if relu_cap is not None:
            y = xp.maximum(y, 0.0)
            if relu_cap != math.inf:
                y = xp.minimum(y, relu_cap)
        return y, NormSaved(xhat, y, inv_std, scale, training, relu_cap)

    def batch_norm_backward(self, dy, saved: NormSaved, *, input_grad: bool = True):
        """(dx, dweight, dbias); dx is None unless asked for."""
        xp = self.xp
        n, c, h, w = saved.xhat.shape
        count = n * h * w
        as_map = lambda v: xp.reshape(v, (1, c, 1, 1))
        g = dy
        if saved.relu_cap is not None:
            passes = saved.y > 0
            if saved.relu_cap != math.inf:
                passes = passes & (saved.y < saved.relu_cap)
            g = xp.where(passes, dy, 0.0)
        dbias = xp.sum(g, axis=(0, 2, 3))
        dweight = xp.sum(g * saved.xhat, axis=(0, 2, 3))
        if not input_grad:
            return None, dweight, dbias
        if saved.training:
            dx = as_map(saved.scale) * (g - as_map(dbias / count) - saved.xhat * as_map(dweight / count))
        else:
            dx = g * as_map(saved.scale)
        return dx, dweight, dbias
