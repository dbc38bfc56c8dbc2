"""2-D convolution as im2col + one GEMM (torch.nn.Conv2d semantics), generic version.

The GEMM runs in channels-last order: the patch matrix is (N*OH*OW, KH*KW*C)
rows and the result (N*OH*OW, F) is handed back as a transposed NCHW view, so
the next layer's NCHW -> NHWC transpose costs nothing.  A bias is a last row of
the weight matrix, against a column of ones in the patches: it is added inside
the GEMM.
"""
from __future__ import annotations

from typing import NamedTuple


class ConvSaved(NamedTuple):
    cols: object            # the (N*OH*OW, KH*KW*C [+ 1]) patch matrix
    input_shape: tuple      # (N, C, H, W)
    output_hw: tuple        # (OH, OW)
    stride: int
    padding: int
    has_bias: bool


def conv_output_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


class ConvOps:
    def conv2d(self, x, weight, bias, stride: int, padding: int):
        """y = conv(x, weight) + bias for NCHW ``x`` and (F, C, K, K) ``weight``; returns (y, saved)."""
        xp = self.xp
        n, c, h, w = x.shape
        f, _, k, _ = weight.shape
        oh, ow = conv_output_size(h, k, stride, padding), conv_output_size(w, k, stride, padding)
        xt = self.pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), padding)
        cols = self.patches(xt, k, k, stride, ones=bias is not None)
        y = self.matmul_rows(cols, self.conv_weight_matrix(weight, bias))
        saved = ConvSaved(cols, (n, c, h, w), (oh, ow), stride, padding, bias is not None)
        return xp.permute_dims(xp.reshape(y, (n, oh, ow, f)), (0, 3, 1, 2)), saved

    def conv2d_max_pool2d(self, x, weight, bias, stride: int, padding: int, pool_k: int, pool_stride: int):
        """max_pool2d(conv2d(x)) as one step: (y, (conv saved, pool saved)).  A backend may fuse the two so
        that the convolution's output never reaches memory; the backward pass is max_pool2d_backward,
        then conv2d_backward, with those saved values."""
        y, conv_saved = self.conv2d(x, weight, bias, stride, padding)
        y, pool_saved = self.max_pool2d(y, pool_k, pool_stride)
        return y, (conv_saved, pool_saved)

    def conv2d_backward(self, dy, saved: ConvSaved, weight, *, input_grad: bool = True, weight_grad: bool = True):
        """(dx, dweight, dbias) for ``conv2d``; None for what was not asked for (or no bias)."""
        xp = self.xp
        n, c, h, w = saved.input_shape
        oh, ow = saved.output_hw
        f, _, k, _ = weight.shape
        dyt = xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (n * oh * ow, f))
        dw = db = dx = None
        if weight_grad:
            dwmat = self.conv_weight_gradient(dyt, saved.cols, n)   # (F, KH*KW*C [+ 1]): the bias's last
            kkc = k * k * c
            dw = xp.permute_dims(xp.reshape(dwmat[:, :kkc], (f, k, k, c)), (0, 3, 1, 2))
            db = dwmat[:, kkc] if saved.has_bias else None
        if input_grad:
            dx = xp.permute_dims(self.col2im_gemm(dyt, weight, saved), (0, 3, 1, 2))
        return dx, dw, db

    # --- the pieces, each overridable ------------------------------------------
    def conv_weight_matrix(self, weight, bias):
        """(F, C, KH, KW) -> (KH*KW*C [+ 1], F), rows in the patch columns' order, the bias last."""
        xp = self.xp
        f, c, kh, kw = weight.shape
        wmat = xp.reshape(xp.permute_dims(weight, (2, 3, 1, 0)), (kh * kw * c, f))
        if bias is not None:
            wmat = xp.concat([wmat, xp.reshape(bias, (1, f))], axis=0)
        return wmat

    def conv_weight_gradient(self, dyt, cols, n: int):
        """dyt.T @ cols: a sum over every output pixel of the batch."""
        return self.contract(self.xp.matrix_transpose(dyt), cols)

    def col2im_gemm(self, dyt, weight, saved: ConvSaved):
        """The NHWC input gradient without the (N*OH*OW, KH*KW*C) column gradient: one
        GEMM per kernel offset gives that offset's (N, OH, OW, C) contribution, added
        straight into the unpadded input gradient.  An offset that covers the whole
        input and output one to one (the centre of a 'same' convolution) starts the
        sum instead of zeros."""
        xp = self.xp
        n, c, h, w = saved.input_shape
        oh, ow = saved.output_hw
        f, _, k, _ = weight.shape
        s, p = saved.stride, saved.padding
        w_taps = xp.reshape(xp.permute_dims(weight, (2, 3, 0, 1)), (k * k, f, c))
        taps = list(clipped_taps(k, s, p, (oh, ow), (h, w)))
        whole = [t for t, rows, cols in taps
                 if (oh, ow) == (h, w) and rows == (slice(0, h), slice(0, h, 1)) and cols == (slice(0, w), slice(0, w, 1))]
        if whole:
            dx = xp.reshape(dyt @ w_taps[whole[0], ...], (n, h, w, c))
        else:
            dx = xp.zeros((n, h, w, c), dtype=dyt.dtype, device=self.device)
        for t, (out_rows, in_rows), (out_cols, in_cols) in taps:
            if whole and t == whole[0]:
                continue
            g = xp.reshape(dyt @ w_taps[t, ...], (n, oh, ow, c))
            dx[:, in_rows, in_cols, :] += g[:, out_rows, out_cols, :]
        return dx


def clipped_range(i: int, s: int, p: int, out_size: int, in_size: int):
    """Output positions o whose input position o*s + i - p falls inside the unpadded
    input, as (output slice, input slice); None when there are none."""
    o0 = max(0, -((i - p) // s))
    o1 = min(out_size, (in_size - 1 + p - i) // s + 1)
    if o1 <= o0:
        return None
    start = o0 * s + i - p
    return slice(o0, o1), slice(start, start + s * (o1 - o0 - 1) + 1, s)


def clipped_taps(k: int, s: int, p: int, out_hw, in_hw):
    """Each kernel offset (i, j) with the output and input slices it connects."""
    for i in range(k):
        rows = clipped_range(i, s, p, out_hw[0], in_hw[0])
        for j in range(k):
            cols = clipped_range(j, s, p, out_hw[1], in_hw[1])
            if rows is not None and cols is not None:
                yield i * k + j, rows, cols
