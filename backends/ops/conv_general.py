"""Grouped, dilated, rectangular, asymmetrically padded, depthwise and transposed convolution
(torch.nn.Conv2d / ConvTranspose2d semantics), generic versions.

Geometry is given per axis: ``stride = (sh, sw)``, ``dilation = (dh, dw)``, and for the
forward convolution ``pads = (top, bottom, left, right)``; a transposed convolution takes
torch's ``padding = (ph, pw)`` and ``output_padding = (oph, opw)``.

Two helpers carry every case, in channels-last order: ``unfold`` gathers, for each of the
KH*KW kernel taps, the strided (and dilated) view of the input that tap reads (one slice
per tap: the Python loop runs over taps, never pixels); ``fold`` is its adjoint, adding
each tap's values back into place through the same slices (no scatter-add: every slice
is a regular strided view).  A grouped convolution is then one batched GEMM over the
groups; its input gradient is a GEMM then ``fold``.  A transposed convolution's forward
pass is that input gradient (GEMM + fold), and its backward pass a convolution (unfold +
GEMM).  A depthwise convolution (one input channel per output channel) needs no GEMM:
each tap is one product with a per-channel weight.
"""
from __future__ import annotations

from typing import NamedTuple


class GroupedConvSaved(NamedTuple):
    cols: object            # (G, N*OH*OW, KH*KW*Cg) patches, tap-major columns
    input_shape: tuple      # (N, C, H, W)
    output_hw: tuple
    stride: tuple
    pads: tuple             # (top, bottom, left, right)
    dilation: tuple
    groups: int
    has_bias: bool


class DepthwiseSaved(NamedTuple):
    x: object               # the padded, channel-repeated NHWC input
    input_shape: tuple
    output_hw: tuple
    stride: tuple
    pads: tuple
    dilation: tuple
    has_bias: bool


class TransposedSaved(NamedTuple):
    rows: object            # (G, N*H*W, Cg): the input, channels last, by group
    input_shape: tuple      # (N, C, H, W)
    output_hw: tuple        # (OH, OW)
    stride: tuple
    padding: tuple          # (ph, pw)
    dilation: tuple
    groups: int
    has_bias: bool


def conv_out(size: int, k: int, stride: int, pad_total: int, dilation: int) -> int:
    """Output length of a convolution: floor((size + pads - dilation*(k-1) - 1) / stride) + 1."""
    return (size + pad_total - dilation * (k - 1) - 1) // stride + 1


def transposed_out(size: int, k: int, stride: int, pad: int, output_pad: int, dilation: int) -> int:
    return (size - 1) * stride - 2 * pad + dilation * (k - 1) + output_pad + 1


