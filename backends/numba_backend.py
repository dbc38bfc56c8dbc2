"""The CPU backend with Numba kernels: NumPy arrays, fused multi-core loops, one thread pool.

``NumbaBackend`` is what ``DCNN_BACKEND=numpy`` gives where Numba imports (it is
a required dependency; ``DCNN_NUMBA=0`` turns it off).  It overrides the hot
operations whose NumPy versions take several passes over memory on one core
(max-pool, BatchNorm+ReLU, ReLU, the optimiser updates) with one parallel loop
each (backends/numba_kernels.py, the element-wise ones in backends/numba_elementwise_kernels.py).

Its float32 products run inside the same Numba thread pool: each task calls
NumPy's own OpenBLAS, single-threaded, on its slice (backends/openblas.py).  Two
thread pools on two cores fight: OpenBLAS's threads spin after each product on the
core that the next Numba kernel needs.  And a convolution's task builds its few
images' patch rows and multiplies them while they are in its core's cache, so the
patch matrix (29 MB for the convnet's second layer at batch 128) is never written
to memory; the backward pass rebuilds each slice from the saved input.  Where
NumPy's OpenBLAS cannot be reached (another BLAS), and for float64, products run
in NumPy's ``@`` with BLAS's own threads, after an im2col kernel.

Everything else, and the fallback, is ``NumpyBackend``.  Each override is tested
against the generic version (tests/test_backend_methods.py).

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

from . import numba_elementwise_kernels as elementwise
from . import numba_kernels as kernels
from . import openblas
from .numba_family import NumbaFamily, PointwiseSaved
from .numpy_backend import NumpyBackend
from .ops.conv import ConvSaved, conv_output_size
from .ops.pool import PoolSaved


class _PooledConvSaved(NamedTuple):
    x: np.ndarray          # the channels-last (N, H, W, C) input: backward rebuilds its patches
    output_hw: tuple
    stride: int
    padding: int
    has_bias: bool


class _NormSaved(NamedTuple):
    x: np.ndarray          # the (M, C) channels-last input: xhat and the fused ReLU's input are recomputed from it
    mean: np.ndarray
    inv_std: np.ndarray
    scale: np.ndarray
    shift: np.ndarray      # the output is x * scale + shift (before the ReLU)
    training: bool
    cap: float             # 0: no ReLU
    shape: tuple           # (N, C, H, W)


def _channels_last(x) -> np.ndarray:
    """The NHWC array behind an NCHW-shaped ``x`` (free when its memory is channels-last)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _blas_operand(a):
    """(C-contiguous array, transposed?) such that ``a`` is it or its transpose: BLAS reads both."""
    if a.flags.c_contiguous:
        return a, False
    if a.T.flags.c_contiguous:
        return a.T, True
    return np.ascontiguousarray(a), False


def _as_nchw(a, n, h, w, c):
    return a.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _threading_layer(one_pool: bool) -> str:
    """Numba's OpenMP layer when every kernel and GEMM runs in its pool, else its workqueue.

    OpenMP's threads spin a moment after each kernel, so the next starts at once, as in
    PyTorch's pool: a convnet step 27 ms against 34 with the workqueue's sleeping threads,
    the resnet step 64 against 81.  The spin is kept short (GOMP_SPINCOUNT=10000, unless set)
    so that a busy machine loses little (a step 59 ms against 56 beside a busy core).  With
    BLAS's own threads beside them the spinning took the core the next GEMM needed: a convnet
    step 118 ms instead of 39, so there the workqueue's threads, which sleep.
    """
    if not one_pool:
        return "workqueue"
    # libgomp reads the variable once, when it loads (importing Numba's OpenMP pool loads it);
    # it is unset again so that child processes and other OpenMP runtimes (PyTorch's) keep their own.
    ours = "GOMP_SPINCOUNT" not in os.environ
    if ours:
        os.environ["GOMP_SPINCOUNT"] = "10000"
    try:
        from numba.np.ufunc import omppool  # noqa: F401  (absent where Numba has no OpenMP)
    except ImportError:
        return "workqueue"
    finally:
        if ours:
            del os.environ["GOMP_SPINCOUNT"]
    return "omp"


