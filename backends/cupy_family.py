"""CupyBackend's overrides of issue 20's operations: fused kernels (backends/cupy_family_kernels.py)
around cuBLAS GEMMs.  Mixed into CupyBackend; it reaches CuPy only through ``self._cupy``, so the
CPU simulation (tests/cuda_on_cpu.py) runs these methods with NumPy and the kernels compiled by g++.

``FAMILY_LAUNCHES`` says how many launches each makes (scripts/count_launches.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .ops.activation import ACTIVATIONS, FROM_OUTPUT, ActivationSaved
from .ops.conv_general import conv_out, transposed_out
from .ops.resample import UpsampleSaved

CODES = {kind: code for code, kind in enumerate(ACTIVATIONS)}


class CupyDepthwiseSaved(NamedTuple):
    x: object
    output_hw: tuple
    stride: tuple
    pads: tuple
    dilation: tuple
    has_bias: bool


class CupyGroupedSaved(NamedTuple):
    cols: object            # (G, N*OH*OW, Cg*KH*KW)
    input_shape: tuple
    output_hw: tuple
    stride: tuple
    pads: tuple
    dilation: tuple
    groups: int
    has_bias: bool


class CupyTransposedSaved(NamedTuple):
    rows: object            # (G, N*H*W, Cg)
    input_shape: tuple
    output_hw: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    has_bias: bool


class CupyRowNormSaved(NamedTuple):
    x: object
    mean: object
    inv_std: object
    weight: object
    groups: int
    hw: int
    per_element: int


def _grads_launches(a, k, first: int, weight_work: int):
    """``first`` launches, then the weight gradient's (``weight_work`` and the bias's sum) and
    the input gradient's two."""
    has_bias = a[1].has_bias
    return first + k.get("weight_grad", True) * (weight_work + has_bias) + 2 * k.get("input_grad", True)


FAMILY_LAUNCHES = {
    "activation": lambda a, k: 1,
    "activation_backward": lambda a, k: 1,
    "depthwise_conv2d": lambda a, k: 1,
    "depthwise_conv2d_backward": lambda a, k: k.get("weight_grad", True) + k.get("input_grad", True),
    "conv2d_grouped": lambda a, k: 3,                                 # im2col, batched GEMM, to NCHW (+ bias)
    "conv2d_grouped_backward": lambda a, k: _grads_launches(a, k, 1, 1),
    "conv_transpose2d": lambda a, k: 3,                               # by group, batched GEMM, col2im (+ bias)
    "conv_transpose2d_backward": lambda a, k: _grads_launches(a, k, 1, 1),
    "upsample2d": lambda a, k: 1,
    "upsample2d_backward": lambda a, k: 1,
    "pad2d": lambda a, k: int(any(a[1])),
    "global_max_pool2d": lambda a, k: 1,
    "global_max_pool2d_backward": lambda a, k: 1,
    "dropout2d": lambda a, k: 3,                                      # cuRAND, mask, product
    "layer_norm": lambda a, k: 2,
    "layer_norm_backward": lambda a, k: 1 + 2 * k.get("input_grad", True),
    "group_norm": lambda a, k: 2,
    "group_norm_backward": lambda a, k: 1 + 2 * k.get("input_grad", True),
}


