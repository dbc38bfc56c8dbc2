"""The CPU backend: NumPy through its array-API namespace.

This module is the pure-NumPy path: the fallback where Numba is missing (or
``DCNN_NUMBA=0``), and the base the Numba kernels build on (numba_backend.py).
Its fast paths are each tested against the generic ``Backend`` method they
override (tests/test_fast_paths.py):

- ``patches``: one copy of a strided window view instead of KH*KW slice copies
  (the copy runs over KW*C contiguous values at a time); for one or two input
  channels, offset-major memory instead (contiguous rows in each copy);
- ``max_pool`` / ``max_pool_backward``: ``out=`` buffers, and boolean masks
  multiplied in place of ``where`` (which is ten times slower in NumPy);
- ``conv_weight_gradient``: per-sample products summed for the first layer's long reduction;
- ``batch_norm``: the channels-last (N*H, W*C) view, channel sums as GEMVs;
- ``relu``: ``clip`` (NumPy's fastest form).

NumPy runs element-wise work on one core; these fast paths split large batches
over ``threads`` threads (NumPy releases the GIL inside its loops).  ``threads``
follows OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, as the GEMMs do, else the CPU count.

``matmul_rows`` (a tall product: patches times weights) splits the rows over the
same threads the same way.  ``contract`` (a product with a long inner dimension, e.g. a weight gradient summed
over 25,000 pixels) splits that dimension over the same threads, each running
single-threaded BLAS, and adds the parts.  OpenBLAS's own threads synchronise once
per block of the inner dimension, about a hundred times in such a product: on a
busy machine, where the second core is often taken, each of those waits for the
scheduler and the product runs 10-30x slower than on one thread.
"""
import ctypes
import math
import os
from concurrent.futures import ThreadPoolExecutor

import array_api_compat.numpy as xp_numpy
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import openblas
from .base import Backend, taps
from .ops.norm import NormSaved


def _default_threads() -> int:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    return os.cpu_count() or 1


