"""2-D convolution as im2col + one GEMM (torch.nn.Conv2d semantics).

The GEMM runs in channels-last order: patches are (N*OH*OW, KH*KW*C) rows and
the result is (N*OH*OW, filters), which is returned as a transposed NCHW view.
Element-wise layers keep that memory order, so the next convolution's
NCHW -> NHWC transpose costs nothing.
"""
import numpy as np

from backends import backend_of
from ..initializers import initial_weight
from .base import Layer, check_channels, check_rank


def _square(value, what: str, minimum: int) -> int:
    """One int for both spatial axes (only square kernels, strides and pads)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{what} must be one int (square); got {value!r}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}; got {value!r}")
    return int(value)


class Conv2D(Layer):
    """``filters`` maps of ``kernel_size`` x ``kernel_size``, each spanning all input channels.

    ``kernel`` fixes the initial filters, e.g. hand-made edge detectors: shape
    (filters, kh, kw) applies each 2-D filter to every input channel, or
    (filters, in_channels, kh, kw).  ``trainable=False`` freezes them.
    """

    def __init__(self, filters: int, kernel_size=3, stride=1, padding=0, *,
                 use_bias: bool = True, kernel=None, trainable: bool = True, init: str = "he"):
        super().__init__()
        if kernel is not None:
            with np.errstate(over="ignore", invalid="ignore"):   # an overflow is refused just below
                kernel = np.asarray(kernel, dtype=np.float32)
            if not np.isfinite(kernel).all():
                raise ValueError("kernel contains NaN or Inf values (after conversion to float32); "
                                 "give finite filter weights")
            if kernel.ndim not in (3, 4) or kernel.shape[0] != filters:
                raise ValueError(f"kernel must have shape ({filters}, kh, kw) or ({filters}, in, kh, kw); "
                                 f"got {kernel.shape}")
            kernel_size = kernel.shape[-1]
            if kernel.shape[-2] != kernel_size:
                raise ValueError(f"kernel must be square; got {kernel.shape[-2:]}")
        if not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"filters must be a positive int; got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _square(kernel_size, "kernel_size", 1)
        self.stride = _square(stride, "stride", 1)
        if padding == "same":
            if self.stride != 1 or self.kernel_size % 2 == 0:
                raise ValueError("padding='same' needs stride 1 and an odd kernel_size")
            padding = self.kernel_size // 2
        elif padding == "valid":
            padding = 0
        self.padding = _square(padding, "padding", 0)
        self.use_bias = use_bias
        self.fixed_kernel = kernel
        self.trainable = trainable
        self.init = init

    def describe(self) -> str:
        return (f"Conv2D({self.filters}, {self.kernel_size}x{self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}{'' if self.trainable else ', frozen'})")

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects (channels, height, width) inputs; got {input_shape}")
        c, h, w = input_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.describe()}: input {h}x{w} is smaller than the kernel")
        return (self.filters, oh, ow)

    def build(self, input_shape, rng, backend):
        self.output_shape(input_shape)
        c = input_shape[0]
        k = self.kernel_size
        if self.fixed_kernel is not None:
            w = self.fixed_kernel
            if w.ndim == 3:
                w = np.repeat(w[:, None], c, axis=1)
            if w.shape[1] != c:
                raise ValueError(f"kernel has {w.shape[1]} input channels; the input has {c}")
        else:
            w = initial_weight(self.init, rng, (self.filters, c, k, k), c * k * k, self.filters * k * k)
        self.params["weight"] = backend.from_numpy(w)
        if self.use_bias:
            self.params["bias"] = backend.from_numpy(np.zeros(self.filters, np.float32))
        super().build(input_shape, rng, backend)

    def _weight_matrix(self, xp):
        # (F, C, KH, KW) -> (KH*KW*C, F), matching the patch column order, then the
        # bias as one more row: the patch matrix ends with a column of ones.
        w = self.params["weight"]
        f, c, k, _ = w.shape
        wmat = xp.reshape(xp.permute_dims(w, (2, 3, 1, 0)), (k * k * c, f))
        if self.use_bias:
            wmat = xp.concat([wmat, xp.reshape(self.params["bias"], (1, f))], axis=0)
        return wmat

    def forward(self, x):
        check_rank(self, x, 4, "(N, C, H, W) images")
        check_channels(self, x, self.params["weight"].shape[1])
        backend = backend_of(x)
        xp = backend.xp
        n, c, h, w = x.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        _, oh, ow = self.output_shape((c, h, w))
        xt = backend.pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), p)
        cols = backend.patches(xt, k, k, s, ones=self.use_bias)   # (N*OH*OW, KH*KW*C [+ 1])
        y = cols @ self._weight_matrix(xp)
        self._cache = (backend, cols, (n, c, h, w), (oh, ow))
        return xp.permute_dims(xp.reshape(y, (n, oh, ow, self.filters)), (0, 3, 1, 2))

    def backward(self, dy):
        backend, cols, (n, c, h, w), (oh, ow) = self._cache
        xp = backend.xp
        k, s, p = self.kernel_size, self.stride, self.padding
        f = self.filters
        dyt = xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (n * oh * ow, f))
        if self.trainable:
            kkc = k * k * c
            m, width = n * oh * ow, cols.shape[1]
            if m > 32 * f * width:
                # A long reduction into a small matrix (the first layer): one product per
                # sample, then a sum.  BLAS runs a single K=N*OH*OW product 3-4x slower.
                per_sample = xp.matmul(xp.matrix_transpose(xp.reshape(dyt, (n, oh * ow, f))),
                                       xp.reshape(cols, (n, oh * ow, width)))
                dw = xp.sum(per_sample, axis=0)
            else:
                dw = backend.contract(xp.matrix_transpose(dyt), cols)   # (F, KH*KW*C [+ 1]): the bias's last
            self.grads["weight"] = xp.permute_dims(xp.reshape(dw[:, :kkc], (f, k, k, c)), (0, 3, 1, 2))
            if self.use_bias:
                self.grads["bias"] = dw[:, kkc]
        if not self.needs_input_grad:
            return None
        # col2im without the (N*OH*OW, KH*KW*C) column gradient: one GEMM per kernel
        # offset gives that offset's (N, OH, OW, C) contribution, added straight into
        # the unpadded input gradient (long contiguous runs, no crop afterwards).  An
        # offset that covers the whole input (the centre of a 'same' convolution)
        # starts the sum instead of zeros.
        w_taps = xp.reshape(xp.permute_dims(self.params["weight"], (2, 3, 0, 1)), (k * k, f, c))
        taps = list(_clipped_taps(k, s, p, (oh, ow), (h, w)))
        full = [t for t, rows, cols_ in taps if rows == (slice(0, h), slice(0, h, 1))
                and cols_ == (slice(0, w), slice(0, w, 1))]
        if full:
            dx = xp.reshape(dyt @ w_taps[full[0], ...], (n, h, w, c))
        else:
            dx = xp.zeros((n, h, w, c), dtype=dy.dtype, device=backend.device)
        for t, (out_rows, in_rows), (out_cols, in_cols) in taps:
            if full and t == full[0]:
                continue
            g = xp.reshape(dyt @ w_taps[t, ...], (n, oh, ow, c))
            dx[:, in_rows, in_cols, :] += g[:, out_rows, out_cols, :]
        return xp.permute_dims(dx, (0, 3, 1, 2))


def _clipped_range(i: int, s: int, p: int, out_size: int, in_size: int):
    """Output positions o whose input position o*s + i - p falls inside the unpadded
    input, as (output slice, input slice); None when there are none."""
    o0 = max(0, -((i - p) // s))
    o1 = min(out_size, (in_size - 1 + p - i) // s + 1)
    if o1 <= o0:
        return None
    start = o0 * s + i - p
    return slice(o0, o1), slice(start, start + s * (o1 - o0 - 1) + 1, s)


def _clipped_taps(k: int, s: int, p: int, out_hw, in_hw):
    """Each kernel offset (i, j) with the output and input slices it connects."""
    for i in range(k):
        rows = _clipped_range(i, s, p, out_hw[0], in_hw[0])
        for j in range(k):
            cols = _clipped_range(j, s, p, out_hw[1], in_hw[1])
            if rows is not None and cols is not None:
                yield i * k + j, rows, cols
