"""NumbaBackend's overrides of issue 20's operations (kernels in backends/numba_family_kernels.py):
depthwise convolution (a direct loop: im2col + GEMM would waste the GEMM, each output channel
seeing one input channel), 1x1 convolutions (one GEMM, no im2col copy), transposed convolutions
whose kernel is their stride (U-Net's 2x2 stride 2: a GEMM and a pixel shuffle), the element-wise
activations (one pass instead of several) and LayerNorm / GroupNorm (a task per row, its values
in cache for both passes).

Each is tested against the generic method it overrides (tests/test_backend_methods.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import numba_elementwise_kernels as elementwise
from . import numba_family_kernels as kernels
from .numba_kernels import sum_in_order
from .ops.activation import ACTIVATIONS, FROM_OUTPUT, ActivationSaved
from .ops.conv_general import conv_out

CODES = {kind: code for code, kind in enumerate(ACTIVATIONS)}


class _DepthwiseSaved(NamedTuple):
    x: np.ndarray           # the channels-last input
    output_hw: tuple
    stride: tuple
    pads: tuple
    dilation: tuple
    has_bias: bool


class _RowNormSaved(NamedTuple):
    x: np.ndarray           # the input, C order
    mean: np.ndarray        # (rows,)
    inv_std: np.ndarray
    weight: np.ndarray
    groups: int
    hw: int
    per_element: int


class _TiledTransposeSaved(NamedTuple):
    x: np.ndarray           # the C-contiguous (N, H, W, C) input
    output_hw: tuple
    has_bias: bool


class PointwiseSaved(NamedTuple):
    rows: np.ndarray        # the (N*H*W, C) channels-last input
    input_shape: tuple
    has_bias: bool


def channels_last(x) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def flat_view(x):
    """(C-contiguous array holding x's values, function mapping such an array back to x's shape):
    no copy when x's memory is C order or, for 4-D x, channels-last."""
    if x.flags.c_contiguous:
        return x, lambda a: a
    if x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous:
        return x.transpose(0, 2, 3, 1), lambda a: a.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), lambda a: a


def same_layout(a, like):
    """``a``'s values laid out as ``like`` (from flat_view) is: C order or channels-last."""
    if like.ndim == 4 and not like.flags.c_contiguous and like.transpose(0, 2, 3, 1).flags.c_contiguous:
        return channels_last(a)
    return np.ascontiguousarray(a)


def _channel_rows(x):
    """(C-contiguous (N*H*W, C') rows, c0) whose columns c0.. hold x's channels, for a non-empty 4-D
    float ``x`` whose memory is channels-last or a channel slice of channels-last memory (a
    Concatenate's gradient: a view of its owner, ``x.base``); else None."""
    if not (isinstance(x, np.ndarray) and x.ndim == 4 and x.size and x.dtype in (np.float32, np.float64)):
        return None
    n, c, h, w = x.shape
    nhwc = x.transpose(0, 2, 3, 1)
    if nhwc.flags.c_contiguous:
        return nhwc.reshape(n * h * w, c), 0
    base, item = x.base, x.itemsize
    if not (isinstance(base, np.ndarray) and base.flags.c_contiguous and base.dtype == x.dtype
            and base.size % (n * h * w) == 0):
        return None
    width = base.size // (n * h * w)
    c0, rest = divmod(x.ctypes.data - base.ctypes.data, item)
    if rest or not 0 <= c0 <= width - c or x.strides != (h * w * width * item, item, w * width * item, width * item):
        return None
    return base.reshape(n * h * w, width), c0


def _tiled_weight(weight):
    """(C, F, KH, KW) -> (C, KH*KW*F), contiguous: a transposed convolution's product's columns."""
    c, f, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(c, kh * kw * f)


def _taps(weight):
    """(F, 1, KH, KW) -> (KH, KW, F), contiguous."""
    f, _, kh, kw = weight.shape
    return np.ascontiguousarray(weight.reshape(f, kh * kw).T).reshape(kh, kw, f)