class NumbaBackend(NumbaFamily, NumpyBackend):
    CONV_ROWS_PER_TASK = 784      # output pixels whose patch rows one task builds and multiplies (whole images)
    CONV_BAND_BYTES = 112 << 10   # of those, the patch rows built at a time for narrow products (``_band``)
    GEMM_MIN_WORK = 1 << 20       # multiply-adds per slice below which a product is not split

    def __init__(self, reason: str = "chosen explicitly"):
        super().__init__(reason)
        self._sgemm = openblas.sgemm() if self._blas_threads is not None else None
        if not os.environ.get("NUMBA_THREADING_LAYER"):
            numba.config.THREADING_LAYER = _threading_layer(one_pool=self._sgemm is not None)
        numba.set_num_threads(max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS)))

    def describe(self) -> str:
        return (f"numpy {np.__version__} + numba {numba.__version__} (CPU, {numba.get_num_threads()} threads"
                f"{self._blas_kernels()})")

    def warm_up(self, dtype=np.float32) -> None:
        """Compile the kernels for ``dtype`` now (each op once on tiny arrays): about
        20 s the first time in a checkout, under a second once cached."""
        x = np.ones((2, 4, 4, 2), dtype)
        y, saved = self.max_pool2d(x.transpose(0, 3, 1, 2), 2, 2)
        self.max_pool2d_backward(y, saved)
        w = np.ones((2, 2, 3, 3), dtype)
        y, saved = self.conv2d(x.transpose(0, 3, 1, 2), w, np.ones(2, dtype), 1, 1)
        self.conv2d_backward(y, saved, w)
        self.conv2d_max_pool2d(x.transpose(0, 3, 1, 2), w, np.ones(2, dtype), 1, 1, 2, 2)
        self.matmul_rows(np.ones((2, 3), dtype), np.ones((2, 3), dtype).T)
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
        self.warm_up_family(dtype)

    # --- GEMMs: in the Numba pool, each task on single-threaded OpenBLAS (see the module's text) ---
    # With BLAS's own threads, the im2col after a GEMM took 6.8 ms in a convnet step instead of
    # 0.6 alone: OpenBLAS's spinning threads had the core.
    def _pooled(self, *arrays) -> bool:
        return self._sgemm is not None and all(a.dtype == np.float32 and a.size for a in arrays)

    def _in_pool(self, kernel, *args) -> None:
        """Run ``kernel(sgemm, *args)`` with OpenBLAS single-threaded, then give it its threads back."""
        set_threads, get_threads = self._blas_threads
        before = get_threads()
        if before != 1:
            set_threads(1)
        try:
            kernel(self._sgemm, *args)
        finally:
            if before != 1:
                set_threads(before)

    def _images_per_task(self, pixels: int) -> int:
        # Slices of a few hundred rows: big enough for BLAS, small enough for a core's L2.
        return max(1, round(self.CONV_ROWS_PER_TASK / max(1, pixels)))

    def _band(self, filters: int, width: int, task_rows: int) -> int:
        """Patch rows built and multiplied at a time.  For narrow products (F <= 32 filters and
        patch rows of <= 288 values: U-Net's 28x28 and 56x56 layers) the product is dominated by
        reading the patch rows, which pays when they are still in L2: CONV_BAND_BYTES of them
        (batch 32, 1 thread, forward + backward: 16 -> 16 at 56x56 27.5 -> 23.1 ms, 32 -> 16
        48.1 -> 39.1, 32 -> 32 at 28x28 19.4 -> 16.6, 16 -> 32 10.9 -> 9.0).  Wider products
        gained nothing from it (64 -> 32 at 28x28, 64 -> 64 at 14x14)."""
        if filters > 32 or width > 288:
            return task_rows
        return max(1, min(task_rows, self.CONV_BAND_BYTES // (4 * width)))

    def matmul_rows(self, a, b):
        if a.ndim != 2 or b.ndim != 2 or not self._pooled(a, b):
            return a @ b
        (a, trans_a), (b, trans_b) = _blas_operand(a), _blas_operand(b)
        m, k = (a.shape[::-1] if trans_a else a.shape)
        n = b.shape[0] if trans_b else b.shape[1]
        c = np.empty((m, n), np.float32)
        chunks = max(1, min(numba.get_num_threads(), m * n * k // self.GEMM_MIN_WORK))
        self._in_pool(kernels.gemm, a, trans_a, b, trans_b, c, chunks)
        return c

    def contract(self, a, b):
        return self.matmul_rows(a, b)

    # --- convolution: im2col and col2im in parallel loops, sharing a task with their GEMM ---------
    def conv2d(self, x, weight, bias, stride, padding):
        n, c, h, w = x.shape
        f, _, k, _ = weight.shape
        oh, ow = conv_output_size(h, k, stride, padding), conv_output_size(w, k, stride, padding)
        ones = bias is not None
        if k == 1 and stride == 1 and padding == 0 and self._pooled(x, weight):
            return self.pointwise_conv2d(x, weight, bias)
        wmat = self.conv_weight_matrix(weight, bias)
        if not self._pooled(x, wmat):
            cols = np.empty((n * oh * ow, k * k * c + ones), x.dtype)
            kernels.im2col(_channels_last(x), k, stride, padding, ones, cols)
            y = self.matmul_rows(cols, wmat)
            return _as_nchw(y, n, oh, ow, f), ConvSaved(cols, (n, c, h, w), (oh, ow), stride, padding, ones)
        # No patch matrix in memory: the backward pass rebuilds each task's slice from the input.
        x = _channels_last(x)
        y = np.empty((n * oh * ow, f), x.dtype)
        task_rows = self._images_per_task(oh * ow) * oh * ow
        self._in_pool(kernels.conv_forward, x, k, stride, padding, ones, np.ascontiguousarray(wmat), y,
                      self._band(f, wmat.shape[0], task_rows))
        return _as_nchw(y, n, oh, ow, f), _PooledConvSaved(x, (oh, ow), stride, padding, ones)

    def conv2d_max_pool2d(self, x, weight, bias, stride, padding, pool_k, pool_stride):
        wmat = self.conv_weight_matrix(weight, bias)
        if not self._pooled(x, wmat):
            return super().conv2d_max_pool2d(x, weight, bias, stride, padding, pool_k, pool_stride)
        n, c, h, w = x.shape
        f, _, k, _ = weight.shape
        oh, ow = conv_output_size(h, k, stride, padding), conv_output_size(w, k, stride, padding)
        ph, pw = (oh - pool_k) // pool_stride + 1, (ow - pool_k) // pool_stride + 1
        x = _channels_last(x)
        y = np.empty((n, ph, pw, f), x.dtype)
        arg = np.empty((n, ph, pw, f), np.uint8 if pool_k * pool_k <= 256 else np.int32)
        self._in_pool(kernels.conv_max_pool_forward, x, k, stride, padding, bias is not None,
                      np.ascontiguousarray(wmat), (oh, ow), pool_k, pool_stride, y, arg,
                      self._images_per_task(oh * ow))
        conv_saved = _PooledConvSaved(x, (oh, ow), stride, padding, bias is not None)
        return y.transpose(0, 3, 1, 2), (conv_saved, PoolSaved((arg, (n, oh, ow, f)), pool_k, pool_stride))

    def conv2d_backward(self, dy, saved, weight, *, input_grad=True, weight_grad=True):
        if isinstance(saved, PointwiseSaved):
            return self.pointwise_conv2d_backward(dy, saved, weight, input_grad=input_grad, weight_grad=weight_grad)
        if not isinstance(saved, _PooledConvSaved):
            return super().conv2d_backward(dy, saved, weight, input_grad=input_grad, weight_grad=weight_grad)
        x = saved.x
        n, h, w, c = x.shape
        f, _, k, _ = weight.shape
        kkc, per_task = k * k * c, self._images_per_task(saved.output_hw[0] * saved.output_hw[1])
        dyt = _channels_last(dy).reshape(-1, f)
        wmat = np.ascontiguousarray(weight.transpose(0, 2, 3, 1).reshape(f, kkc))       # (F, KH*KW*C)
        dx = np.empty((n, h, w, c) if input_grad else (0, 1, 1, 1), x.dtype)
        partial = np.empty(((n + per_task - 1) // per_task if weight_grad else 0, f, kkc + saved.has_bias), x.dtype)
        (oh, ow), task_rows = saved.output_hw, per_task * saved.output_hw[0] * saved.output_hw[1]
        # A stride-1 convolution with no more filters than channels (U-Net's layers after a
        # Concatenate, C = 2F) takes its input gradient as a convolution of dy: a gather straight
        # into dx, no column gradient and no scatter-add (1 thread, batch 32: 32 -> 16 at 56x56
        # 13.5 -> 11.3 ms, 16 -> 16 7.9 -> 7.1, 64 -> 32 at 28x28 11.5 -> 10.3).
        gather = input_grad and saved.stride == 1 and saved.padding <= k - 1 and f <= c
        if weight_grad or (input_grad and not gather):
            self._in_pool(kernels.conv_backward, x, dyt, wmat, k, saved.stride, saved.padding, saved.has_bias, dx,
                          partial, per_task, self._band(f, kkc + saved.has_bias, task_rows),
                          input_grad and not gather, weight_grad)
        if gather:
            flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(k * k * f, c))
            self._in_pool(kernels.conv_input_grad, dyt.reshape(n, oh, ow, f), flipped, k, k - 1 - saved.padding, dx,
                          self._band(c, k * k * f, self._images_per_task(h * w) * h * w))
        dw = db = None
        if weight_grad:
            total = np.empty(partial.shape[1:], x.dtype)
            kernels.sum_in_order(partial, total)
            dw = total[:, :kkc].reshape(f, k, k, c).transpose(0, 3, 1, 2)
            db = total[:, kkc] if saved.has_bias else None
        return (dx.transpose(0, 3, 1, 2) if input_grad else None), dw, db

    def col2im_gemm(self, dyt, weight, saved):
        # The column gradient (one GEMM), then one pass that adds it into place.
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
        elementwise.relu(flat.reshape(-1), flat.dtype.type(cap), y.reshape(-1))
        y = y.transpose(0, 3, 1, 2) if x.ndim == 4 else y
        return y, (y, cap)

    def relu_backward(self, dy, saved):
        y, cap = saved
        yc = _channels_last(y) if y.ndim == 4 else y
        dyc = _channels_last(dy) if dy.ndim == 4 else np.ascontiguousarray(dy)
        dx = np.empty_like(yc)
        elementwise.relu_backward(dyc.reshape(-1), yc.reshape(-1), yc.dtype.type(cap), dx.reshape(-1))
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
        shift = bias - mean * scale
        kernels.scale_shift(rows, scale, shift, dt(cap), y)
        saved = _NormSaved(rows, mean, inv_std, scale, shift, training, cap, (n, c, h, w))
        return _as_nchw(y, n, h, w, c), saved

    def batch_norm_backward(self, dy, saved, *, input_grad=True):
        n, c, h, w = saved.shape
        count = n * h * w
        g = _channels_last(dy).reshape(count, c)
        dt = g.dtype.type
        cap = dt(saved.cap)
        sum_g, sum_gx = kernels.norm_grad_sums(g, saved.x, saved.mean, saved.inv_std, saved.scale, saved.shift, cap)
        dbias, dweight = sum_g.astype(g.dtype), sum_gx.astype(g.dtype)
        if not input_grad:
            return None, dweight, dbias
        if saved.training:
            b, c_ = saved.scale * dbias / count, saved.scale * dweight / count
        else:
            b = c_ = np.zeros(c, g.dtype)
        dx = np.empty_like(g)
        kernels.norm_input_grad(g, saved.x, saved.mean, saved.inv_std, saved.scale, saved.shift, cap, b, c_, dx)
        return _as_nchw(dx, n, h, w, c), dweight, dbias

    # --- optimisers over the flat buffer ---------------------------------------------------------
    def adam_update(self, param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, weight_decay, decoupled,
                    step):
        dt = param.dtype.type
        elementwise.adam(param, grad, exp_avg, exp_avg_sq, dt(lr / (1 - beta1 ** step)), dt(beta1), dt(1 - beta1),
                         dt(beta2), dt(1 - beta2), dt((1 - beta2 ** step) ** 0.5), dt(eps),
                         dt(0.0 if decoupled else weight_decay), dt(1 - lr * weight_decay if decoupled else 1.0))

    def sgd_update(self, param, grad, momentum_buffer, *, lr, momentum, nesterov, weight_decay):
        dt = param.dtype.type
        buf = momentum_buffer if momentum_buffer is not None else param[:0]
        elementwise.sgd(param, grad, buf, dt(lr), dt(momentum), bool(nesterov), dt(weight_decay))
