"""What every backend provides beyond the array-API standard namespace ``xp``.

A backend is one array library on one device.  Layers reach it through
``backend_of(array)`` and use only ``backend.xp`` (an array-API namespace) plus
the backend's methods: the hot operations (``conv2d``, ``max_pool2d``,
``batch_norm``, ``relu``, ``dropout``, ``softmax_cross_entropy``, the optimiser
updates), whose generic versions live in ``backends.ops``, and the few helpers
below.  So the same layer code runs on NumPy, CuPy and the strict test namespace.
"""
from __future__ import annotations

import numpy as np

from .ops import (ActivationOps, ConvOps, CountOps, GeneralConvOps, LossOps, MergeOps, NormOps, OptimOps,
                  PoolOps, ResampleOps)
from .ops.pool import taps  # noqa: F401  (re-exported for the backends' fast paths)


class Backend(ConvOps, GeneralConvOps, PoolOps, ResampleOps, NormOps, ActivationOps, LossOps, OptimOps, MergeOps,
              CountOps):
    """One array library on one device: ``xp``, data movement, randomness, and the
    hot operations as methods (generic versions in ``backends.ops``)."""

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

    def warm_up(self) -> None:
        """Compile the backend's kernels now, so that no timed step waits for a compiler
        (a no-op where nothing is compiled)."""

    # --- what the standard lacks ------------------------------------------
    def contract(self, a, b):
        """``a @ b`` for a long inner dimension and a small result (weight gradients:
        a sum over every pixel of the batch)."""
        return a @ b

    def matmul_rows(self, a, b):
        """``a @ b`` for a tall ``a`` (many rows: pixels of the batch) and a small ``b``."""
        return a @ b

    def pad_hw(self, x, pad: int):
        """Zero-pad axes 1 and 2 of an NHWC array by ``pad`` on each side."""
        if pad == 0:
            return x
        xp = self.xp
        n, h, w, c = x.shape
        out = xp.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype, device=self.device)
        out[:, pad:pad + h, pad:pad + w, :] = x
        return out

    def patches(self, x, kh: int, kw: int, stride: int, ones: bool = False):
        """im2col for NHWC: (N, H, W, C) -> the (N*OH*OW, KH*KW*C) patch matrix,
        columns in (kh, kw, c) order, plus a last column of ones if ``ones`` (so
        that a bias row in the weight matrix adds the bias inside the GEMM).

        One strided slice per kernel offset (Chainer's loop), so the Python loop
        runs KH*KW times, never over pixels, samples or filters.
        """
        xp = self.xp
        n, h, w, c = x.shape
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
        cols = [x[:, rows, cols_, :] for _, rows, cols_ in taps(kh, kw, stride, oh, ow)]
        cols = xp.reshape(xp.stack(cols, axis=3), (n * oh * ow, kh * kw * c))
        if ones:
            cols = xp.concat([cols, xp.ones((n * oh * ow, 1), dtype=x.dtype, device=self.device)], axis=1)
        return cols

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
