"""Numba CPU kernels behind ``NumbaBackend`` (backends/numba_backend.py).

Each kernel is one parallel loop over the batch (``prange``), compiled on first
use and cached on disk (``cache=True``), without fastmath: the arithmetic is
IEEE float32 as NumPy's, in a stated order.  Reductions (BatchNorm's channel
sums) accumulate in float64 over a fixed number of chunks, so a result does not
depend on the thread count.  Arrays are channels-last (N, H, W, C).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

REDUCTION_CHUNKS = 32     # fixed: the float64 partial sums do not depend on the thread count


# --- convolution ------------------------------------------------------------------------------

@njit(cache=True)
def im2col_rows(x, k, stride, pad, ones, out, r0, r1):
    """Rows r0..r1-1 of the patch matrix of zero-padded ``x`` into out[0 : r1 - r0]:
    row (b, y, x), column (i, j, c) is x[b, y*s + i - p, x*s + j - p, c], plus a last column of ones if ``ones``.

    A patch row's taps (i, 0..k-1) are neighbouring pixels: one run of up to k*c values of ``x``, copied
    with unsigned offsets (no negative-index wrap-around, so the copy vectorises), and (b, y, x) is
    counted on from row to row, not divided out of r (3 integer divisions a row were a third of the
    time: C = 16 at 56x56, 5.3 -> 3.4 ms a batch of 32 on one core)."""
    n, h, w, c = x.shape
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    kc = k * c
    xf = x.reshape(-1)
    b, y, xo = r0 // (oh * ow), (r0 // ow) % oh, r0 % ow
    for r in range(r0, r1):
        row = out[r - r0]
        iw0 = xo * stride - pad
        j0, j1 = max(0, -iw0), min(k, w - iw0)          # the taps inside the image's width
        for i in range(k):
            ih = y * stride + i - pad
            base = i * kc
            if ih < 0 or ih >= h or j0 >= j1:
                for q in range(np.uint64(base), np.uint64(base + kc)):
                    row[q] = 0
                continue
            for q in range(np.uint64(base), np.uint64(base + j0 * c)):
                row[q] = 0
            src, dst = np.uint64(((b * h + ih) * w + iw0 + j0) * c), np.uint64(base + j0 * c)
            for q in range(np.uint64((j1 - j0) * c)):
                row[dst + q] = xf[src + q]
            for q in range(np.uint64(base + j1 * c), np.uint64(base + kc)):
                row[q] = 0
        if ones:
            row[k * kc] = 1
        xo += 1
        if xo == ow:
            xo, y = 0, y + 1
            if y == oh:
                y, b = 0, b + 1


@njit(cache=True)
def im2col_images(x, k, stride, pad, ones, out, b0, b1):
    """Rows of images b0..b1-1 of the patch matrix of zero-padded ``x``, at their own rows of ``out``."""
    rows = ((x.shape[1] + 2 * pad - k) // stride + 1) * ((x.shape[2] + 2 * pad - k) // stride + 1)
    im2col_rows(x, k, stride, pad, ones, out[b0 * rows:b1 * rows], b0 * rows, b1 * rows)


@njit(cache=True)
def col2im_rows(dcols, k, stride, pad, dx, r0, r1):
    """dx[b, y*s + i - p, x*s + j - p, c] += dcols[(b, y, x) - r0, (i, j, c)] inside the unpadded
    input, for the patch rows r0..r1-1 (the adjoint of ``im2col_rows``, in runs as it copies them;
    dx is not zeroed).  Each dx value gets its rows' terms in row order, one term a row."""
    n, h, w, c = dx.shape
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    kc = k * c
    xf = dx.reshape(-1)
    b, y, xo = r0 // (oh * ow), (r0 // ow) % oh, r0 % ow
    for r in range(r0, r1):
        row = dcols[r - r0]
        iw0 = xo * stride - pad
        j0, j1 = max(0, -iw0), min(k, w - iw0)
        for i in range(k):
            ih = y * stride + i - pad
            if ih < 0 or ih >= h or j0 >= j1:
                continue
            src, dst = np.uint64(i * kc + j0 * c), np.uint64(((b * h + ih) * w + iw0 + j0) * c)
            for q in range(np.uint64((j1 - j0) * c)):
                xf[dst + q] += row[src + q]
        xo += 1
        if xo == ow:
            xo, y = 0, y + 1
            if y == oh:
                y, b = 0, b + 1


