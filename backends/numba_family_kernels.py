"""Numba CPU kernels of issue 20's operations (backends/numba_family.py): depthwise convolution,
the transposed convolution whose kernel tiles its output (kernel == stride), dense cross-entropy
and LayerNorm / GroupNorm (the element-wise activations are in backends/numba_elementwise_kernels.py).

As in backends/numba_kernels.py: parallel loops (``prange``), cached on disk, no fastmath,
channels-last (N, H, W, C) arrays, and reductions over a fixed number of chunks in float64,
so a result does not depend on the thread count.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .numba_kernels import F32, NO_TRANS, ROW_MAJOR, TRANS

REDUCTION_CHUNKS = 32


# --- depthwise convolution: output channel o reads input channel o // m -------------------------------

@njit(parallel=True, cache=True)
def depthwise_forward(x, w, bias, has_bias, sh, sw, dh, dw, pt, pl, y):
    """y[b, yo, xo, o] = sum over taps (i, j) inside the input of x[b, yo*sh + i*dh - pt,
    xo*sw + j*dw - pl, o // m] * w[i, j, o] (+ bias[o]); ``w`` is (KH, KW, F), F = C * m.
    One task per output row; the channel loop is innermost (contiguous, vectorised)."""
    n, h, wd, c = x.shape
    _, oh, ow, f = y.shape
    kh, kw = w.shape[0], w.shape[1]
    m = f // c
    for task in prange(n * oh):
        b, yo = task // oh, task % oh
        for xo in range(ow):
            out = y[b, yo, xo]
            out[:] = 0
            for i in range(kh):
                ih = yo * sh + i * dh - pt
                if ih < 0 or ih >= h:
                    continue
                for j in range(kw):
                    iw = xo * sw + j * dw - pl
                    if iw < 0 or iw >= wd:
                        continue
                    if m == 1:
                        for o in range(f):
                            out[o] += x[b, ih, iw, o] * w[i, j, o]
                    else:
                        for ch in range(c):
                            v = x[b, ih, iw, ch]
                            for k in range(m):
                                out[ch * m + k] += v * w[i, j, ch * m + k]
            if has_bias:
                for o in range(f):
                    out[o] += bias[o]


@njit(parallel=True, cache=True)
def depthwise_input_grad(dy, w, sh, sw, dh, dw, pt, pl, dx):
    """dx as a gather: each input pixel sums dy * w over the taps and outputs that read it."""
    n, h, wd, c = dx.shape
    _, oh, ow, f = dy.shape
    kh, kw = w.shape[0], w.shape[1]
    m = f // c
    for task in prange(n * h):
        b, ih = task // h, task % h
        for iw in range(wd):
            acc = dx[b, ih, iw]
            acc[:] = 0
            for i in range(kh):
                t = ih + pt - i * dh
                if t < 0 or t % sh != 0 or t // sh >= oh:
                    continue
                yo = t // sh
                for j in range(kw):
                    u = iw + pl - j * dw
                    if u < 0 or u % sw != 0 or u // sw >= ow:
                        continue
                    xo = u // sw
                    if m == 1:
                        for o in range(f):
                            acc[o] += dy[b, yo, xo, o] * w[i, j, o]
                    else:
                        for ch in range(c):
                            s = acc[ch] * 0
                            for k in range(m):
                                s += dy[b, yo, xo, ch * m + k] * w[i, j, ch * m + k]
                            acc[ch] += s


@njit(parallel=True, cache=True)
def depthwise_weight_grad(x, dy, kh, kw, sh, sw, dh, dw, pt, pl, out):
    """out[i, j, o] = sum of x[.., o // m] * dy[.., o] over the batch and the output pixels; out[kh*kw]
    (a last row) the bias gradient, sum of dy.  Float64 sums over REDUCTION_CHUNKS fixed slices of
    the batch, added in order."""
    n, h, wd, c = x.shape
    _, oh, ow, f = dy.shape
    m = f // c
    chunks = min(REDUCTION_CHUNKS, n)
    part = np.zeros((chunks, kh * kw + 1, f))
    for chunk in prange(chunks):
        acc = np.zeros((kh * kw + 1, f))
        for b in range(chunk * n // chunks, (chunk + 1) * n // chunks):
            for yo in range(oh):
                for xo in range(ow):
                    g = dy[b, yo, xo]
                    for o in range(f):
                        acc[kh * kw, o] += g[o]
                    for i in range(kh):
                        ih = yo * sh + i * dh - pt
                        if ih < 0 or ih >= h:
                            continue
                        for j in range(kw):
                            iw = xo * sw + j * dw - pl
                            if iw < 0 or iw >= wd:
                                continue
                            t = i * kw + j
                            if m == 1:
                                for o in range(f):
                                    acc[t, o] += x[b, ih, iw, o] * g[o]
                            else:
                                for o in range(f):
                                    acc[t, o] += x[b, ih, iw, o // m] * g[o]
        part[chunk] = acc
    for t in range(kh * kw + 1):
        for o in range(f):
            total = part[0, t, o]
            for chunk in range(1, chunks):
                total += part[chunk, t, o]
            out[t, o] = total


# --- transposed convolution with kernel == stride (no padding, dilation or groups) -------------------
# Each input pixel's taps land on their own output pixels, so the convolution is one GEMM,
# (pixels, C) @ (C, KH*KW*F), and a pixel shuffle; its gradients are the shuffle's gather and two
# GEMMs.  ``per_task`` images a task, their products in the task's buffer (in its core's cache).

@njit(parallel=True, cache=True)
def tiled_transpose_forward(sgemm, x, wmat, bias, kh, kw, y, per_task):
    """y[b, h*kh + i, w*kw + j, f] = sum_c x[b, h, w, c] * wmat[c, (i*kw + j)*F + f] + bias[f]; output rows
    and columns past H*kh, W*kw (an output_padding) hold the bias alone.  x: C-contiguous (N, H, W, C)."""
    n, h, w, c = x.shape
    _, oh, ow, f = y.shape
    width = kh * kw * f
    for t in prange((n + per_task - 1) // per_task):
        b0 = t * per_task
        b1 = min(n, b0 + per_task)
        buf = np.empty(((b1 - b0) * h * w, width), np.float32)
        sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, buf.shape[0], width, c, 1.0, x.ctypes.data + b0 * h * w * c * F32, c,
              wmat.ctypes.data, width, 0.0, buf.ctypes.data, width)
        for b in range(b0, b1):
            for yy in range(h):
                for i in range(kh):
                    row = y[b, yy * kh + i]
                    for xx in range(w):
                        r = ((b - b0) * h + yy) * w + xx
                        for j in range(kw):
                            base = (i * kw + j) * f
                            for o in range(f):
                                row[xx * kw + j, o] = buf[r, base + o] + bias[o]
                for xo in range(w * kw, ow):
                    for i in range(kh):
                        y[b, yy * kh + i, xo] = bias
            for yo in range(h * kh, oh):
                for xo in range(ow):
                    y[b, yo, xo] = bias


@njit(parallel=True, cache=True)
def tiled_transpose_backward(sgemm, dy, x, wmat, kh, kw, dx, partial, per_task, input_grad, weight_grad):
    """Gradients of ``tiled_transpose_forward``: each task gathers its pixels' (KH*KW*F) output gradient
    rows g (any strides: dy may be a view), then partial[t, :C] = x_rows.T @ g, partial[t, C] = the
    column sums of g (float64, in row order; the bias's), dx rows = g @ wmat.T.  The caller adds the
    partials in order and the output_padding's edge to the bias gradient."""
    n, h, w, c = x.shape
    f = dy.shape[3]
    width = kh * kw * f
    for t in prange((n + per_task - 1) // per_task):
        b0 = t * per_task
        b1 = min(n, b0 + per_task)
        m = (b1 - b0) * h * w
        g = np.empty((m, width), np.float32)
        for b in range(b0, b1):
            for yy in range(h):
                for xx in range(w):
                    r = ((b - b0) * h + yy) * w + xx
                    for i in range(kh):
                        for j in range(kw):
                            src = dy[b, yy * kh + i, xx * kw + j]
                            base = (i * kw + j) * f
                            for o in range(f):
                                g[r, base + o] = src[o]
        if weight_grad:
            sgemm(ROW_MAJOR, TRANS, NO_TRANS, c, width, m, 1.0, x.ctypes.data + b0 * h * w * c * F32, c,
                  g.ctypes.data, width, 0.0, partial[t].ctypes.data, width)
            sums = np.zeros(width)
            for r in range(m):
                for col in range(width):
                    sums[col] += g[r, col]
            for col in range(width):
                partial[t, c, col] = sums[col]
        if input_grad:
            sgemm(ROW_MAJOR, NO_TRANS, TRANS, m, c, width, 1.0, g.ctypes.data, width, wmat.ctypes.data, width, 0.0,
                  dx.ctypes.data + b0 * h * w * c * F32, c)


# --- cross-entropy over the class axis of dense outputs (labels), a row of K logits per position -----
# Numba's exp is scalar (libm, ~7 ns a value): the exponentials run in NumPy's vectorised np.exp
# between two parallel passes.

@njit(inline="always", cache=True)
def _row_max(logits, p):
    mx = logits[p, 0]
    for c in range(1, logits.shape[1]):
        mx = max(mx, logits[p, c])       # a NaN logit makes its row's loss NaN all the same
    return mx


@njit(parallel=True, cache=True)
def shift_rows(logits, out):
    """out[p] = logits[p] - max(logits[p])."""
    for p in prange(logits.shape[0]):
        mx = _row_max(logits, p)
        for c in range(logits.shape[1]):
            out[p, c] = logits[p, c] - mx


@njit(parallel=True, cache=True)
def dense_cross_entropy(logits, e, labels, weight, has_ignore, ignore, smoothing, scale, part):
    """Per position p with label y (kept unless it is the ignore index), given e = exp(shift_rows(logits)):
    the target t_c = (1 - s) w_y [c == y] + s w_c / K, the loss -sum_c t_c log softmax_c (terms with
    t_c = 0 left out; float64), e[p] replaced by the gradient (softmax * sum_c t_c - t) * scale;
    part[chunk] = the loss summed over fixed chunks of positions, in order."""
    m, k = logits.shape
    chunks = part.shape[0]
    wsum = 0.0
    for c in range(k):
        wsum += weight[c]
    spread = smoothing / k
    for chunk in prange(chunks):
        acc = 0.0
        for p in range(chunk * m // chunks, (chunk + 1) * m // chunks):
            y = labels[p]
            if has_ignore and y == ignore:
                e[p, :] = 0
                continue
            total = 0.0
            for c in range(k):
                total += e[p, c]
            log_total = math.log(total)
            mx = np.float64(_row_max(logits, p))
            wy = (1.0 - smoothing) * weight[y] if 0 <= y < k else 0.0
            if wy != 0:
                acc -= wy * (logits[p, y] - mx - log_total)
            if spread != 0:
                for c in range(k):
                    if weight[c] != 0:
                        acc -= spread * weight[c] * (logits[p, c] - mx - log_total)
            ratio = (wy + spread * wsum) * scale / total
            for c in range(k):
                e[p, c] = e[p, c] * ratio - spread * weight[c] * scale
            if wy != 0:
                e[p, y] -= wy * scale
        part[chunk] = acc


# --- LayerNorm / GroupNorm: rows of D values (a sample, or a group of Cg channels), C order -------------

@njit(parallel=True, cache=True)
def rownorm_forward(x, weight, bias, d, groups, hw, per_element, eps, y, mean, inv_std):
    """Per row: mean and 1/sqrt(var + eps) (two passes, float64), then y = xhat * weight + bias with
    the weight of the element (LayerNorm: ``weight`` holds D values) or of its channel (GroupNorm:
    the row's Cg channels of ``hw`` pixels).  One task per row."""
    cg = d // hw
    for r in prange(x.size // d):
        base = r * d
        s = 0.0
        for j in range(d):
            s += x[base + j]
        mu = s / d
        q = 0.0
        for j in range(d):
            t = x[base + j] - mu
            q += t * t
        inv = 1.0 / math.sqrt(q / d + eps)
        mean[r], inv_std[r] = mu, inv
        if per_element:
            for j in range(d):
                y[base + j] = (x[base + j] - mu) * inv * weight[j] + bias[j]
        else:
            for cl in range(cg):
                k = (r % groups) * cg + cl
                a, b = inv * weight[k], bias[k] - mu * inv * weight[k]
                for p in range(hw):
                    y[base + cl * hw + p] = x[base + cl * hw + p] * a + b


@njit(parallel=True, cache=True)
def rownorm_backward(dy, x, weight, mean, inv_std, d, groups, hw, per_element, input_grad, dx, part):
    """The affine parameters' gradients as float64 partial sums over fixed chunks of rows
    (part[chunk, 0] for the weight, part[chunk, 1] for the bias), and, if ``input_grad``, dx row by
    row: inv_std * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight."""
    rows = x.size // d
    chunks = part.shape[0]
    cg = d // hw
    for chunk in prange(chunks):
        for r in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            base = r * d
            mu, inv = np.float64(mean[r]), np.float64(inv_std[r])
            sg, sgx = 0.0, 0.0
            for cl in range(cg):
                k0 = (r % groups) * cg + cl
                s1, s2 = 0.0, 0.0
                for p in range(hw):
                    j = cl * hw + p
                    k = j if per_element else k0
                    xhat = (x[base + j] - mu) * inv
                    g = np.float64(dy[base + j])
                    if per_element:
                        part[chunk, 0, k] += g * xhat
                        part[chunk, 1, k] += g
                    else:
                        s1 += g * xhat
                        s2 += g
                    gw = g * weight[k]
                    sg += gw
                    sgx += gw * xhat
                if not per_element:
                    part[chunk, 0, k0] += s1
                    part[chunk, 1, k0] += s2
            if input_grad:
                for cl in range(cg):
                    k0 = (r % groups) * cg + cl
                    for p in range(hw):
                        j = cl * hw + p
                        k = j if per_element else k0
                        xhat = (x[base + j] - mu) * inv
                        dx[base + j] = inv * (dy[base + j] * weight[k] - sg / d - xhat * sgx / d)
