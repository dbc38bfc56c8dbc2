"""2-D convolution (torch.nn.Conv2d semantics): Conv2D, with groups, dilation, rectangular
kernels and strides, and "same" / "valid" / int / (ph, pw) padding; DepthwiseConv2D.

The work is the backend's: ``conv2d`` (im2col + one GEMM; backends/ops/conv.py) for the
common square, undilated, ungrouped case; ``depthwise_conv2d`` when each output channel
reads one input channel (groups = input channels: no GEMM); ``conv2d_grouped`` otherwise
(backends/ops/conv_general.py).
"""
import numpy as np

from backends import backend_of

from .base import Layer, check_channels, check_rank
from .initializers import initial_bias, initial_weight


def pair(value, what: str, layer: str, minimum: int) -> tuple:
    """An int or a pair of ints, each >= ``minimum``, as (height, width)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                              for v in items):
        raise ValueError(f"{layer}: {what} must be an int >= {minimum} or a pair (height, width) of them; "
                         f"got {value!r}")
    return int(items[0]), int(items[1])


def positive_int(value, what: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer}: {what} must be a positive int; got {value!r}")
    return int(value)


def conv_pads(padding, kernel, stride, dilation, layer: str) -> tuple:
    """(top, bottom, left, right) for ``padding``: "valid" (none), "same" (stride 1, as torch:
    the output has the input's size; an even reach pads one more at the bottom and right),
    an int or (ph, pw)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"{layer}: padding='same' needs stride 1 (as in torch); give the padding as a number "
                             f"for a strided convolution, e.g. padding={(kernel[0] - 1) * dilation[0] // 2}")
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    if isinstance(padding, str):
        raise ValueError(f"{layer}: padding must be 'same', 'valid', an int or a pair (ph, pw); got {padding!r}")
    ph, pw = pair(padding, "padding", layer, 0)
    return (ph, ph, pw, pw)


def conv_out(size: int, k: int, stride: int, pad_total: int, dilation: int) -> int:
    return (size + pad_total - dilation * (k - 1) - 1) // stride + 1


def _short(pair_):
    return pair_[0] if pair_[0] == pair_[1] else pair_