def tap_slices(kh, kw, stride, dilation, out_hw):
    """(tap index, row slice, column slice) of the padded input that each tap (i, j) reads for
    an ``out_hw`` output grid."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            yield (i * kw + j, slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                   slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


class GeneralConvOps:
    # --- the two helpers ----------------------------------------------------------------------
    def pad_nhwc(self, x, pads, value: float = 0.0):
        """NHWC ``x`` with (top, bottom, left, right) rows and columns of ``value`` around it."""
        top, bottom, left, right = pads
        if not any(pads):
            return x
        xp = self.xp
        n, h, w, c = x.shape
        out = xp.full((n, h + top + bottom, w + left + right, c), value, dtype=x.dtype, device=self.device)
        out[:, top:top + h, left:left + w, :] = x
        return out

    def unfold(self, xt, kh, kw, stride, dilation, out_hw):
        """(N, OH, OW, KH*KW, C): what each tap reads of the padded NHWC ``xt``."""
        xp = self.xp
        return xp.stack([xt[:, rows, cols, :] for _, rows, cols in tap_slices(kh, kw, stride, dilation, out_hw)],
                        axis=3)

    def fold(self, cols, kh, kw, stride, dilation, padded_hw):
        """The adjoint of ``unfold``: (N, OH, OW, KH*KW, C) values added into an (N, PH, PW, C)
        zero array through each tap's slice."""
        xp = self.xp
        n, oh, ow, _, c = cols.shape
        out = xp.zeros((n, padded_hw[0], padded_hw[1], c), dtype=cols.dtype, device=self.device)
        for t, rows, cols_ in tap_slices(kh, kw, stride, dilation, (oh, ow)):
            out[:, rows, cols_, :] += cols[:, :, :, t, :]
        return out

    # --- grouped (and dilated, rectangular, asymmetric) convolution ----------------------------
    def conv2d_grouped(self, x, weight, bias, stride, pads, dilation, groups: int):
        """torch.nn.Conv2d with ``groups`` for NCHW ``x`` and (F, C/groups, KH, KW) ``weight``:
        one batched GEMM over the groups; returns (y, saved)."""
        xp = self.xp
        n, c, h, w = x.shape
        f, cg, kh, kw = weight.shape
        g, fg = groups, f // groups
        oh = conv_out(h, kh, stride[0], pads[0] + pads[1], dilation[0])
        ow = conv_out(w, kw, stride[1], pads[2] + pads[3], dilation[1])
        xt = self.pad_nhwc(xp.permute_dims(x, (0, 2, 3, 1)), pads)
        m, kk = n * oh * ow, kh * kw
        cols = xp.reshape(self.unfold(xt, kh, kw, stride, dilation, (oh, ow)), (m, kk, g, cg))
        cols = xp.reshape(xp.permute_dims(cols, (2, 0, 1, 3)), (g, m, kk * cg))
        y = xp.matmul(cols, self._grouped_weight(weight, g))                       # (G, M, Fg)
        y = xp.reshape(xp.permute_dims(y, (1, 0, 2)), (n, oh, ow, f))
        if bias is not None:
            y = y + bias
        saved = GroupedConvSaved(cols, (n, c, h, w), (oh, ow), tuple(stride), tuple(pads), tuple(dilation), g,
                                 bias is not None)
        return xp.permute_dims(y, (0, 3, 1, 2)), saved

    def _grouped_weight(self, weight, g):
        """(F, Cg, KH, KW) -> (G, KH*KW*Cg, Fg), rows in the patch columns' (tap, channel) order."""
        xp = self.xp
        f, cg, kh, kw = weight.shape
        wg = xp.reshape(weight, (g, f // g, cg, kh, kw))
        return xp.reshape(xp.permute_dims(wg, (0, 3, 4, 2, 1)), (g, kh * kw * cg, f // g))

    def conv2d_grouped_backward(self, dy, saved: GroupedConvSaved, weight, *, input_grad: bool = True,
                                weight_grad: bool = True):
        """(dx, dweight, dbias) for ``conv2d_grouped``; None for what was not asked for (or no bias)."""
        xp = self.xp
        n, c, h, w = saved.input_shape
        oh, ow = saved.output_hw
        f, cg, kh, kw = weight.shape
        g, fg, kk = saved.groups, f // saved.groups, kh * kw
        dyt = xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (n * oh * ow, g, fg))
        db = xp.sum(xp.reshape(dyt, (n * oh * ow, f)), axis=0) if saved.has_bias and weight_grad else None
        dyg = xp.permute_dims(dyt, (1, 0, 2))                                     # (G, M, Fg)
        dw = dx = None
        if weight_grad:
            dwg = xp.matmul(xp.matrix_transpose(dyg), saved.cols)                 # (G, Fg, KK*Cg)
            dw = xp.reshape(xp.permute_dims(xp.reshape(dwg, (g, fg, kh, kw, cg)), (0, 1, 4, 2, 3)), (f, cg, kh, kw))
        if input_grad:
            dcols = xp.matmul(dyg, xp.matrix_transpose(self._grouped_weight(weight, g)))   # (G, M, KK*Cg)
            dcols = xp.permute_dims(xp.reshape(dcols, (g, n, oh, ow, kk, cg)), (1, 2, 3, 4, 0, 5))
            pt, pb, pl, pr = saved.pads
            full = self.fold(xp.reshape(dcols, (n, oh, ow, kk, c)), kh, kw, saved.stride, saved.dilation,
                             (h + pt + pb, w + pl + pr))
            dx = xp.permute_dims(full[:, pt:pt + h, pl:pl + w, :], (0, 3, 1, 2))
        return dx, dw, db

    # --- depthwise: one input channel per output channel ------------------------------------------
    def depthwise_conv2d(self, x, weight, bias, stride, pads, dilation):
        """torch.nn.Conv2d(C, C*m, groups=C): output channel o reads input channel o // m through
        its own (KH, KW) filter, ``weight`` (C*m, 1, KH, KW).  A sum over taps of the strided
        views times per-channel weights (no GEMM); returns (y, saved)."""
        xp = self.xp
        n, c, h, w = x.shape
        f, _, kh, kw = weight.shape
        oh = conv_out(h, kh, stride[0], pads[0] + pads[1], dilation[0])
        ow = conv_out(w, kw, stride[1], pads[2] + pads[3], dilation[1])
        xt = self.pad_nhwc(self._repeat_channels(xp.permute_dims(x, (0, 2, 3, 1)), f // c), pads)
        taps = xp.permute_dims(xp.reshape(weight, (f, kh * kw)), (1, 0))          # (KK, F)
        y = None
        for t, rows, cols in tap_slices(kh, kw, stride, dilation, (oh, ow)):
            term = xt[:, rows, cols, :] * taps[t, :]
            y = term if y is None else y + term
        if bias is not None:
            y = y + bias
        saved = DepthwiseSaved(xt, (n, c, h, w), (oh, ow), tuple(stride), tuple(pads), tuple(dilation),
                               bias is not None)
        return xp.permute_dims(y, (0, 3, 1, 2)), saved

    def _repeat_channels(self, xt, m: int):
        """NHWC channels c -> c*m .. c*m + m-1 (depth multiplier m)."""
        if m == 1:
            return xt
        xp = self.xp
        n, h, w, c = xt.shape
        return xp.reshape(xp.broadcast_to(xp.reshape(xt, (n, h, w, c, 1)), (n, h, w, c, m)), (n, h, w, c * m))

    def depthwise_conv2d_backward(self, dy, saved: DepthwiseSaved, weight, *, input_grad: bool = True,
                                  weight_grad: bool = True):
        xp = self.xp
        n, c, h, w = saved.input_shape
        f, _, kh, kw = weight.shape
        dyt = xp.permute_dims(dy, (0, 2, 3, 1))
        taps = list(tap_slices(kh, kw, saved.stride, saved.dilation, saved.output_hw))
        dw = dx = db = None
        if weight_grad:
            dw = xp.reshape(xp.stack([xp.sum(saved.x[:, rows, cols, :] * dyt, axis=(0, 1, 2))
                                      for _, rows, cols in taps], axis=1), (f, 1, kh, kw))
            db = xp.sum(dyt, axis=(0, 1, 2)) if saved.has_bias else None
        if input_grad:
            wt = xp.permute_dims(xp.reshape(weight, (f, kh * kw)), (1, 0))
            pt, pb, pl, pr = saved.pads
            full = xp.zeros((n, h + pt + pb, w + pl + pr, f), dtype=dy.dtype, device=self.device)
            for t, rows, cols in taps:
                full[:, rows, cols, :] += dyt * wt[t, :]
            full = full[:, pt:pt + h, pl:pl + w, :]
            if f != c:
                full = xp.sum(xp.reshape(full, (n, h, w, c, f // c)), axis=4)
            dx = xp.permute_dims(full, (0, 3, 1, 2))
        return dx, dw, db

    # --- transposed convolution ------------------------------------------------------------------
    def conv_transpose2d(self, x, weight, bias, stride, padding, output_padding, dilation, groups: int):
        """torch.nn.ConvTranspose2d for NCHW ``x`` and (C, F/groups, KH, KW) ``weight``: the
        input gradient of the matching convolution, one batched GEMM then ``fold``, cropped by
        ``padding``; ``output_padding`` extends the bottom and right edges.  Returns (y, saved)."""
        xp = self.xp
        n, c, h, w = x.shape
        _, fg, kh, kw = weight.shape
        g, cg = groups, c // groups
        f = fg * g
        oh = transposed_out(h, kh, stride[0], padding[0], output_padding[0], dilation[0])
        ow = transposed_out(w, kw, stride[1], padding[1], output_padding[1], dilation[1])
        rows = xp.permute_dims(xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (n * h * w, g, cg)), (1, 0, 2))
        cols = xp.matmul(rows, self._transposed_weight(weight, g))                 # (G, M, KK*Fg)
        cols = xp.permute_dims(xp.reshape(cols, (g, n, h, w, kh * kw, fg)), (1, 2, 3, 4, 0, 5))
        full_h = oh + 2 * padding[0]
        full_w = ow + 2 * padding[1]
        full = self.fold(xp.reshape(cols, (n, h, w, kh * kw, f)), kh, kw, stride, dilation, (full_h, full_w))
        y = full[:, padding[0]:padding[0] + oh, padding[1]:padding[1] + ow, :]
        if bias is not None:
            y = y + bias
        saved = TransposedSaved(rows, (n, c, h, w), (oh, ow), tuple(stride), tuple(padding), tuple(dilation), g,
                                bias is not None)
        return xp.permute_dims(y, (0, 3, 1, 2)), saved

    def _transposed_weight(self, weight, g):
        """(C, Fg, KH, KW) -> (G, Cg, KH*KW*Fg), columns in (tap, channel) order."""
        xp = self.xp
        c, fg, kh, kw = weight.shape
        wg = xp.reshape(weight, (g, c // g, fg, kh, kw))
        return xp.reshape(xp.permute_dims(wg, (0, 1, 3, 4, 2)), (g, c // g, kh * kw * fg))

    def conv_transpose2d_backward(self, dy, saved: TransposedSaved, weight, *, input_grad: bool = True,
                                  weight_grad: bool = True):
        """(dx, dweight, dbias): a convolution of dy (unfold + GEMMs)."""
        xp = self.xp
        n, c, h, w = saved.input_shape
        _, fg, kh, kw = weight.shape
        g, cg, kk = saved.groups, c // saved.groups, kh * kw
        f = fg * g
        oh, ow = saved.output_hw
        (ph, pw), (sh, sw), (dh, dw_) = saved.padding, saved.stride, saved.dilation
        # The padded output grid the forward pass folded into, extended to whole taps' reach.
        reach_h, reach_w = (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw_ * (kw - 1) + 1
        dyt = xp.permute_dims(dy, (0, 2, 3, 1))
        full = self.pad_nhwc(dyt, (ph, max(0, reach_h - ph - oh), pw, max(0, reach_w - pw - ow)))
        cols = xp.reshape(self.unfold(full, kh, kw, saved.stride, saved.dilation, (h, w)), (n * h * w, kk, g, fg))
        cols = xp.reshape(xp.permute_dims(cols, (2, 0, 1, 3)), (g, n * h * w, kk * fg))
        dx = dw = db = None
        if weight_grad:
            dwg = xp.matmul(xp.matrix_transpose(saved.rows), cols)                # (G, Cg, KK*Fg)
            dw = xp.reshape(xp.permute_dims(xp.reshape(dwg, (g, cg, kh, kw, fg)), (0, 1, 4, 2, 3)), (c, fg, kh, kw))
            db = xp.sum(dyt, axis=(0, 1, 2)) if saved.has_bias else None
        if input_grad:
            dxg = xp.matmul(cols, xp.matrix_transpose(self._transposed_weight(weight, g)))  # (G, M, Cg)
            dx = xp.permute_dims(xp.reshape(xp.permute_dims(dxg, (1, 0, 2)), (n, h, w, c)), (0, 3, 1, 2))
        return dx, dw, db
