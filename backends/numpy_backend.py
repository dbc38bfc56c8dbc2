"""The CPU backend: NumPy through its array-API namespace.

Two hot spots have NumPy fast paths here; each is tested against the generic
``Backend`` method it overrides (tests/test_fast_paths.py):

- ``patches``: one copy of a strided window view instead of KH*KW slice copies
  (the copy runs over KW*C contiguous values at a time); for one or two input
  channels, offset-major memory instead (contiguous rows in each copy);
- ``max_pool`` / ``max_pool_backward``: ``out=`` buffers, and boolean masks
  multiplied in place of ``where`` (which is ten times slower in NumPy).
"""
import array_api_compat.numpy as xp_numpy
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .base import Backend, taps


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, reason: str = "chosen explicitly"):
        super().__init__(xp_numpy, device="cpu", reason=reason)

    def owns(self, array) -> bool:
        return isinstance(array, (np.ndarray, np.generic))

    def from_numpy(self, array, dtype=None):
        array = np.asarray(array)
        return array if dtype is None else array.astype(dtype, copy=False)

    def describe(self) -> str:
        return f"numpy {np.__version__} (CPU)"

    # --- fast paths -----------------------------------------------------------
    def patches(self, x, kh: int, kw: int, stride: int, ones: bool = False):
        n, h, w, c = x.shape
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
        m, k = n * oh * ow, kh * kw * c
        if c * kw < 16:
            # Few channels (the first layer): offset-major memory, one contiguous copy
            # per offset; the matrix is its transposed (Fortran-order) view.
            out = np.empty((k + ones, n, oh, ow), dtype=x.dtype)
            for t, rows, cols in taps(kh, kw, stride, oh, ow):
                np.copyto(out[t * c:(t + 1) * c], np.moveaxis(x[:, rows, cols, :], 3, 0))
            if ones:
                out[k] = 1
            return out.reshape(k + ones, m).T
        # One copy of a strided window view: KW*C values are contiguous in both.
        sn, sh, sw, sc = x.strides
        windows = as_strided(x, (n, oh, ow, kh, kw, c), (sn, sh * stride, sw * stride, sh, sw, sc),
                             writeable=False)
        out = np.empty((m, k + ones), dtype=x.dtype)
        row = out.strides[0]
        item = out.itemsize
        target = as_strided(out, (n, oh, ow, kh, kw, c), (oh * ow * row, ow * row, row, kw * c * item, c * item, item))
        np.copyto(target, windows)
        if ones:
            out[:, k] = 1
        return out

    def max_pool(self, x, k: int, stride: int):
        n, h, w, c = x.shape
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        views = [x[:, rows, cols, :] for _, rows, cols in taps(k, k, stride, oh, ow)]
        if len(views) == 1:
            y = views[0].copy()
        else:
            y = np.maximum(views[0], views[1])
            for view in views[2:]:
                np.maximum(y, view, out=y)
        return y, (x, y)

    def max_pool_backward(self, dy, saved, k: int, stride: int):
        x, y = saved
        _, oh, ow, _ = y.shape
        n, h, w, c = x.shape
        dy = np.ascontiguousarray(dy)   # read k*k times below; may arrive in NCHW memory (after Flatten)
        tiles = stride == k and h == oh * k and w == ow * k   # every input pixel in exactly one window
        dx = np.empty(x.shape, dy.dtype) if tiles else np.zeros(x.shape, dy.dtype)
        hit = np.empty(y.shape, bool)
        first = np.empty(y.shape, bool)
        taken = None
        for t, rows, cols in taps(k, k, stride, oh, ow):
            view = x[:, rows, cols, :]
            target = dx[:, rows, cols, :]
            np.equal(view, y, out=hit)
            if taken is None:
                taken, mask = hit.copy(), hit
            else:
                np.greater(hit, taken, out=first)          # hit and not yet taken
                np.logical_or(taken, hit, out=taken)
                mask = first
            if tiles or stride >= k:
                np.multiply(dy, mask, out=target)
            else:
                target += dy * mask
        return dx
