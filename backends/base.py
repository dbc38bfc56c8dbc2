"""What every backend provides beyond the array-API standard namespace ``xp``.

A backend is one array library on one device.  Layers reach it through
``backend_of(array)`` and use only ``backend.xp`` (an array-API namespace) plus
the few methods below, so the same layer code runs on NumPy, CuPy and the
strict test namespace.
"""
from __future__ import annotations

import numpy as np


class Backend:
    name: str = "?"

    def __init__(self, xp, device=None, reason: str = ""):
        self.xp = xp              # array-API namespace (array_api_compat wrapper)
        self.device = device      # what ``xp.asarray(..., device=)`` takes
        self.reason = reason      # why this backend was chosen (for ``dcnn info``)

    # --- moving data -------------------------------------------------------
    def from_numpy(self, array, dtype=None):
        """Host NumPy array -> array on this backend (no copy where possible)."""
        array = np.asarray(array)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return self.xp.asarray(array, device=self.device)

    def to_numpy(self, array) -> np.ndarray:
        return np.asarray(array)

    def owns(self, array) -> bool:
        """True when ``array`` lives on this backend."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def describe(self) -> str:
        return self.name

    # --- what the standard lacks ------------------------------------------
    def pad_hw(self, x, pad: int):
        """Zero-pad axes 1 and 2 of an NHWC array by ``pad`` on each side."""
        if pad == 0:
            return x
        xp = self.xp
        n, h, w, c = x.shape
        out = xp.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype, device=self.device)
        out[:, pad:pad + h, pad:pad + w, :] = x
        return out

    def patches(self, x, kh: int, kw: int, stride: int):
        """im2col for NHWC: (N, H, W, C) -> (N, OH, OW, KH*KW, C).

        One strided slice per kernel offset (Chainer's loop), so the Python loop
        runs KH*KW times, never over pixels, samples or filters.
        """
        n, h, w, c = x.shape
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
        cols = [x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
                for i in range(kh) for j in range(kw)]
        return self.xp.stack(cols, axis=3)

    def fold_patches(self, cols, hw: tuple[int, int], kh: int, kw: int, stride: int):
        """col2im, the adjoint of ``patches``: (N, OH, OW, KH*KW, C) -> (N, H, W, C).

        Overlapping windows are summed by KH*KW slice additions: no scatter-add.
        """
        xp = self.xp
        n, oh, ow, _, c = cols.shape
        h, w = hw
        if stride == kh == kw and h == oh * kh and w == ow * kw:
            # Windows tile the image exactly: folding is a pure reshape.
            t = xp.reshape(cols, (n, oh, ow, kh, kw, c))
            t = xp.permute_dims(t, (0, 1, 3, 2, 4, 5))
            return xp.reshape(t, (n, h, w, c))
        out = xp.zeros((n, h, w, c), dtype=cols.dtype, device=self.device)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i, i + stride * (oh - 1) + 1, stride)
                colsl = slice(j, j + stride * (ow - 1) + 1, stride)
                out[:, rows, colsl, :] += cols[:, :, :, i * kw + j, :]
        return out

    # --- randomness ---------------------------------------------------------
    def random_generator(self, seed):
        """A generator for on-device randomness (dropout masks, augmentation)."""
        return _HostGenerator(self, seed)

    def __repr__(self) -> str:
        return f"<backend {self.describe()}>"


class _HostGenerator:
    """Draws on the host with NumPy and moves the result; for test backends."""

    def __init__(self, backend: Backend, seed):
        self._backend = backend
        self._rng = np.random.default_rng(seed)

    def random(self, shape, dtype):
        values = self._backend.from_numpy(self._rng.random(shape, dtype=np.float32))
        return self._backend.xp.astype(values, dtype)

    @property
    def state(self):
        return self._rng.bit_generator.state

    @state.setter
    def state(self, value):
        self._rng.bit_generator.state = value
