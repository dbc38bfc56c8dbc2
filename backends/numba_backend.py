"""The CPU backend with Numba kernels: NumPy arrays, fused multi-core loops.

``NumbaBackend`` is what ``DCNN_BACKEND=numpy`` gives where Numba imports (it is
a required dependency; ``DCNN_NUMBA=0`` turns it off).  It overrides the hot
operations whose NumPy versions take several passes over memory on one core
(max-pool, BatchNorm+ReLU, ReLU, im2col/col2im, the optimiser updates) with one
parallel loop each (backends/numba_kernels.py), and keeps the GEMMs in BLAS.
Everything else, and the fallback, is ``NumpyBackend``.  Each override is tested
against the generic version (tests/test_fast_paths.py).

The kernels compile on first use (a few seconds each, then cached on disk);
``warm_up()`` compiles them for float32 so that the first epoch is not timed
with the compiler.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import numba
import numpy as np

from . import numba_kernels as kernels
from .numpy_backend import NumpyBackend
from .ops.conv import ConvSaved, conv_output_size
from .ops.pool import PoolSaved


class _NormSaved(NamedTuple):
    x: np.ndarray          # the (M, C) channels-last input: xhat is recomputed from it
    y: np.ndarray          # the (M, C) output: the fused ReLU's mask is read off it
    mean: np.ndarray
    inv_std: np.ndarray
    scale: np.ndarray
    training: bool
    cap: float             # 0: no ReLU
    shape: tuple           # (N, C, H, W)


def _channels_last(x) -> np.ndarray:
    """The NHWC array behind an NCHW-shaped ``x`` (free when its memory is channels-last)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _as_nchw(a, n, h, w, c):
    return a.reshape(n, h, w, c).transpose(0, 3, 1, 2)


