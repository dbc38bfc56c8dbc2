"""Padding, upsampling (torch.nn.Upsample, nearest and bilinear with align_corners=False) and
global max pooling, generic versions.

Bilinear upsampling by integer factors is separable: y = A_h @ x @ A_w.T with (OH, H) and
(OW, W) interpolation matrices (two non-zeros a row), built on the device from ``arange``;
its backward pass is A_h.T @ dy @ A_w.
"""
from __future__ import annotations

from typing import NamedTuple


class UpsampleSaved(NamedTuple):
    input_shape: tuple
    size: tuple             # (sh, sw)
    mode: str
    matrices: tuple         # bilinear: (A_h, A_w); nearest: ()


class ResampleOps:
    def pad2d(self, x, pads, value: float = 0.0):
        """NCHW ``x`` with (top, bottom, left, right) rows and columns of ``value`` around it."""
        top, bottom, left, right = pads
        if not any(pads):
            return x
        xp = self.xp
        n, c, h, w = x.shape
        out = xp.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype, device=self.device)
        out[:, :, top:top + h, left:left + w] = x
        return out

    def upsample2d(self, x, size, mode: str = "nearest"):
        """(N, C, H, W) -> (N, C, H * sh, W * sw) for ``size = (sh, sw)``; returns (y, saved)."""
        xp = self.xp
        n, c, h, w = x.shape
        sh, sw = size
        if mode == "nearest":
            wide = xp.broadcast_to(xp.reshape(x, (n, c, h, 1, w, 1)), (n, c, h, sh, w, sw))
            return xp.reshape(wide, (n, c, h * sh, w * sw)), UpsampleSaved((n, c, h, w), (sh, sw), mode, ())
        a_h, a_w = self.interpolation_matrix(h, sh, x.dtype), self.interpolation_matrix(w, sw, x.dtype)
        y = xp.matmul(xp.matmul(a_h, x), xp.matrix_transpose(a_w))
        return y, UpsampleSaved((n, c, h, w), (sh, sw), mode, (a_h, a_w))

    def upsample2d_backward(self, dy, saved: UpsampleSaved):
        xp = self.xp
        n, c, h, w = saved.input_shape
        sh, sw = saved.size
        if saved.mode == "nearest":
            return xp.sum(xp.reshape(dy, (n, c, h, sh, w, sw)), axis=(3, 5))
        a_h, a_w = saved.matrices
        return xp.matmul(xp.matmul(xp.matrix_transpose(a_h), dy), a_w)

    def interpolation_matrix(self, size: int, scale: int, dtype):
        """(size * scale, size): row o holds bilinear weights of its two source indices."""
        xp = self.xp
        o = xp.astype(xp.arange(size * scale, device=self.device), xp.float64)
        src = xp.maximum((o + 0.5) / scale - 0.5, 0.0)
        i0 = xp.minimum(xp.floor(src), float(size - 1))
        i1 = xp.minimum(i0 + 1.0, float(size - 1))
        frac = src - i0
        cols = xp.reshape(xp.astype(xp.arange(size, device=self.device), xp.float64), (1, size))
        pick = lambda idx: xp.astype(xp.reshape(idx, (-1, 1)) == cols, xp.float64)
        a = pick(i0) * xp.reshape(1.0 - frac, (-1, 1)) + pick(i1) * xp.reshape(frac, (-1, 1))
        return xp.astype(a, dtype)

    def global_max_pool2d(self, x):
        """(N, C, H, W) -> ((N, C) maxima, saved): torch.nn.AdaptiveMaxPool2d(1); the gradient goes to
        each map's first maximum."""
        xp = self.xp
        n, c, h, w = x.shape
        flat = xp.reshape(x, (n, c, h * w))
        return xp.max(flat, axis=2), (xp.argmax(flat, axis=2), tuple(x.shape))

    def global_max_pool2d_backward(self, dy, saved):
        xp = self.xp
        where, (n, c, h, w) = saved
        hit = xp.reshape(xp.arange(h * w, device=self.device), (1, 1, -1)) == xp.reshape(where, (n, c, 1))
        return xp.reshape(xp.astype(hit, dy.dtype) * xp.reshape(dy, (n, c, 1)), (n, c, h, w))