@njit(cache=True)
def col2im_images(dcols, first_row, k, stride, pad, dx, b0, b1):
    """dx[b] = the sum of its patch rows' gradients (``col2im_rows``) for images b0..b1-1; ``dcols``
    holds their rows, from ``first_row`` on."""
    rows = ((dx.shape[1] + 2 * pad - k) // stride + 1) * ((dx.shape[2] + 2 * pad - k) // stride + 1)
    dx[b0:b1] = 0
    col2im_rows(dcols[b0 * rows - first_row:], k, stride, pad, dx, b0 * rows, b1 * rows)


@njit(parallel=True, cache=True)
def im2col(x, k, stride, pad, ones, out):
    """The whole patch matrix, one image per task."""
    for b in prange(x.shape[0]):
        im2col_images(x, k, stride, pad, ones, out, b, b + 1)


@njit(parallel=True, cache=True)
def col2im(dcols, k, stride, pad, dx):
    """The whole input gradient from the whole column gradient, one image per task."""
    for b in prange(dx.shape[0]):
        col2im_images(dcols, 0, k, stride, pad, dx, b, b + 1)


# --- GEMMs inside the pool: NumPy's OpenBLAS, single-threaded, one call per slice ---------------
# ``sgemm`` is backends.openblas.sgemm(), passed in (a global ctypes function would stop Numba
# caching the kernel).  Arrays are float32 and C-contiguous; a slice is its address plus an
# offset in bytes.  The slices are fixed by the shapes (and a kernel's images per task), never by
# the thread count, so a result does not depend on it.

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
F32 = 4      # bytes


@njit(parallel=True, cache=True)
def gemm(sgemm, a, trans_a, b, trans_b, c, chunks):
    """c = op(a) @ op(b) in ``chunks`` slices of c's rows, or of its columns when it is wider than tall."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    lda, ldb = a.shape[1], b.shape[1]
    op_a, op_b = (TRANS if trans_a else NO_TRANS), (TRANS if trans_b else NO_TRANS)
    for t in prange(chunks):
        if m >= n:
            r0, r1 = m * t // chunks, m * (t + 1) // chunks
            a_at = r0 if trans_a else r0 * lda
            sgemm(ROW_MAJOR, op_a, op_b, r1 - r0, n, k, 1.0, a.ctypes.data + a_at * F32, lda,
                  b.ctypes.data, ldb, 0.0, c.ctypes.data + r0 * n * F32, n)
        else:
            c0, c1 = n * t // chunks, n * (t + 1) // chunks
            b_at = c0 * ldb if trans_b else c0
            sgemm(ROW_MAJOR, op_a, op_b, m, c1 - c0, k, 1.0, a.ctypes.data, lda,
                  b.ctypes.data + b_at * F32, ldb, 0.0, c.ctypes.data + c0 * F32, n)


@njit(cache=True)
def conv_images(sgemm, images, k, stride, pad, ones, wmat, rows, out_address):
    """im2col(images) @ wmat into the (len(images) * rows, F) float32 rows at ``out_address``: the
    patch rows exist only in this call's buffer, in its core's cache, and are multiplied there."""
    width, f = wmat.shape
    m = images.shape[0] * rows
    cols = np.empty((m, width), images.dtype)
    im2col_images(images, k, stride, pad, ones, cols, 0, images.shape[0])
    sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, f, width, 1.0, cols.ctypes.data, width,
          wmat.ctypes.data, f, 0.0, out_address, f)


@njit(parallel=True, cache=True)
def conv_forward(sgemm, x, k, stride, pad, ones, wmat, y, band):
    """y = im2col(x) @ wmat, ``band`` output rows a task: each task builds its patch rows in its own
    buffer and multiplies them there, so the whole patch matrix (tens of MB) is never written to
    memory; the backward pass rebuilds its slices the same way."""
    width, f = wmat.shape
    total = y.shape[0]
    for t in prange((total + band - 1) // band):
        r0 = t * band
        r1 = min(total, r0 + band)
        cols = np.empty((r1 - r0, width), x.dtype)
        im2col_rows(x, k, stride, pad, ones, cols, r0, r1)
        sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, r1 - r0, f, width, 1.0, cols.ctypes.data, width,
              wmat.ctypes.data, f, 0.0, y.ctypes.data + r0 * f * F32, f)


@njit(parallel=True, cache=True)
def conv_max_pool_forward(sgemm, x, k, stride, pad, ones, wmat, conv_hw, pool_k, pool_stride, y, arg, per_task):
    """y, arg = max_pool(im2col(x) @ wmat), ``per_task`` images a task: the convolution's output
    exists only as one task's slice, pooled in its core's cache (``max_pool_images``'s arg-max)."""
    n = x.shape[0]
    oh, ow = conv_hw
    f = wmat.shape[1]
    for t in prange((n + per_task - 1) // per_task):
        b0 = t * per_task
        b1 = min(n, b0 + per_task)
        out = np.empty(((b1 - b0) * oh * ow, f), x.dtype)
        conv_images(sgemm, x[b0:b1], k, stride, pad, ones, wmat, oh * ow, out.ctypes.data)
        max_pool_images(out.reshape(b1 - b0, oh, ow, f), pool_k, pool_stride, y[b0:b1], arg[b0:b1], 0, b1 - b0)


@njit(parallel=True, cache=True)
def conv_backward(sgemm, x, dyt, wmat, k, stride, pad, ones, dx, partial, per_task, band, input_grad, weight_grad):
    """Both gradients of ``conv_forward``, ``per_task`` images a task, in bands of ``band`` patch rows
    (so that a band's patch rows stay in the core's cache), reading each band of ``dyt``
    (N*OH*OW, F) once:

    - dx = col2im(dyt @ wmat), ``wmat`` being (F, KH*KW*C): the column gradient exists only as
      the band's slice;
    - partial[task] = dyt.T @ im2col(x) over the task's rows ((F, KH*KW*C [+ 1]), the bias's
      column last), the bands added into it in order; the caller adds the partials in order,
      so the weight gradient depends on the batch, ``per_task`` and ``band``, never on the
      thread count.
    """
    n = x.shape[0]
    rows = dyt.shape[0] // n
    f, kkc = wmat.shape
    width = kkc + ones
    for t in prange((n + per_task - 1) // per_task):
        b0 = t * per_task
        b1 = min(n, b0 + per_task)
        first, m = b0 * rows, (b1 - b0) * rows
        cols = np.empty((min(band, m), width if weight_grad else 0), x.dtype)
        dcols = np.empty((min(band, m), kkc if input_grad else 0), x.dtype)
        if input_grad:
            dx[b0:b1] = 0
        for r0 in range(0, m, band):
            r1 = min(m, r0 + band)
            dy_at = dyt.ctypes.data + (first + r0) * f * F32
            if weight_grad:
                im2col_rows(x, k, stride, pad, ones, cols, first + r0, first + r1)
                sgemm(ROW_MAJOR, TRANS, NO_TRANS, f, width, r1 - r0, 1.0, dy_at, f, cols.ctypes.data, width,
                      0.0 if r0 == 0 else 1.0, partial[t].ctypes.data, width)
            if input_grad:
                sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, r1 - r0, kkc, f, 1.0, dy_at, f, wmat.ctypes.data, kkc, 0.0,
                      dcols.ctypes.data, kkc)
                col2im_rows(dcols, k, stride, pad, dx, first + r0, first + r1)


@njit(parallel=True, cache=True)
def conv_input_grad(sgemm, dy, flipped, k, pad, dx, band):
    """dx of a stride-1 convolution with padding p as a convolution of dy, ``band`` dx rows a task:
    dx = im2col(dy, padding k - 1 - p) @ flipped, flipped[(i, j, f), c] = w[f, c, k-1-i, k-1-j]
    (dy (N, OH, OW, F); each dx row written once, no column gradient)."""
    n, h, w, c = dx.shape
    width = flipped.shape[0]
    total = n * h * w
    for t in prange((total + band - 1) // band):
        r0 = t * band
        r1 = min(total, r0 + band)
        cols = np.empty((r1 - r0, width), dx.dtype)
        im2col_rows(dy, k, 1, pad, False, cols, r0, r1)
        sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, r1 - r0, c, width, 1.0, cols.ctypes.data, width,
              flipped.ctypes.data, c, 0.0, dx.ctypes.data + r0 * c * F32, c)


@njit(parallel=True, cache=True)
def sum_in_order(partial, out):
    """out = partial[0] + partial[1] + ..., in that order, element by element: each task adds the
    partials into its slice of ``out`` one after another (contiguous, vectorised)."""
    chunks = partial.shape[0]
    flat, parts = out.reshape(-1), partial.reshape(chunks, -1)
    size = flat.size
    slices = (size + 4095) // 4096
    for s in prange(slices):
        i0, i1 = s * 4096, min(size, (s + 1) * 4096)
        flat[i0:i1] = parts[0, i0:i1]
        for t in range(1, chunks):
            for i in range(i0, i1):
                flat[i] += parts[t, i]


# --- max pooling --------------------------------------------------------------------------------

@njit(cache=True)
def max_pool_images(x, k, stride, y, arg, b0, b1):
    """y = max over each k x k window of images b0..b1-1; arg = the window offset (i*k + j) of its
    first maximum in row-major order (a NaN counts as the maximum, as in torch)."""
    _, oh, ow, c = y.shape
    for b in range(b0, b1):
        for yo in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    y[b, yo, xo, ch] = x[b, yo * stride, xo * stride, ch]
                    arg[b, yo, xo, ch] = 0
                for t in range(1, k * k):
                    i, j = t // k, t % k
                    for ch in range(c):
                        v = x[b, yo * stride + i, xo * stride + j, ch]
                        best = y[b, yo, xo, ch]
                        if v > best or (v != v and best == best):
                            y[b, yo, xo, ch] = v
                            arg[b, yo, xo, ch] = t


@njit(parallel=True, cache=True)
def max_pool(x, k, stride, y, arg):
    """``max_pool_images`` over the whole batch, one image per task."""
    for b in prange(y.shape[0]):
        max_pool_images(x, k, stride, y, arg, b, b + 1)


@njit(parallel=True, cache=True)
def max_pool_backward(dy, arg, k, stride, dx):
    """Each window's gradient to its recorded maximum; overlapping windows add up."""
    n, oh, ow, c = dy.shape
    _, h, w, _ = dx.shape
    if stride == k and h == oh * k and w == ow * k:
        # The windows tile the input: one write per pixel, no zeroing pass.
        for b in prange(n):
            for yo in range(oh):
                for xo in range(ow):
                    for t in range(k * k):
                        i, j = t // k, t % k
                        for ch in range(c):
                            dx[b, yo * k + i, xo * k + j, ch] = dy[b, yo, xo, ch] if arg[b, yo, xo, ch] == t else 0
        return
    for b in prange(n):
        dx[b] = 0
        for yo in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    t = arg[b, yo, xo, ch]
                    dx[b, yo * stride + t // k, xo * stride + t % k, ch] += dy[b, yo, xo, ch]


# --- batch normalisation (channels last: rows of C values) -----------------------------------

@njit(parallel=True, cache=True)
def channel_moments(rows):
    """Per-channel mean and (biased) variance of an (M, C) array, in float64.

    Sums of values shifted by the first row (no cancellation when the mean is large
    against the spread), over REDUCTION_CHUNKS fixed chunks."""
    m, c = rows.shape
    shift = rows[0].astype(np.float64)
    part = np.zeros((REDUCTION_CHUNKS, 2, c))
    for chunk in prange(REDUCTION_CHUNKS):
        s1, s2 = np.zeros(c), np.zeros(c)       # the chunk's sums in registers/L1, not in ``part``
        for r in range(chunk * m // REDUCTION_CHUNKS, (chunk + 1) * m // REDUCTION_CHUNKS):
            for ch in range(c):
                d = rows[r, ch] - shift[ch]
                s1[ch] += d
                s2[ch] += d * d
        part[chunk, 0, :] = s1
        part[chunk, 1, :] = s2
    s = part[:, 0, :].sum(axis=0) / m
    var = part[:, 1, :].sum(axis=0) / m - s * s
    return shift + s, np.maximum(var, 0.0)


@njit(parallel=True, cache=True)
def scale_shift(rows, scale, shift, cap, out):
    """out = rows * scale + shift per channel, then min(max(., 0), cap) if cap > 0
    (cap 0 means no ReLU)."""
    m, c = rows.shape
    for r in prange(m):
        for ch in range(c):
            v = rows[r, ch] * scale[ch] + shift[ch]
            if cap > 0:
                v = cap if v >= cap else (v if v > 0 else 0)
            out[r, ch] = v


@njit(inline="always", cache=True)
def relu_masked(g, x, scale, shift, cap):
    """g where the fused ReLU passed its input, else 0; cap 0 means no ReLU.  The ReLU's input
    is recomputed from x with scale_shift's operations (so bitwise the same): reading it back
    costs less than reading the saved output, a third of these passes' traffic."""
    if cap <= 0:
        return g
    v = x * scale + shift
    return g if (v > 0 and v < cap) else g * 0


@njit(parallel=True, cache=True)
def norm_grad_sums(dy, x, mean, inv_std, scale, shift, cap):
    """Per-channel sums of g and g * xhat in float64, g = dy masked by the fused
    ReLU (cap > 0), xhat = (x - mean) * inv_std."""
    m, c = dy.shape
    part = np.zeros((REDUCTION_CHUNKS, 2, c))
    for chunk in prange(REDUCTION_CHUNKS):
        s1, s2 = np.zeros(c), np.zeros(c)
        for r in range(chunk * m // REDUCTION_CHUNKS, (chunk + 1) * m // REDUCTION_CHUNKS):
            for ch in range(c):
                g = relu_masked(dy[r, ch], x[r, ch], scale[ch], shift[ch], cap)
                s1[ch] += g
                s2[ch] += g * ((x[r, ch] - mean[ch]) * inv_std[ch])
        part[chunk, 0, :] = s1
        part[chunk, 1, :] = s2
    return part[:, 0, :].sum(axis=0), part[:, 1, :].sum(axis=0)


@njit(parallel=True, cache=True)
def norm_input_grad(dy, x, mean, inv_std, scale, shift, cap, b, c_, out):
    """out = scale * g - b - c_ * xhat per channel (the training-mode BatchNorm input
    gradient with b = scale * sum(g) / M, c_ = scale * sum(g xhat) / M);
    with b = c_ = 0 it is the eval-mode gradient."""
    m, c = dy.shape
    for r in prange(m):
        for ch in range(c):
            g = relu_masked(dy[r, ch], x[r, ch], scale[ch], shift[ch], cap)
            xhat = (x[r, ch] - mean[ch]) * inv_std[ch]
            out[r, ch] = scale[ch] * g - b[ch] - c_[ch] * xhat