class NumbaBackend(NumpyBackend):
    def __init__(self, reason: str = "chosen explicitly"):
        super().__init__(reason)
        if not os.environ.get("NUMBA_THREADING_LAYER"):
            # Numba's OpenMP layer leaves its threads spinning after each kernel, on the core
            # that the next BLAS call needs: a convnet step took 118 ms instead of 38 on 2 cores.
            # The workqueue layer's threads sleep.
            numba.config.THREADING_LAYER = "workqueue"
        numba.set_num_threads(max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS)))

    def describe(self) -> str:
        return f"numpy {np.__version__} + numba {numba.__version__} (CPU, {numba.get_num_threads()} threads)"

    def warm_up(self, dtype=np.float32) -> None:
        """Compile the kernels for ``dtype`` now (each op once on tiny arrays): about
        10 s the first time on a machine, under a second once cached."""
        x = np.ones((2, 4, 4, 2), dtype)
        y, saved = self.max_pool2d(x.transpose(0, 3, 1, 2), 2, 2)
        self.max_pool2d_backward(y, saved)
        w = np.ones((2, 2, 3, 3), dtype)
        y, saved = self.conv2d(x.transpose(0, 3, 1, 2), w, np.ones(2, dtype), 1, 1)
        self.conv2d_backward(y, saved, w)
        r = np.ones(2, dtype)
        for cap in (None, math.inf):
            y, saved = self.batch_norm(y, r, r, r.copy(), r.copy(), training=True, momentum=0.1, eps=1e-5,
                                       relu_cap=cap)
            self.batch_norm_backward(y, saved)
        y, saved = self.relu(y)
        self.relu_backward(y, saved)
        p = np.ones(4, dtype)
        self.adam_update(p, p.copy(), p.copy(), p.copy(), lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8,
                         weight_decay=0.0, decoupled=False, step=1)
        self.sgd_update(p, p.copy(), p.copy(), lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0)

    # --- GEMMs: BLAS's own threads ---------------------------------------------------------------
    # NumpyBackend splits tall products over threads of its own, each on single-threaded BLAS;
    # beside Numba's threads and OpenBLAS's idle ones that measured slower (a convnet step 46
    # and 44 ms against 38), so here BLAS threads itself.
    def matmul_rows(self, a, b):
        return a @ b

    def contract(self, a, b):
        return a @ b

    # --- convolution: im2col and col2im in parallel loops, GEMMs in BLAS ------------------------
    def conv2d(self, x, weight, bias, stride, padding):
        n, c, h, w = x.shape
        f, _, k, _ = weight.shape
        oh, ow = conv_output_size(h, k, stride, padding), conv_output_size(w, k, stride, padding)
        ones = bias is not None
        cols = np.empty((n * oh * ow, k * k * c + ones), x.dtype)
        kernels.im2col(_channels_last(x), k, stride, padding, ones, cols)
        y = self.matmul_rows(cols, self.conv_weight_matrix(weight, bias))
        return _as_nchw(y, n, oh, ow, f), ConvSaved(cols, (n, c, h, w), (oh, ow), stride, padding, ones)

    def col2im_gemm(self, dyt, weight, saved):
        # The column gradient in one GEMM, then one pass that adds it into place.
        n, c, h, w = saved.input_shape
        f, _, k, _ = weight.shape
        wmat = weight.transpose(0, 2, 3, 1).reshape(f, k * k * c)       # (F, KH*KW*C)
        dx = np.empty((n, h, w, c), dyt.dtype)
        kernels.col2im(self.matmul_rows(dyt, wmat), k, saved.stride, saved.padding, dx)
        return dx

    # --- max-pool: the arg-max is kept, not recomputed -----------------------------------------
    def max_pool2d(self, x, k, stride):
        n, c, h, w = x.shape
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        y = np.empty((n, oh, ow, c), x.dtype)
        arg = np.empty((n, oh, ow, c), np.uint8 if k * k <= 256 else np.int32)
        kernels.max_pool(_channels_last(x), k, stride, y, arg)
        return y.transpose(0, 3, 1, 2), PoolSaved((arg, (n, h, w, c)), k, stride)

    def max_pool2d_backward(self, dy, saved):
        arg, (n, h, w, c) = saved.inner
        dx = np.empty((n, h, w, c), dy.dtype)
        kernels.max_pool_backward(dy.transpose(0, 2, 3, 1), arg, saved.k, saved.stride, dx)
        return dx.transpose(0, 3, 1, 2)

    # --- element-wise -------------------------------------------------------------------------
    def relu(self, x, cap: float = math.inf):
        flat = _channels_last(x) if x.ndim == 4 else np.ascontiguousarray(x)
        y = np.empty_like(flat)
        kernels.relu(flat.reshape(-1), flat.dtype.type(cap), y.reshape(-1))
        y = y.transpose(0, 3, 1, 2) if x.ndim == 4 else y
        return y, (y, cap)

    def relu_backward(self, dy, saved):
        y, cap = saved
        yc = _channels_last(y) if y.ndim == 4 else y
        dyc = _channels_last(dy) if dy.ndim == 4 else np.ascontiguousarray(dy)
        dx = np.empty_like(yc)
        kernels.relu_backward(dyc.reshape(-1), yc.reshape(-1), yc.dtype.type(cap), dx.reshape(-1))
        return dx.transpose(0, 3, 1, 2) if dy.ndim == 4 else dx

    # --- BatchNorm (+ ReLU): float64 channel sums, one pass to normalise ------------------------
    def batch_norm(self, x, weight, bias, running_mean, running_var, *, training, momentum, eps, relu_cap=None):
        n, c, h, w = x.shape
        count = n * h * w
        rows = _channels_last(x).reshape(count, c)
        dt = x.dtype.type
        if training:
            mean64, var64 = kernels.channel_moments(rows)
            running_mean *= 1 - momentum
            running_mean += momentum * mean64.astype(x.dtype)
            running_var *= 1 - momentum
            running_var += momentum * (var64 * (count / (count - 1))).astype(x.dtype)
            mean, inv_std = mean64.astype(x.dtype), (1.0 / np.sqrt(var64 + eps)).astype(x.dtype)
        else:
            mean = running_mean.copy()
            inv_std = (1.0 / np.sqrt(running_var + dt(eps))).astype(x.dtype)
        scale = weight * inv_std
        cap = 0.0 if relu_cap is None else relu_cap
        y = np.empty_like(rows)
        kernels.scale_shift(rows, scale, bias - mean * scale, dt(cap), y)
        saved = _NormSaved(rows, y, mean, inv_std, scale, training, cap, (n, c, h, w))
        return _as_nchw(y, n, h, w, c), saved

    def batch_norm_backward(self, dy, saved, *, input_grad=True):
        n, c, h, w = saved.shape
        count = n * h * w
        g = _channels_last(dy).reshape(count, c)
        dt = g.dtype.type
        cap = dt(saved.cap)
        sum_g, sum_gx = kernels.norm_grad_sums(g, saved.x, saved.y, saved.mean, saved.inv_std, cap)
        dbias, dweight = sum_g.astype(g.dtype), sum_gx.astype(g.dtype)
        if not input_grad:
            return None, dweight, dbias
        if saved.training:
            b, c_ = saved.scale * dbias / count, saved.scale * dweight / count
        else:
            b = c_ = np.zeros(c, g.dtype)
        dx = np.empty_like(g)
        kernels.norm_input_grad(g, saved.x, saved.y, saved.mean, saved.inv_std, cap, saved.scale, b, c_, dx)
        return _as_nchw(dx, n, h, w, c), dweight, dbias

    # --- optimisers over the flat buffer ---------------------------------------------------------
    def adam_update(self, param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, weight_decay, decoupled,
                    step):
        dt = param.dtype.type
        kernels.adam(param, grad, exp_avg, exp_avg_sq, dt(lr / (1 - beta1 ** step)), dt(beta1), dt(1 - beta1),
                     dt(beta2), dt(1 - beta2), dt((1 - beta2 ** step) ** 0.5), dt(eps),
                     dt(0.0 if decoupled else weight_decay), dt(1 - lr * weight_decay if decoupled else 1.0))

    def sgd_update(self, param, grad, momentum_buffer, *, lr, momentum, nesterov, weight_decay):
        dt = param.dtype.type
        buf = momentum_buffer if momentum_buffer is not None else param[:0]
        kernels.sgd(param, grad, buf, dt(lr), dt(momentum), bool(nesterov), dt(weight_decay))
