"""Max pooling (torch.nn.MaxPool2d semantics: floor sizes, the first maximum wins), generic version.

A running maximum over the k*k strided views of the channels-last input (one per
window offset): nothing is stacked.  The backward pass routes each window's
gradient to its first maximum in row-major order, found by comparing each view
with the maximum; overlapping windows add up.
"""
from __future__ import annotations

from typing import NamedTuple


class PoolSaved(NamedTuple):
    inner: object           # what the NHWC max_pool kept
    k: int
    stride: int


class AvgPoolSaved(NamedTuple):
    input_shape: tuple      # (N, C, H, W)
    k: int
    stride: int


class PoolOps:
    def max_pool2d(self, x, k: int, stride: int):
        """(N, C, H, W) -> ((N, C, OH, OW), saved)."""
        xp = self.xp
        y, inner = self.max_pool(xp.permute_dims(x, (0, 2, 3, 1)), k, stride)
        return xp.permute_dims(y, (0, 3, 1, 2)), PoolSaved(inner, k, stride)

    def max_pool2d_backward(self, dy, saved: PoolSaved):
        xp = self.xp
        dx = self.max_pool_backward(xp.permute_dims(dy, (0, 2, 3, 1)), saved.inner, saved.k, saved.stride)
        return xp.permute_dims(dx, (0, 3, 1, 2))

    def avg_pool2d(self, x, k: int, stride: int):
        """Mean over k x k windows (torch.nn.AvgPool2d, no padding, floor sizes):
        (N, C, H, W) -> ((N, C, OH, OW), saved).  A sum of the k*k strided views."""
        n, c, h, w = x.shape
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        y = None
        for _, rows, cols in taps(k, k, stride, oh, ow):
            view = x[:, :, rows, cols]
            y = view * (1.0 / (k * k)) if y is None else y + view * (1.0 / (k * k))
        return y, AvgPoolSaved(tuple(x.shape), k, stride)

    def avg_pool2d_backward(self, dy, saved: AvgPoolSaved):
        xp = self.xp
        k, stride = saved.k, saved.stride
        _, _, oh, ow = dy.shape
        share = dy * (1.0 / (k * k))
        if stride == k and saved.input_shape[2] == k * oh and saved.input_shape[3] == k * ow:
            # Tiling windows: each input pixel gets its window's share (a broadcast, no sum).
            n, c = dy.shape[:2]
            tiled = xp.broadcast_to(xp.reshape(share, (n, c, oh, 1, ow, 1)), (n, c, oh, k, ow, k))
            return xp.reshape(tiled, saved.input_shape)
        dx = xp.zeros(saved.input_shape, dtype=dy.dtype, device=self.device)
        for _, rows, cols in taps(k, k, stride, oh, ow):
            dx[:, :, rows, cols] += share
        return dx

    def global_avg_pool2d(self, x):
        """(N, C, H, W) -> ((N, C) means over each map, saved)."""
        return self.xp.mean(x, axis=(2, 3)), tuple(x.shape)

    def global_avg_pool2d_backward(self, dy, saved):
        xp = self.xp
        n, c, h, w = saved
        # A product with ones, not broadcast_to: the next backward gets a plain writable array.
        return xp.reshape(dy * (1.0 / (h * w)), (n, c, 1, 1)) * xp.ones((1, 1, h, w), dtype=dy.dtype,
                                                                          device=self.device)

    # --- channels-last internals ----------------------------------------------------
    def max_pool(self, x, k: int, stride: int):
        """Max over k x k windows of an NHWC array: ((N, OH, OW, C), saved)."""
        xp = self.xp
        n, h, w, c = x.shape
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        views = [x[:, rows, cols, :] for _, rows, cols in taps(k, k, stride, oh, ow)]
        y = views[0]
        for view in views[1:]:
            y = xp.maximum(y, view)
        return y, (x, y)

    def max_pool_backward(self, dy, saved, k: int, stride: int):
        xp = self.xp
        x, y = saved
        _, oh, ow, _ = y.shape
        dx = xp.zeros(x.shape, dtype=dy.dtype, device=self.device)
        taken = None
        for _, rows, cols in taps(k, k, stride, oh, ow):
            hit = x[:, rows, cols, :] == y
            first = hit if taken is None else hit & ~taken
            taken = hit if taken is None else taken | hit
            dx[:, rows, cols, :] += xp.where(first, dy, xp.zeros_like(dy))
        return dx


def taps(kh: int, kw: int, stride: int, oh: int, ow: int):
    """(offset index, row slice, column slice) of each kernel offset's strided view:
    the input pixels that offset (i, j) of every output window reads."""
    for i in range(kh):
        for j in range(kw):
            yield (i * kw + j, slice(i, i + stride * (oh - 1) + 1, stride),
                   slice(j, j + stride * (ow - 1) + 1, stride))
