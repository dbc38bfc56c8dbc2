"""2-D convolution (torch.nn.Conv2d semantics).

The work is the backend's ``conv2d`` (im2col + one GEMM; see backends/ops/conv.py).
"""
import numpy as np

from backends import backend_of

from .base import Layer, check_channels, check_rank
from .initializers import initial_bias, initial_weight


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
            self.params["bias"] = backend.from_numpy(initial_bias(self.init, rng, self.filters, c * k * k))
        super().build(input_shape, rng, backend)

    def _checked(self, x):
        check_rank(self, x, 4, "(N, C, H, W) images")
        check_channels(self, x, self.params["weight"].shape[1])
        return self.output_shape(tuple(x.shape[1:]))

    def apply(self, x):
        self._checked(x)
        return backend_of(x).conv2d(x, self.params["weight"], self.params.get("bias"), self.stride, self.padding)

    def apply_pooled(self, x, pool):
        """This convolution and the MaxPool2D ``pool`` after it as one step (``run_order``):
        ``(y, (conv_saved, pool_saved))``, for ``backprop`` of each in turn."""
        pool.output_shape(self._checked(x))
        return backend_of(x).conv2d_max_pool2d(x, self.params["weight"], self.params.get("bias"), self.stride,
                                               self.padding, pool.pool_size, pool.stride)

    def backprop(self, dy, saved):
        dx, dw, db = backend_of(dy).conv2d_backward(dy, saved, self.params["weight"],
                                                    input_grad=self.needs_input_grad,
                                                    weight_grad=self.trainable)
        if self.trainable:
            self.add_grad("weight", dw)
            if self.use_bias:
                self.add_grad("bias", db)
        return dx