class Conv2D(Layer):
    """``filters`` maps of ``kernel_size`` (an int or (kh, kw)) filters: torch.nn.Conv2d(C, filters,
    kernel_size, stride, padding, dilation, groups, bias=use_bias), same weight layout
    (filters, C / groups, kh, kw).

    ``kernel`` fixes the initial filters, e.g. hand-made edge detectors: shape
    (filters, kh, kw) applies each 2-D filter to every input channel, or
    (filters, in_channels / groups, kh, kw).  ``trainable=False`` freezes them.
    """

    def __init__(self, filters: int, kernel_size=3, stride=1, padding=0, dilation=1, groups: int = 1, *,
                 use_bias: bool = True, kernel=None, trainable: bool = True, init: str = "he"):
        super().__init__()
        name = type(self).__name__
        if kernel is not None:
            with np.errstate(over="ignore", invalid="ignore"):   # an overflow is refused just below
                kernel = np.asarray(kernel, dtype=np.float32)
            if not np.isfinite(kernel).all():
                raise ValueError("kernel contains NaN or Inf values (after conversion to float32); "
                                 "give finite filter weights")
            if kernel.ndim not in (3, 4) or kernel.shape[0] != filters:
                raise ValueError(f"kernel must have shape ({filters}, kh, kw) or ({filters}, in, kh, kw); "
                                 f"got {kernel.shape}")
            kernel_size = tuple(kernel.shape[-2:])
        self.filters = positive_int(filters, "filters", name)
        self.kernel_size = pair(kernel_size, "kernel_size", name, 1)
        self.stride = pair(stride, "stride", name, 1)
        self.dilation = pair(dilation, "dilation", name, 1)
        self.groups = positive_int(groups, "groups", name)
        if self.filters % self.groups:
            raise ValueError(f"{name}: groups={self.groups} must divide filters={self.filters}")
        self.pads = conv_pads(padding, self.kernel_size, self.stride, self.dilation, name)
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", name, 0)
        self.use_bias = bool(use_bias)
        self.fixed_kernel = kernel
        self.trainable = trainable
        self.init = init

    def init_args(self) -> dict:
        """The constructor's arguments for the JSON spec; ``dilation`` and ``groups`` only when they are
        not 1, so that a plain convolution's spec stays readable by dcnn versions that predate them."""
        args = super().init_args()
        for name in ("dilation", "groups"):
            if name in args and args[name] in (1, (1, 1), [1, 1]):
                del args[name]
        return args

    # --- geometry --------------------------------------------------------------------------
    def _filters(self, channels: int) -> int:
        return self.filters

    def _groups(self, channels: int) -> int:
        return self.groups

    def _path(self, channels: int) -> str:
        """Which backend method computes this convolution for ``channels`` input channels."""
        groups = self._groups(channels)
        if groups > 1 and groups == channels:
            return "depthwise"
        if (groups == 1 and self.dilation == (1, 1) and self.kernel_size[0] == self.kernel_size[1]
                and self.stride[0] == self.stride[1] and len(set(self.pads)) == 1):
            return "plain"
        return "general"

    def describe(self) -> str:
        kh, kw = self.kernel_size
        pads = self.pads[0] if len(set(self.pads)) == 1 else self.pads
        extra = "".join([f", dilation={_short(self.dilation)}" if self.dilation != (1, 1) else "",
                         f", groups={self.groups}" if self.groups != 1 else "",
                         "" if self.trainable else ", frozen"])
        return f"Conv2D({self.filters}, {kh}x{kw}, stride={_short(self.stride)}, padding={pads}{extra})"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects (channels, height, width) inputs; got {input_shape}")
        c, h, w = input_shape
        groups = self._groups(c)
        if c % groups:
            raise ValueError(f"{self.describe()}: groups={groups} must divide the {c} input channels")
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        pt, pb, pl, pr = self.pads
        oh, ow = conv_out(h, kh, sh, pt + pb, dh), conv_out(w, kw, sw, pl + pr, dw)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.describe()}: input {h}x{w} (padded {h + pt + pb}x{w + pl + pr}) is smaller "
                             f"than the kernel's reach {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}")
        return (self._filters(c), oh, ow)

    # --- building ---------------------------------------------------------------------------
    def build(self, input_shape, rng, backend):
        self.output_shape(input_shape)
        c = input_shape[0]
        f, g = self._filters(c), self._groups(c)
        kh, kw = self.kernel_size
        if self.fixed_kernel is not None:
            w = self.fixed_kernel
            if w.ndim == 3:
                w = np.repeat(w[:, None], c // g, axis=1)
            if w.shape[1] != c // g:
                raise ValueError(f"kernel has {w.shape[1]} input channels; the input has {c} (in {g} groups)")
        else:
            fan_in = c // g * kh * kw
            w = initial_weight(self.init, rng, (f, c // g, kh, kw), fan_in, f * kh * kw)
        self.params["weight"] = backend.from_numpy(w)
        if self.use_bias:
            self.params["bias"] = backend.from_numpy(initial_bias(self.init, rng, f, c // g * kh * kw))
        super().build(input_shape, rng, backend)

    def _checked(self, x):
        check_rank(self, x, 4, "(N, C, H, W) images")
        check_channels(self, x, self.input_shape[0])
        return self.output_shape(tuple(x.shape[1:]))

    # --- computing --------------------------------------------------------------------------
    def apply(self, x):
        self._checked(x)
        backend, weight, bias = backend_of(x), self.params["weight"], self.params.get("bias")
        path = self._path(x.shape[1])
        if path == "plain":
            return backend.conv2d(x, weight, bias, self.stride[0], self.pads[0])
        if path == "depthwise":
            return backend.depthwise_conv2d(x, weight, bias, self.stride, self.pads, self.dilation)
        return backend.conv2d_grouped(x, weight, bias, self.stride, self.pads, self.dilation, self.groups)

    def apply_pooled(self, x, pool):
        """This convolution and the MaxPool2D ``pool`` after it as one step (``run_order``):
        ``(y, (conv_saved, pool_saved))``, for ``backprop`` of each in turn."""
        pool.output_shape(self._checked(x))
        if self._path(x.shape[1]) != "plain" or any(getattr(pool, "pads", (0,))):
            y, conv_saved = self.apply(x)
            y, pool_saved = pool.apply(y)
            return y, (conv_saved, pool_saved)
        return backend_of(x).conv2d_max_pool2d(x, self.params["weight"], self.params.get("bias"), self.stride[0],
                                               self.pads[0], pool.pool_size, pool.stride)

    def backprop(self, dy, saved):
        backend, weight = backend_of(dy), self.params["weight"]
        path = self._path(self.input_shape[0])
        method = {"plain": backend.conv2d_backward, "depthwise": backend.depthwise_conv2d_backward,
                  "general": backend.conv2d_grouped_backward}[path]
        dx, dw, db = method(dy, saved, weight, input_grad=self.needs_input_grad, weight_grad=self.trainable)
        if self.trainable:
            self.add_grad("weight", dw)
            if self.use_bias:
                self.add_grad("bias", db)
        return dx


class DepthwiseConv2D(Conv2D):
    """Each input channel through its own ``depth_multiplier`` filters: torch.nn.Conv2d(C, C * m,
    kernel_size, stride, padding, dilation, groups=C), weight (C * m, 1, kh, kw).  The backend's
    ``depthwise_conv2d`` (a sum over taps, no GEMM; a fused kernel on the CPU and the GPU)."""

    def __init__(self, kernel_size=3, stride=1, padding=0, depth_multiplier: int = 1, dilation=1, *,
                 use_bias: bool = True, trainable: bool = True, init: str = "he"):
        super().__init__(1, kernel_size, stride, padding, dilation, use_bias=use_bias, trainable=trainable, init=init)
        self.depth_multiplier = positive_int(depth_multiplier, "depth_multiplier", "DepthwiseConv2D")

    def _filters(self, channels: int) -> int:
        return channels * self.depth_multiplier

    def _groups(self, channels: int) -> int:
        return channels

    def _path(self, channels: int) -> str:
        return "depthwise"

    def build(self, input_shape, rng, backend):
        super().build(input_shape, rng, backend)
        self.filters, self.groups = self._filters(input_shape[0]), input_shape[0]

    def describe(self) -> str:
        kh, kw = self.kernel_size
        pads = self.pads[0] if len(set(self.pads)) == 1 else self.pads
        extra = "".join([f", depth_multiplier={self.depth_multiplier}" if self.depth_multiplier != 1 else "",
                         f", dilation={_short(self.dilation)}" if self.dilation != (1, 1) else "",
                         "" if self.trainable else ", frozen"])
        return f"DepthwiseConv2D({kh}x{kw}, stride={_short(self.stride)}, padding={pads}{extra})"