def _reuse_freed_memory() -> bool:
    """Let glibc's malloc keep freed large blocks for reuse instead of returning them to
    the system (as a caching allocator does).  By default each step's patch matrices and
    activations (tens of MB) are fresh mmaps: about 700 page faults per convnet step,
    4-5 ms of its 40.  Returns whether it applied (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 1 << 30) or libc.mallopt(m_mmap_threshold, 32 << 20)
    return bool(ok and libc.mallopt(m_trim_threshold, 1 << 30))


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, reason: str = "chosen explicitly"):
        super().__init__(xp_numpy, device="cpu", reason=reason)
        self.threads = _default_threads()
        self.parallel_min_size = 1 << 18     # elements; smaller work is not worth a thread hand-off
        self.contract_min_inner = 4096       # inner length from which ``contract`` splits it
        self._executor, self._workers = None, 0
        self._blas_threads = openblas.thread_control()
        self.reuses_freed_memory = _reuse_freed_memory()

    def owns(self, array) -> bool:
        return isinstance(array, (np.ndarray, np.generic))

    def confusion_counts(self, predicted, labels, k: int, ignore_index=None):
        # One bincount of exact integers instead of two one-hot (M, k) arrays and a BLAS product,
        # whose own threads would keep spinning on the core that the next Numba kernel needs.
        true = np.reshape(labels, -1).astype(np.int64, copy=False)
        pred = np.reshape(predicted, -1).astype(np.int64, copy=False)
        kept = (true >= 0) & (true < k)          # as the generic one-hot rows: other labels count nowhere
        if ignore_index is not None:
            kept &= true != ignore_index
        if not kept.all():
            true, pred = true[kept], pred[kept]
        return np.bincount(true * k + pred, minlength=k * k).reshape(k, k)

    def from_numpy(self, array, dtype=None):
        array = np.asarray(array)
        return array if dtype is None else array.astype(dtype, copy=False)

    def describe(self) -> str:
        return f"numpy {np.__version__} (CPU{self._blas_kernels()})"

    @staticmethod
    def _blas_kernels() -> str:
        """", OpenBLAS <core>" (the kernels its products run, which a pin in the environment may choose), or ""."""
        core = openblas.corename()
        return f", OpenBLAS {core}" if core else ""

    def _over_batch(self, work, n: int, size: int) -> None:
        """Run ``work(batch_slice)`` on ``threads`` contiguous parts of range(n)."""
        parts = min(self.threads, n) if size >= self.parallel_min_size else 1
        if parts <= 1:
            work(slice(0, n))
            return
        if self._executor is None or self._workers < parts - 1:
            self._executor = ThreadPoolExecutor(parts - 1, thread_name_prefix="dcnn-numpy")
            self._workers = parts - 1
        bounds = [n * i // parts for i in range(parts + 1)]
        futures = [self._executor.submit(work, slice(bounds[i], bounds[i + 1])) for i in range(1, parts)]
        work(slice(bounds[0], bounds[1]))
        for future in futures:
            future.result()

    # --- fast paths -----------------------------------------------------------
    def contract(self, a, b):
        k = a.shape[-1]
        parts = min(self.threads, k // max(1, self.contract_min_inner // 2))
        if parts <= 1 or self._blas_threads is None or k < self.contract_min_inner:
            return a @ b
        bounds = [k * i // parts for i in range(parts + 1)]
        partial = [None] * parts

        def product(s):
            for i in range(s.start, s.stop):
                partial[i] = a[:, bounds[i]:bounds[i + 1]] @ b[bounds[i]:bounds[i + 1]]
        set_threads, get_threads = self._blas_threads
        before = get_threads()
        set_threads(1)
        try:
            self._over_batch(product, parts, self.parallel_min_size)
        finally:
            set_threads(before)
        total = partial[0]
        for part in partial[1:]:
            total += part
        return total

    def matmul_rows(self, a, b):
        rows = a.shape[0]
        if self.threads <= 1 or self._blas_threads is None or rows * b.shape[1] < self.parallel_min_size:
            return a @ b
        out = np.empty((rows, b.shape[1]), np.result_type(a, b))
        set_threads, get_threads = self._blas_threads
        before = get_threads()
        set_threads(1)
        try:
            self._over_batch(lambda s: np.matmul(a[s], b, out=out[s]), rows, out.size)
        finally:
            set_threads(before)
        return out

    def patches(self, x, kh: int, kw: int, stride: int, ones: bool = False):
        n, h, w, c = x.shape
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
        m, k = n * oh * ow, kh * kw * c
        if c * kw < 16:
            # Few channels (the first layer): offset-major memory, one contiguous copy
            # per offset; the matrix is its transposed (Fortran-order) view.
            out = np.empty((k + ones, n, oh, ow), dtype=x.dtype)

            def copy(s):
                for t, rows, cols in taps(kh, kw, stride, oh, ow):
                    np.copyto(out[t * c:(t + 1) * c, s], np.moveaxis(x[s, rows, cols, :], 3, 0))
            self._over_batch(copy, n, out.size)
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
        self._over_batch(lambda s: np.copyto(target[s], windows[s]), n, out.size)
        if ones:
            out[:, k] = 1
        return out

    def max_pool(self, x, k: int, stride: int):
        n, h, w, c = x.shape
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        y = np.empty((n, oh, ow, c), dtype=x.dtype)

        def pool(s):
            views = [x[s, rows, cols, :] for _, rows, cols in taps(k, k, stride, oh, ow)]
            if len(views) == 1:
                np.copyto(y[s], views[0])
                return
            np.maximum(views[0], views[1], out=y[s])
            for view in views[2:]:
                np.maximum(y[s], view, out=y[s])
        self._over_batch(pool, n, x.size)
        return y, (x, y)

    def max_pool_backward(self, dy, saved, k: int, stride: int):
        x, y = saved
        _, oh, ow, _ = y.shape
        n, h, w, c = x.shape
        dy = np.ascontiguousarray(dy)   # read k*k times below; may arrive in NCHW memory (after Flatten)
        tiles = stride == k and h == oh * k and w == ow * k   # every input pixel in exactly one window
        dx = np.empty(x.shape, dy.dtype) if tiles else np.zeros(x.shape, dy.dtype)

        def route(s):
            # Each window's gradient goes to its first maximum: hit and not yet taken.
            d, m = dy[s], y[s]
            hit = np.empty(m.shape, bool)
            first = np.empty(m.shape, bool)
            taken = None
            for t, rows, cols in taps(k, k, stride, oh, ow):
                np.equal(x[s, rows, cols, :], m, out=hit)
                if taken is None:
                    taken, mask = hit.copy(), hit
                else:
                    np.greater(hit, taken, out=first)
                    np.logical_or(taken, hit, out=taken)
                    mask = first
                target = dx[s, rows, cols, :]
                if tiles or stride >= k:
                    np.multiply(d, mask, out=target)
                else:
                    target += d * mask
        self._over_batch(route, n, x.size)
        return dx

    def conv_weight_gradient(self, dyt, cols, n: int):
        m, f = dyt.shape
        width = cols.shape[1]
        if m > 32 * f * width:
            # A long reduction into a small matrix (the first layer): one product per
            # sample, then a sum.  BLAS runs a single K=N*OH*OW product 3-4x slower.
            per_sample = np.matmul(dyt.reshape(n, m // n, f).transpose(0, 2, 1), cols.reshape(n, m // n, width))
            return per_sample.sum(axis=0)
        return self.contract(dyt.T, cols)

    def relu(self, x, cap: float = math.inf):
        # clip with both bounds is NumPy's fastest form (3x maximum(x, 0), 30x where).
        y = np.clip(x, 0.0, cap)
        passes = x > 0
        if cap != math.inf:
            passes &= x < cap
        return y, passes.astype(x.dtype)

    def batch_norm(self, x, weight, bias, running_mean, running_var, *, training, momentum, eps, relu_cap=None):
        # Channels last, as an (N*H, W*C) matrix: a free view of what the convolutions
        # produce.  Per-channel sums are GEMVs with a ones vector (NumPy's sum over an
        # axis is ten times slower); per-channel vectors are repeated W times, so each
        # broadcast runs over W*C contiguous values rather than C at a time.
        n, c, h, w = x.shape
        count = n * h * w
        rows = x.transpose(0, 2, 3, 1).reshape(n * h, w * c)
        ones = np.ones(n * h, x.dtype)
        channel_sum = lambda a: (ones @ a).reshape(w, c).sum(axis=0)
        wide = lambda v: np.broadcast_to(v, (w, c)).reshape(w * c)
        if training:
            mean = channel_sum(rows) / count
            centered = rows - wide(mean)
            var = channel_sum(centered * centered) / count
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * (count / (count - 1))
        else:
            mean, var = running_mean.copy(), running_var.copy()
            centered = rows - wide(mean)
        inv_std = 1.0 / np.sqrt(var + eps)
        scale = weight * inv_std
        xhat = centered
        xhat *= wide(inv_std)
        y = xhat * wide(weight)
        y += wide(bias)
        if relu_cap is not None:
            np.clip(y, 0.0, relu_cap, out=y)
        as_nchw = lambda a: a.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        return as_nchw(y), NormSaved(as_nchw(xhat), as_nchw(y), inv_std, scale, training, relu_cap)

    def batch_norm_backward(self, dy, saved, *, input_grad=True):
        n, c, h, w = saved.xhat.shape
        count = n * h * w
        rows = lambda a: a.transpose(0, 2, 3, 1).reshape(n * h, w * c)
        g = rows(dy)
        if saved.relu_cap is not None:
            y = rows(saved.y)
            passes = y > 0
            if saved.relu_cap != math.inf:
                passes &= y < saved.relu_cap
            g = g * passes
        xhat = rows(saved.xhat)
        ones = np.ones(n * h, g.dtype)
        channel_sum = lambda a: (ones @ a).reshape(w, c).sum(axis=0)
        wide = lambda v: np.broadcast_to(v, (w, c)).reshape(w * c)
        dbias = channel_sum(g)
        dweight = channel_sum(g * xhat)
        if not input_grad:
            return None, dweight, dbias
        dx = g * wide(saved.scale)
        if saved.training:
            dx -= xhat * wide(saved.scale * dweight / count)
            dx -= wide(saved.scale * dbias / count)
        return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dweight, dbias