class CupyFamily:
    """Mixed into CupyBackend (before Backend)."""

    def _block(self):
        from .cupy_kernels import BLOCK
        return BLOCK

    # --- activations ------------------------------------------------------------------------------
    def activation(self, x, kind: str, alpha: float = 0.0):
        y = self._kernel("activation")(x, CODES[kind], float(alpha))
        return y, ActivationSaved(kind, alpha, y if kind in FROM_OUTPUT else x)

    def activation_backward(self, dy, saved):
        return self._kernel("activation_backward")(dy, saved.value, CODES[saved.kind], float(saved.alpha))

    # --- depthwise convolution ----------------------------------------------------------------------
    def depthwise_conv2d(self, x, weight, bias, stride, pads, dilation):
        cp = self._cupy
        x, weight = cp.ascontiguousarray(x), cp.ascontiguousarray(weight)
        n, c, h, w = x.shape
        f, _, kh, kw = weight.shape
        oh = conv_out(h, kh, stride[0], pads[0] + pads[1], dilation[0])
        ow = conv_out(w, kw, stride[1], pads[2] + pads[3], dilation[1])
        y = cp.empty((n, f, oh, ow), dtype=x.dtype)
        self._kernel("dw_forward")(x, weight, weight if bias is None else bias, int(bias is not None), c, h, w, f,
                                   oh, ow, kh, kw, *stride, *dilation, pads[0], pads[2], y)
        return y, CupyDepthwiseSaved(x, (oh, ow), tuple(stride), tuple(pads), tuple(dilation), bias is not None)

    def depthwise_conv2d_backward(self, dy, saved, weight, *, input_grad: bool = True, weight_grad: bool = True):
        cp = self._cupy
        dy, weight = cp.ascontiguousarray(dy), cp.ascontiguousarray(weight)
        n, c, h, w = saved.x.shape
        f, _, kh, kw = weight.shape
        oh, ow = saved.output_hw
        geometry = (*saved.stride, *saved.dilation, saved.pads[0], saved.pads[2])
        dx = dw = db = None
        if weight_grad:
            dw = cp.empty((f, 1, kh, kw), dtype=dy.dtype)
            bias_grad = cp.empty((f,), dtype=dy.dtype)
            self._raw("dw_weight_grad", dy.dtype)(
                (f,), (self._block(),), (saved.x, dy, *(np.int32(v) for v in (n, c, h, w, f, oh, ow, kh, kw, *geometry)),
                                         dw, bias_grad))
            db = bias_grad if saved.has_bias else None
        if input_grad:
            dx = cp.empty((n, c, h, w), dtype=dy.dtype)
            self._kernel("dw_input_grad")(dy, weight, c, h, w, f, oh, ow, kh, kw, *geometry, dx)
        return dx, dw, db

    # --- grouped and transposed convolution: gathers around batched GEMMs ------------------------------
    def conv2d_grouped(self, x, weight, bias, stride, pads, dilation, groups: int):
        cp = self._cupy
        x, weight = cp.ascontiguousarray(x), cp.ascontiguousarray(weight)
        n, c, h, w = x.shape
        f, cg, kh, kw = weight.shape
        g = groups
        oh = conv_out(h, kh, stride[0], pads[0] + pads[1], dilation[0])
        ow = conv_out(w, kw, stride[1], pads[2] + pads[3], dilation[1])
        m, width = n * oh * ow, cg * kh * kw
        cols = cp.empty((g, m, width), dtype=x.dtype)
        self._kernel("im2col_g")(x, n, c, h, w, g, oh, ow, kh, kw, *stride, *dilation, pads[0], pads[2], cols)
        with self._conv_gemm(x.dtype):
            yg = cp.matmul(cols, cp.reshape(weight, (g, f // g, width)).transpose(0, 2, 1))    # (G, M, Fg)
        y = cp.empty((n, f, oh, ow), dtype=x.dtype)
        self._kernel("from_groups")(yg, yg if bias is None else bias, int(bias is not None), f, oh * ow, g, m, y)
        return y, CupyGroupedSaved(cols, (n, c, h, w), (oh, ow), tuple(stride), tuple(pads), tuple(dilation), g,
                                   bias is not None)

    def conv2d_grouped_backward(self, dy, saved, weight, *, input_grad: bool = True, weight_grad: bool = True):
        cp = self._cupy
        dy, weight = cp.ascontiguousarray(dy), cp.ascontiguousarray(weight)
        n, c, h, w = saved.input_shape
        oh, ow = saved.output_hw
        f, cg, kh, kw = weight.shape
        g, m = saved.groups, n * oh * ow
        dyg = cp.empty((g, m, f // g), dtype=dy.dtype)
        self._kernel("to_groups")(dy, f, oh * ow, g, m, dyg)
        dx = dw = db = None
        with self._conv_gemm(dy.dtype):
            if weight_grad:
                dw = cp.reshape(cp.matmul(dyg.transpose(0, 2, 1), saved.cols), (f, cg, kh, kw))
                db = cp.sum(dy, axis=(0, 2, 3)) if saved.has_bias else None
            if input_grad:
                dcols = cp.matmul(dyg, cp.reshape(weight, (g, f // g, cg * kh * kw)))          # (G, M, Cg*KK)
        if input_grad:
            dx = cp.empty((n, c, h, w), dtype=dy.dtype)
            self._kernel("col2im_g")(dcols, dcols, 0, n, c, h, w, g, oh, ow, kh, kw, *saved.stride, *saved.dilation,
                                     saved.pads[0], saved.pads[2], dx)
        return dx, dw, db

    def conv_transpose2d(self, x, weight, bias, stride, padding, output_padding, dilation, groups: int):
        cp = self._cupy
        x, weight = cp.ascontiguousarray(x), cp.ascontiguousarray(weight)
        n, c, h, w = x.shape
        _, fg, kh, kw = weight.shape
        g, f, m = groups, fg * groups, n * h * w
        oh = transposed_out(h, kh, stride[0], padding[0], output_padding[0], dilation[0])
        ow = transposed_out(w, kw, stride[1], padding[1], output_padding[1], dilation[1])
        rows = cp.empty((g, m, c // g), dtype=x.dtype)
        self._kernel("to_groups")(x, c, h * w, g, m, rows)
        with self._conv_gemm(x.dtype):
            cols = cp.matmul(rows, cp.reshape(weight, (g, c // g, fg * kh * kw)))            # (G, M, Fg*KK)
        y = cp.empty((n, f, oh, ow), dtype=x.dtype)
        self._kernel("col2im_g")(cols, cols if bias is None else bias, int(bias is not None), n, f, oh, ow, g, h, w,
                                 kh, kw, *stride, *dilation, *padding, y)
        return y, CupyTransposedSaved(rows, (n, c, h, w), (oh, ow), tuple(stride), tuple(padding), tuple(dilation),
                                      g, bias is not None)

    def conv_transpose2d_backward(self, dy, saved, weight, *, input_grad: bool = True, weight_grad: bool = True):
        cp = self._cupy
        dy, weight = cp.ascontiguousarray(dy), cp.ascontiguousarray(weight)
        n, c, h, w = saved.input_shape
        oh, ow = saved.output_hw
        _, fg, kh, kw = weight.shape
        g, m = saved.groups, n * h * w
        cols = cp.empty((g, m, fg * kh * kw), dtype=dy.dtype)
        self._kernel("im2col_g")(dy, n, fg * g, oh, ow, g, h, w, kh, kw, *saved.stride, *saved.dilation,
                                 *saved.padding, cols)
        dx = dw = db = None
        wg = cp.reshape(weight, (g, c // g, fg * kh * kw))
        with self._conv_gemm(dy.dtype):
            if weight_grad:
                dw = cp.reshape(cp.matmul(saved.rows.transpose(0, 2, 1), cols), (c, fg, kh, kw))
                db = cp.sum(dy, axis=(0, 2, 3)) if saved.has_bias else None
            if input_grad:
                dxg = cp.matmul(cols, wg.transpose(0, 2, 1))                                   # (G, M, Cg)
        if input_grad:
            dx = cp.empty((n, c, h, w), dtype=dy.dtype)
            self._kernel("from_groups")(dxg, dxg, 0, c, h * w, g, m, dx)
        return dx, dw, db

    # --- resampling, padding, pooling, channel dropout ---------------------------------------------------
    def upsample2d(self, x, size, mode: str = "nearest"):
        cp = self._cupy
        x = cp.ascontiguousarray(x)
        n, c, h, w = x.shape
        y = cp.empty((n, c, h * size[0], w * size[1]), dtype=x.dtype)
        self._kernel("up_nearest" if mode == "nearest" else "up_bilinear")(x, h, w, *size, y)
        return y, UpsampleSaved((n, c, h, w), tuple(size), mode, ())

    def upsample2d_backward(self, dy, saved):
        cp = self._cupy
        n, c, h, w = saved.input_shape
        dx = cp.empty((n, c, h, w), dtype=dy.dtype)
        name = "up_nearest_backward" if saved.mode == "nearest" else "up_bilinear_backward"
        self._kernel(name)(cp.ascontiguousarray(dy), h, w, *saved.size, dx)
        return dx

    def pad2d(self, x, pads, value: float = 0.0):
        if not any(pads):
            return x
        cp = self._cupy
        x = cp.ascontiguousarray(x)
        n, c, h, w = x.shape
        top, bottom, left, right = pads
        y = cp.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
        self._kernel("pad2d")(x, h, w, top, left, h + top + bottom, w + left + right, x.dtype.type(value), y)
        return y

    def global_max_pool2d(self, x):
        cp = self._cupy
        x = cp.ascontiguousarray(x)
        n, c, h, w = x.shape
        y, arg = cp.empty((n, c), dtype=x.dtype), cp.empty((n, c), dtype=cp.int32)
        self._kernel("global_max")(x, h * w, y, arg)
        return y, (arg, (n, c, h, w))

    def global_max_pool2d_backward(self, dy, saved):
        cp = self._cupy
        arg, (n, c, h, w) = saved
        dx = cp.empty((n, c, h, w), dtype=dy.dtype)
        self._kernel("global_max_backward")(cp.ascontiguousarray(dy), arg, h * w, dx)
        return dx

    def dropout2d(self, x, rate: float, generator):
        n, c = x.shape[:2]
        u = generator.random((n, c), x.dtype)
        mask = self._kernel("channel_mask")(u, x.dtype.type(rate), x.dtype.type(1.0 / (1.0 - rate)))
        mask = self._cupy.reshape(mask, (n, c) + (1,) * (x.ndim - 2))
        return x * mask, mask

    # --- LayerNorm and GroupNorm: rows of D values ----------------------------------------------------
    def _row_norm(self, x, weight, bias, groups: int, eps: float, per_element: int):
        cp = self._cupy
        x = cp.ascontiguousarray(x)
        rows = x.shape[0] * groups
        d = x.size // rows
        hw = int(np.prod(x.shape[2:])) if x.ndim > 2 else 1
        mean, inv_std = cp.empty((rows,), dtype=x.dtype), cp.empty((rows,), dtype=x.dtype)
        self._raw("rownorm_stats", x.dtype)((rows,), (self._block(),), (x, np.int32(d), np.float64(eps), mean,
                                                                        inv_std))
        weight, bias = cp.ascontiguousarray(weight), cp.ascontiguousarray(bias)
        y = self._kernel("rownorm_apply")(x, mean, inv_std, weight, bias, d, groups, hw, per_element)
        return y, CupyRowNormSaved(x, mean, inv_std, weight, groups, hw, per_element)

    def _row_norm_backward(self, dy, saved, input_grad: bool):
        cp = self._cupy
        dy = cp.ascontiguousarray(dy)
        x, g = saved.x, saved.groups
        rows = x.shape[0] * g
        d = x.size // rows
        ints = (np.int32(d), np.int32(g), np.int32(saved.hw), np.int32(saved.per_element))
        params = saved.weight.size
        dweight, dbias = cp.empty((params,), dtype=dy.dtype), cp.empty((params,), dtype=dy.dtype)
        self._raw("rownorm_param_grads", dy.dtype)(
            (params,), (self._block(),), (dy, x, saved.mean, saved.inv_std, np.int32(x.shape[0]), ints[1], ints[0],
                                          ints[2], ints[3], dweight, dbias))
        shape = tuple(saved.weight.shape)
        dweight, dbias = cp.reshape(dweight, shape), cp.reshape(dbias, shape)
        if not input_grad:
            return None, dweight, dbias
        sums = cp.empty((2 * rows,), dtype=dy.dtype)
        self._raw("rownorm_row_sums", dy.dtype)((rows,), (self._block(),), (dy, x, saved.mean, saved.inv_std,
                                                                            saved.weight, *ints, sums))
        dx = self._kernel("rownorm_input_grad")(dy, x, saved.mean, saved.inv_std, saved.weight, sums, d, g,
                                                saved.hw, saved.per_element)
        return dx, dweight, dbias

    def layer_norm(self, x, weight, bias, eps: float):
        return self._row_norm(x, weight, bias, 1, eps, 1)

    def layer_norm_backward(self, dy, saved, *, input_grad: bool = True):
        return self._row_norm_backward(dy, saved, input_grad)

    def group_norm(self, x, weight, bias, groups: int, eps: float):
        return self._row_norm(x, weight, bias, groups, eps, 0)

    def group_norm_backward(self, dy, saved, *, input_grad: bool = True):
        return self._row_norm_backward(dy, saved, input_grad)