class NumbaFamily:
    """Mixed into NumbaBackend, before NumpyBackend."""

    def depthwise_conv2d(self, x, weight, bias, stride, pads, dilation):
        n, c, h, w = x.shape
        f, _, kh, kw = weight.shape
        oh = conv_out(h, kh, stride[0], pads[0] + pads[1], dilation[0])
        ow = conv_out(w, kw, stride[1], pads[2] + pads[3], dilation[1])
        xc = channels_last(x)
        y = np.empty((n, oh, ow, f), x.dtype)
        b = np.zeros(f, x.dtype) if bias is None else np.ascontiguousarray(bias, x.dtype)
        kernels.depthwise_forward(xc, _taps(weight).astype(x.dtype, copy=False), b, bias is not None, *stride,
                                  *dilation, pads[0], pads[2], y)
        saved = _DepthwiseSaved(xc, (oh, ow), tuple(stride), tuple(pads), tuple(dilation), bias is not None)
        return y.transpose(0, 3, 1, 2), saved

    def depthwise_conv2d_backward(self, dy, saved, weight, *, input_grad=True, weight_grad=True):
        if not isinstance(saved, _DepthwiseSaved):
            return super().depthwise_conv2d_backward(dy, saved, weight, input_grad=input_grad, weight_grad=weight_grad)
        x = saved.x
        f, _, kh, kw = weight.shape
        dyc = channels_last(dy)
        pt, pl = saved.pads[0], saved.pads[2]
        dx = dw = db = None
        if weight_grad:
            out = np.empty((kh * kw + 1, f), dy.dtype)
            kernels.depthwise_weight_grad(x, dyc, kh, kw, *saved.stride, *saved.dilation, pt, pl, out)
            dw = out[:kh * kw].T.reshape(f, 1, kh, kw)
            db = out[kh * kw] if saved.has_bias else None
        if input_grad:
            dxc = np.empty(x.shape, dy.dtype)
            kernels.depthwise_input_grad(dyc, _taps(weight).astype(dy.dtype, copy=False), *saved.stride,
                                         *saved.dilation, pt, pl, dxc)
            dx = dxc.transpose(0, 3, 1, 2)
        return dx, dw, db

    # --- 1x1 convolutions (stride 1, no padding): the channels-last input is the patch matrix ---------
    def pointwise_conv2d(self, x, weight, bias):
        """conv2d for a 1x1 kernel: one GEMM of the input's rows, no im2col copy (MobileNet's
        expansions and projections)."""
        n, c, h, w = x.shape
        f = weight.shape[0]
        rows = channels_last(x).reshape(n * h * w, c)
        y = self.matmul_rows(rows, weight.reshape(f, c).T)
        if bias is not None:
            y += bias
        return y.reshape(n, h, w, f).transpose(0, 3, 1, 2), PointwiseSaved(rows, (n, c, h, w), bias is not None)

    def pointwise_conv2d_backward(self, dy, saved, weight, *, input_grad=True, weight_grad=True):
        n, c, h, w = saved.input_shape
        f = weight.shape[0]
        dyt = channels_last(dy).reshape(n * h * w, f)
        dx = dw = db = None
        if weight_grad:
            dw = self.contract(dyt.T, saved.rows).reshape(f, c, 1, 1)
            db = self.contract(np.ones((1, n * h * w), dyt.dtype), dyt)[0] if saved.has_bias else None
        if input_grad:
            dx = self.matmul_rows(dyt, np.ascontiguousarray(weight.reshape(f, c))).reshape(n, h, w, c)
            dx = dx.transpose(0, 3, 1, 2)
        return dx, dw, db

    # --- transposed convolutions whose kernel tiles the output (kernel == stride) -------------------
    def conv_transpose2d(self, x, weight, bias, stride, padding, output_padding, dilation, groups: int):
        c, f, kh, kw = weight.shape
        if (groups != 1 or tuple(stride) != (kh, kw) or any(padding) or tuple(dilation) != (1, 1)
                or not self._pooled(x, weight)):
            return super().conv_transpose2d(x, weight, bias, stride, padding, output_padding, dilation, groups)
        n, _, h, w = x.shape
        oh, ow = h * kh + output_padding[0], w * kw + output_padding[1]
        xc = channels_last(x)
        y = np.empty((n, oh, ow, f), x.dtype)
        b = np.zeros(f, x.dtype) if bias is None else np.ascontiguousarray(bias)
        self._in_pool(kernels.tiled_transpose_forward, xc, _tiled_weight(weight), b, kh, kw, y,
                      self._images_per_task(h * w))
        return y.transpose(0, 3, 1, 2), _TiledTransposeSaved(xc, (oh, ow), bias is not None)

    def conv_transpose2d_backward(self, dy, saved, weight, *, input_grad=True, weight_grad=True):
        if not isinstance(saved, _TiledTransposeSaved):
            return super().conv_transpose2d_backward(dy, saved, weight, input_grad=input_grad,
                                                     weight_grad=weight_grad)
        x = saved.x
        n, h, w, c = x.shape
        _, f, kh, kw = weight.shape
        per_task = self._images_per_task(h * w)
        dyc = dy.transpose(0, 2, 3, 1)
        if not (dyc.dtype == x.dtype and dyc.strides[3] == dyc.itemsize):
            dyc = np.ascontiguousarray(dyc, x.dtype)
        dx = np.empty(x.shape if input_grad else (0, 1, 1, 1), x.dtype)
        partial = np.empty(((n + per_task - 1) // per_task if weight_grad else 0, c + 1, kh * kw * f), x.dtype)
        self._in_pool(kernels.tiled_transpose_backward, dyc, x, _tiled_weight(weight), kh, kw, dx, partial,
                      per_task, input_grad, weight_grad)
        dw = db = None
        if weight_grad:
            total = np.empty(partial.shape[1:], x.dtype)
            sum_in_order(partial, total)
            dw = total[:c].reshape(c, kh, kw, f).transpose(0, 3, 1, 2)
            db = total[c].reshape(kh * kw, f).sum(axis=0) if saved.has_bias else None
            if saved.has_bias and saved.output_hw != (h * kh, w * kw):        # the output_padding's edge saw the bias alone
                db += dyc[:, h * kh:].sum(axis=(0, 1, 2)) + dyc[:, :h * kh, w * kw:].sum(axis=(0, 1, 2))
        return (dx.transpose(0, 3, 1, 2) if input_grad else None), dw, db

    # --- per-position cross-entropy (dense outputs, integer labels) -------------------------------
    def cross_entropy_nd(self, logits, targets, weight=None, ignore_index=None, label_smoothing: float = 0.0):
        """Two parallel passes over the logits, class axis last in memory (a U-Net's 1x1 convolution
        gives them so), NumPy's exp between them; sums per position in float64 (dense_cross_entropy)."""
        k = logits.shape[1]
        if (targets.ndim != logits.ndim - 1 or logits.dtype not in (np.float32, np.float64)
                or not np.issubdtype(targets.dtype, np.integer)):
            return super().cross_entropy_nd(logits, targets, weight, ignore_index, label_smoothing)
        rows = np.ascontiguousarray(np.moveaxis(logits, 1, -1))
        labels = np.ascontiguousarray(targets).reshape(-1)
        w = np.ones(k) if weight is None else np.asarray(weight, np.float64)
        if weight is None and ignore_index is None:
            count = labels.size
        else:       # the kept positions' label weights, as the generic version counts them
            kept = (labels >= 0) & (labels < k)
            if ignore_index is not None:
                kept &= labels != ignore_index
            count = float(w[labels[kept]].sum()) if weight is not None else int(kept.sum())
        scale = 1.0 / count if count > 0 else 0.0
        grad = np.empty_like(rows)
        part = np.empty(min(kernels.REDUCTION_CHUNKS, max(1, labels.size)))
        kernels.shift_rows(rows.reshape(-1, k), grad.reshape(-1, k))
        np.exp(grad, out=grad)
        kernels.dense_cross_entropy(rows.reshape(-1, k), grad.reshape(-1, k), labels, w, ignore_index is not None,
                                    0 if ignore_index is None else int(ignore_index), float(label_smoothing), scale,
                                    part)
        loss = np.asarray(part.sum() * scale, logits.dtype)      # numpy adds the chunks in order
        return loss, np.moveaxis(grad, -1, 1)

    # --- merges: one parallel pass into channels-last memory (NumPy's concatenate and + take one core) ---
    def concat(self, xs, axis: int):
        """Channels (axis 1) of 4-D arrays joined into channels-last memory, one parallel copy per
        input (a U-Net's Concatenate of a skip and the transposed convolution's output)."""
        xs = list(xs)
        rows = [_channel_rows(x) for x in xs]
        if axis != 1 or None in rows or len({(x.shape[0],) + x.shape[2:] + (x.dtype,) for x in xs}) != 1:
            return super().concat(xs, axis)
        n, _, h, w = xs[0].shape
        out = np.empty((n * h * w, sum(x.shape[1] for x in xs)), xs[0].dtype)
        start = 0
        for x, (src, s0) in zip(xs, rows):
            elementwise.copy_rows(src, s0, out, start, x.shape[1])
            start += x.shape[1]
        return out.reshape(n, h, w, start).transpose(0, 3, 1, 2)

    def class_argmax(self, outputs):
        """The arg-max over the channels of channels-last memory, rows in parallel (np.argmax over a
        strided axis 1 is one slow pass on one core: about 3 ms a U-Net batch)."""
        rows = _channel_rows(outputs)
        if rows is None or rows[1] != 0 or rows[0].shape[1] != outputs.shape[1]:
            return super().class_argmax(outputs)
        n, _, h, w = outputs.shape
        out = np.empty(n * h * w, np.int64)
        elementwise.argmax_rows(rows[0], out)
        return out.reshape(n, h, w)

    def add(self, a, b):
        """a + b into channels-last memory, in parallel (a skip's two gradients, one of them a
        Concatenate's slice)."""
        ra, rb = _channel_rows(a), _channel_rows(b)
        if ra is None or rb is None or a.shape != b.shape or a.dtype != b.dtype:
            return super().add(a, b)
        n, c, h, w = a.shape
        out = np.empty((n * h * w, c), a.dtype)
        elementwise.add_rows(*ra, *rb, out)
        return out.reshape(n, h, w, c).transpose(0, 3, 1, 2)

    def activation(self, x, kind: str, alpha: float = 0.0):
        flat, back = flat_view(x)
        y = np.empty_like(flat)
        elementwise.activation(flat.reshape(-1), CODES[kind], float(alpha), y.reshape(-1))
        y = back(y)
        return y, ActivationSaved(kind, alpha, y if kind in FROM_OUTPUT else x)

    def activation_backward(self, dy, saved):
        v, back = flat_view(saved.value)
        g = same_layout(dy, saved.value)
        dx = np.empty_like(v)
        elementwise.activation_backward(g.reshape(-1), v.reshape(-1), CODES[saved.kind], float(saved.alpha),
                                        dx.reshape(-1))
        return back(dx)

    # --- LayerNorm and GroupNorm: one task per row of D values --------------------------------------
    def _row_norm(self, x, weight, bias, groups, eps, per_element):
        x = np.ascontiguousarray(x)
        rows = x.shape[0] * groups
        hw = int(np.prod(x.shape[2:])) if x.ndim > 2 else 1
        y = np.empty_like(x)
        mean, inv_std = np.empty(rows, x.dtype), np.empty(rows, x.dtype)
        weight = np.ascontiguousarray(weight).reshape(-1)
        kernels.rownorm_forward(x.reshape(-1), weight, np.ascontiguousarray(bias).reshape(-1), x.size // rows, groups,
                                hw, per_element, float(eps), y.reshape(-1), mean, inv_std)
        return y, _RowNormSaved(x, mean, inv_std, weight, groups, hw, per_element)

    def _row_norm_backward(self, dy, saved, input_grad, shape):
        x = saved.x
        rows = x.shape[0] * saved.groups
        dyc = np.ascontiguousarray(dy)
        dx = np.empty_like(x) if input_grad else x[:0]
        part = np.zeros((min(kernels.REDUCTION_CHUNKS, rows), 2, saved.weight.size))
        kernels.rownorm_backward(dyc.reshape(-1), x.reshape(-1), saved.weight, saved.mean, saved.inv_std,
                                 x.size // rows, saved.groups, saved.hw, saved.per_element, input_grad,
                                 dx.reshape(-1), part)
        sums = part.sum(axis=0).astype(dy.dtype)     # numpy adds the chunks in order along the axis
        return (dx if input_grad else None), sums[0].reshape(shape), sums[1].reshape(shape)

    def layer_norm(self, x, weight, bias, eps):
        return self._row_norm(x, weight, bias, 1, eps, 1)

    def layer_norm_backward(self, dy, saved, *, input_grad=True):
        if not isinstance(saved, _RowNormSaved):
            return super().layer_norm_backward(dy, saved, input_grad=input_grad)
        return self._row_norm_backward(dy, saved, input_grad, saved.x.shape[1:])

    def group_norm(self, x, weight, bias, groups, eps):
        return self._row_norm(x, weight, bias, groups, eps, 0)

    def group_norm_backward(self, dy, saved, *, input_grad=True):
        if not isinstance(saved, _RowNormSaved):
            return super().group_norm_backward(dy, saved, input_grad=input_grad)
        return self._row_norm_backward(dy, saved, input_grad, (saved.x.shape[1],))

    def warm_up_family(self, dtype=np.float32) -> None:
        """Compile these kernels for ``dtype`` (NumbaBackend.warm_up calls it)."""
        x = np.ones((2, 3, 4, 4), dtype)
        w = np.ones((6, 1, 3, 3), dtype)
        y, saved = self.depthwise_conv2d(x, w, np.ones(6, dtype), (1, 1), (1, 1, 1, 1), (1, 1))
        self.depthwise_conv2d_backward(y, saved, w)
        w = np.ones((3, 1, 3, 3), dtype)
        y, saved = self.depthwise_conv2d(x, w, None, (2, 2), (1, 1, 1, 1), (1, 1))
        self.depthwise_conv2d_backward(y, saved, w)
        for bias in (np.ones(4, dtype), None):       # contiguous, then a strided gradient (a Concatenate's slice)
            w = np.ones((3, 4, 2, 2), dtype)
            y, saved = self.conv_transpose2d(x, w, bias, (2, 2), (0, 0), (0, 0), (1, 1), 1)
            dy = y if bias is not None else np.concatenate([y, y], axis=1)[:, 4:]
            self.conv_transpose2d_backward(dy, saved, w)
        self.cross_entropy_nd(x, np.zeros((2, 4, 4), np.int64))
        skip = np.ones((2, 8, 8, 3), dtype).transpose(0, 3, 1, 2)      # a U-Net's skip and upsampled maps
        both = self.concat([skip, y], axis=1)
        self.add(both[:, :3], skip)
        y, saved = self.activation(x, "silu")
        self.activation_backward(y, saved)
        r = np.ones(3, dtype)
        y, saved = self.group_norm(x, r, r, 3, 1e-5)
        self.group_norm_backward(y, saved)
        self.group_norm_backward(y, saved, input_grad=False)
