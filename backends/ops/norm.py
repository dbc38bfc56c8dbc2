"""Batch normalisation (torch.nn.BatchNorm2d), optionally followed by a ReLU; LayerNorm and GroupNorm;
generic versions.

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

    # --- per-sample normalisations: LayerNorm (all non-batch axes) and GroupNorm --------------
    def layer_norm(self, x, weight, bias, eps: float):
        """torch.nn.LayerNorm(x.shape[1:]): each sample standardised over all its values (biased
        variance), then ``weight`` and ``bias`` of that shape, element by element; (y, saved)."""
        xp = self.xp
        n = x.shape[0]
        xhat, inv_std = _standardize_rows(xp, xp.reshape(x, (n, -1)), eps)
        y = xhat * xp.reshape(weight, (1, -1)) + xp.reshape(bias, (1, -1))
        return xp.reshape(y, x.shape), RowNormSaved(xhat, inv_std, weight, tuple(x.shape), 0)

    def layer_norm_backward(self, dy, saved, *, input_grad: bool = True):
        """(dx, dweight, dbias); dx is None unless asked for."""
        xp = self.xp
        n = saved.shape[0]
        g = xp.reshape(dy, (n, -1))
        dbias = xp.reshape(xp.sum(g, axis=0), saved.weight.shape)
        dweight = xp.reshape(xp.sum(g * saved.xhat, axis=0), saved.weight.shape)
        if not input_grad:
            return None, dweight, dbias
        gw = g * xp.reshape(saved.weight, (1, -1))
        return xp.reshape(_standardize_rows_backward(xp, gw, saved.xhat, saved.inv_std), saved.shape), dweight, dbias

    def group_norm(self, x, weight, bias, groups: int, eps: float):
        """torch.nn.GroupNorm(groups, C): each sample's channels in ``groups`` groups, each group
        standardised over its channels and pixels, then a per-channel ``weight`` and ``bias``."""
        xp = self.xp
        n, c = x.shape[:2]
        xhat, inv_std = _standardize_rows(xp, xp.reshape(x, (n * groups, -1)), eps)
        xhat = xp.reshape(xhat, (n, c, -1))
        y = xhat * xp.reshape(weight, (1, c, 1)) + xp.reshape(bias, (1, c, 1))
        return xp.reshape(y, x.shape), RowNormSaved(xhat, inv_std, weight, tuple(x.shape), groups)

    def group_norm_backward(self, dy, saved, *, input_grad: bool = True):
        xp = self.xp
        n, c = saved.shape[:2]
        g = xp.reshape(dy, (n, c, -1))
        dbias = xp.sum(g, axis=(0, 2))
        dweight = xp.sum(g * saved.xhat, axis=(0, 2))
        if not input_grad:
            return None, dweight, dbias
        rows = lambda a: xp.reshape(a, (n * saved.groups, -1))
        gw = g * xp.reshape(saved.weight, (1, c, 1))
        dx = _standardize_rows_backward(xp, rows(gw), rows(saved.xhat), saved.inv_std)
        return xp.reshape(dx, saved.shape), dweight, dbias


class RowNormSaved(NamedTuple):
    xhat: object            # the standardised values: (N, D) for LayerNorm, (N, C, HW) for GroupNorm
    inv_std: object         # (rows, 1)
    weight: object
    shape: tuple            # the input's
    groups: int             # GroupNorm's (0: LayerNorm)


def _standardize_rows(xp, rows, eps):
    mean = xp.mean(rows, axis=1, keepdims=True)
    centered = rows - mean
    inv_std = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=1, keepdims=True) + eps)
    return centered * inv_std, inv_std


def _standardize_rows_backward(xp, g, xhat, inv_std):
    """dx for xhat = (x - mean) * inv_std per row, given dL/dxhat = ``g``."""
    return inv_std * (g - xp.mean(g, axis=1, keepdims=True) - xhat * xp.mean(g * xhat, axis=1, keepdims=True))
