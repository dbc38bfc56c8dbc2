"""Numba CPU kernels of element-wise passes: ReLU and the other activations, the optimiser
updates over the flat parameter buffer, Concatenate's copy and the sum of a fan-out's gradients
(backends/numba_backend.py, backends/numba_family.py).

As in backends/numba_kernels.py: parallel loops (``prange``), cached on disk, no fastmath; each
value is computed on its own, so a result does not depend on the thread count.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


# --- ReLU (and ReLU6: a cap) ---------------------------------------------------------------------

@njit(parallel=True, cache=True)
def relu(x, cap, y):
    """y = min(max(x, 0), cap) over flat arrays."""
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v != v else (cap if v >= cap else (v if v > 0 else 0))   # NaN stays NaN, as maximum


@njit(parallel=True, cache=True)
def relu_backward(dy, y, cap, dx):
    """dx = dy where 0 < y < cap (y is the ReLU's output), else 0."""
    for i in prange(dy.size):
        v = y[i]
        dx[i] = dy[i] if (v > 0 and v < cap) else 0


# --- merges: rows of channels (N*H*W, C) in C order; a channel slice is its columns from an offset ---
# (a Concatenate's output and its gradient's slices), so every inner loop is contiguous.

@njit(parallel=True, cache=True)
def copy_rows(src, s0, dst, d0, c):
    """dst[:, d0:d0 + c] = src[:, s0:s0 + c].  Each row's values through views of it: indices from
    a range, which Numba need not wrap (as it must a computed index), so the copy is vectorised."""
    for r in prange(dst.shape[0]):
        to, of = dst[r, d0:d0 + c], src[r, s0:s0 + c]
        for ch in range(c):
            to[ch] = of[ch]


@njit(parallel=True, cache=True)
def add_rows(a, a0, b, b0, out):
    """out = a[:, a0:a0 + C] + b[:, b0:b0 + C], out (M, C); as ``copy_rows``, through row views."""
    c = out.shape[1]
    for r in prange(out.shape[0]):
        to, x, y = out[r], a[r, a0:a0 + c], b[r, b0:b0 + c]
        for ch in range(c):
            to[ch] = x[ch] + y[ch]


@njit(parallel=True, cache=True)
def argmax_rows(rows, out):
    """out[r] = the index of row r's first maximum (or first NaN, as np.argmax)."""
    c = rows.shape[1]
    for r in prange(rows.shape[0]):
        row = rows[r]
        best, top = 0, row[0]
        if top == top:
            for ch in range(1, c):
                v = row[ch]
                if v != v:
                    best = ch
                    break
                if v > top:
                    best, top = ch, v
        out[r] = best


# --- element-wise activations (codes as in numba_family.CODES), computed in float64 ---------------

@njit(inline="always", cache=True)
def _sigmoid(v):
    e = math.exp(-abs(v))
    return 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)


@njit(inline="always", cache=True)
def _forward(code, v, a):
    if code == 0:
        return v if v > 0 else v * a
    if code == 1:
        return v if v > 0 else (math.exp(min(v, 0.0)) - 1.0) * a
    if code == 2:
        return _sigmoid(v)
    if code == 3:
        return math.tanh(v)
    if code == 4:
        return v * _sigmoid(v)
    if code == 5:
        return v * 0.5 * (1.0 + math.erf(v * 0.7071067811865476))
    if code == 6:
        return 0.5 * v * (1.0 + math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)))
    if code == 7:
        return min(max(v + 3.0, 0.0), 6.0) / 6.0
    return v * min(max(v + 3.0, 0.0), 6.0) / 6.0


@njit(inline="always", cache=True)
def _slope(code, v, a):
    """dy/dx at x = v (or, for sigmoid and tanh, y = v)."""
    if code == 0:
        return 1.0 if v > 0 else a
    if code == 1:
        return 1.0 if v > 0 else math.exp(min(v, 0.0)) * a
    if code == 2:
        return v * (1.0 - v)
    if code == 3:
        return 1.0 - v * v
    if code == 4:
        s = _sigmoid(v)
        return s * (1.0 + v * (1.0 - s))
    if code == 5:
        return 0.5 * (1.0 + math.erf(v * 0.7071067811865476)) + v * math.exp(-0.5 * v * v) * 0.3989422804014327
    if code == 6:
        t = math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))
        return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * v * v)
    if code == 7:
        return 1.0 / 6.0 if -3.0 < v < 3.0 else 0.0
    if v <= -3.0:
        return 0.0
    return v / 3.0 + 0.5 if v < 3.0 else 1.0


@njit(parallel=True, cache=True)
def activation(x, code, a, y):
    """y = f(x) over flat arrays."""
    for i in prange(x.size):
        y[i] = _forward(code, np.float64(x[i]), a)


@njit(parallel=True, cache=True)
def activation_backward(dy, v, code, a, dx):
    """dx = dy * f'(x) over flat arrays (``v`` is x, or y for sigmoid and tanh)."""
    for i in prange(dy.size):
        dx[i] = dy[i] * _slope(code, np.float64(v[i]), a)


# --- optimisers (flat buffers) -------------------------------------------------------------------

@njit(parallel=True, cache=True)
def adam(param, grad, m, v, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2, bias2_sqrt, eps,
         weight_decay, decoupled_factor):
    """torch.optim.Adam/AdamW, the same operations in the same order as the generic
    version (scalars come in the parameter's dtype): bitwise equal to it."""
    for i in prange(param.size):
        p = param[i] * decoupled_factor
        g = grad[i] + weight_decay * p if weight_decay != 0 else grad[i]
        mi = m[i] * beta1
        mi = mi + one_minus_beta1 * g
        vi = v[i] * beta2
        vi = vi + one_minus_beta2 * (g * g)
        m[i] = mi
        v[i] = vi
        denom = np.sqrt(vi) / bias2_sqrt + eps
        param[i] = p - lr_t * (mi / denom)


@njit(parallel=True, cache=True)
def sgd(param, grad, buf, lr, momentum, nesterov, weight_decay):
    """torch.optim.SGD, in the generic version's order; ``buf`` is unused without momentum."""
    for i in prange(param.size):
        p = param[i]
        g = grad[i] + weight_decay * p if weight_decay != 0 else grad[i]
        if momentum != 0:
            bi = buf[i] * momentum
            bi = bi + g
            buf[i] = bi
            g = g + momentum * bi if nesterov else bi
        param[i] = p - lr * g
