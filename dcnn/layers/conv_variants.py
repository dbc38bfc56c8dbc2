"""SeparableConv2D (depthwise then pointwise, as Keras) and Conv2DTranspose (torch.nn.ConvTranspose2d).

The transposed convolution is the backend's ``conv_transpose2d``: a GEMM then col2im
(backends/ops/conv_general.py), never a scatter-add.
"""
from backends import backend_of

from .base import Layer, check_channels, check_rank
from .conv import Conv2D, DepthwiseConv2D, _short, pair, positive_int
from .initializers import initial_bias, initial_weight


class SeparableConv2D(Layer):
    """A DepthwiseConv2D (``kernel_size``, ``stride``, ``padding``, ``depth_multiplier``, ``dilation``;
    no bias) then a 1x1 Conv2D to ``filters`` maps (with a bias when ``use_bias``), as Keras'
    SeparableConv2D.  State keys as a torch module with children ``depthwise`` and ``pointwise``:
    ``depthwise.weight`` (C * m, 1, kh, kw), ``pointwise.weight`` (filters, C * m, 1, 1), ``pointwise.bias``."""

    def __init__(self, filters: int, kernel_size=3, stride=1, padding=0, depth_multiplier: int = 1, dilation=1, *,
                 use_bias: bool = True, trainable: bool = True, init: str = "he"):
        super().__init__()
        positive_int(filters, "filters", "SeparableConv2D")
        self.depthwise = DepthwiseConv2D(kernel_size, stride, padding, depth_multiplier, dilation, use_bias=False,
                                         trainable=trainable, init=init)
        self.pointwise = Conv2D(filters, 1, use_bias=use_bias, trainable=trainable, init=init)
        self.filters, self.use_bias, self.trainable = int(filters), bool(use_bias), trainable

    def children(self):
        return [("depthwise", self.depthwise), ("pointwise", self.pointwise)]

    def describe(self) -> str:
        inner = self.depthwise.describe()[len("DepthwiseConv2D("):-1]
        return f"SeparableConv2D({self.filters}, {inner})"

    def output_shape(self, input_shape):
        return self.pointwise.output_shape(self.depthwise.output_shape(input_shape))

    def build(self, input_shape, rng, backend):
        self.depthwise.build(tuple(input_shape), rng, backend)
        self.pointwise.build(self.depthwise.output_shape(tuple(input_shape)), rng, backend)
        super().build(input_shape, rng, backend)

    def set_needs_input_grad(self, value: bool) -> None:
        self.needs_input_grad = value
        self.depthwise.set_needs_input_grad(value)

    def apply(self, x):
        y, depthwise_saved = self.depthwise.apply(x)
        y, pointwise_saved = self.pointwise.apply(y)
        return y, (depthwise_saved, pointwise_saved)

    def backprop(self, dy, saved):
        depthwise_saved, pointwise_saved = saved
        return self.depthwise.backprop(self.pointwise.backprop(dy, pointwise_saved), depthwise_saved)


class Conv2DTranspose(Layer):
    """torch.nn.ConvTranspose2d(C, filters, kernel_size, stride, padding, output_padding, groups,
    bias=use_bias, dilation), same weight layout (C, filters / groups, kh, kw): the output is
    (H - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1 high (and wide)."""

    def __init__(self, filters: int, kernel_size=3, stride=1, padding=0, output_padding=0, groups: int = 1,
                 dilation=1, *, use_bias: bool = True, trainable: bool = True, init: str = "he"):
        super().__init__()
        name = "Conv2DTranspose"
        self.filters = positive_int(filters, "filters", name)
        self.kernel_size = pair(kernel_size, "kernel_size", name, 1)
        self.stride = pair(stride, "stride", name, 1)
        self.dilation = pair(dilation, "dilation", name, 1)
        self.padding = (0, 0) if padding == "valid" else pair(padding, "padding", name, 0)
        self.output_padding = pair(output_padding, "output_padding", name, 0)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(f"{name}: output_padding={_short(self.output_padding)} must be smaller than the "
                                 f"stride ({_short(self.stride)}) or the dilation ({_short(self.dilation)}), "
                                 "as in torch")
        self.groups = positive_int(groups, "groups", name)
        if self.filters % self.groups:
            raise ValueError(f"{name}: groups={self.groups} must divide filters={self.filters}")
        self.use_bias, self.trainable, self.init = bool(use_bias), trainable, init

    def describe(self) -> str:
        kh, kw = self.kernel_size
        extra = "".join([f", output_padding={_short(self.output_padding)}" if any(self.output_padding) else "",
                         f", dilation={_short(self.dilation)}" if self.dilation != (1, 1) else "",
                         f", groups={self.groups}" if self.groups != 1 else "",
                         "" if self.trainable else ", frozen"])
        return (f"Conv2DTranspose({self.filters}, {kh}x{kw}, stride={_short(self.stride)}, "
                f"padding={_short(self.padding)}{extra})")

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects (channels, height, width) inputs; got {input_shape}")
        c, h, w = input_shape
        if c % self.groups:
            raise ValueError(f"{self.describe()}: groups={self.groups} must divide the {c} input channels")
        size = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
                zip((h, w), self.stride, self.padding, self.dilation, self.kernel_size, self.output_padding)]
        if min(size) < 1:
            raise ValueError(f"{self.describe()}: input {h}x{w} gives an empty output {size[0]}x{size[1]} "
                             "(the padding crops more than the output has)")
        return (self.filters, size[0], size[1])

    def build(self, input_shape, rng, backend):
        self.output_shape(input_shape)
        c = input_shape[0]
        kh, kw = self.kernel_size
        fg = self.filters // self.groups
        # torch's fans for ConvTranspose2d's weight (C, F / groups, kh, kw): dim 1, then dim 0.
        w = initial_weight(self.init, rng, (c, fg, kh, kw), fg * kh * kw, c * kh * kw)
        self.params["weight"] = backend.from_numpy(w)
        if self.use_bias:
            self.params["bias"] = backend.from_numpy(initial_bias(self.init, rng, self.filters, fg * kh * kw))
        super().build(input_shape, rng, backend)

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) images")
        check_channels(self, x, self.params["weight"].shape[0])
        self.output_shape(tuple(x.shape[1:]))
        return backend_of(x).conv_transpose2d(x, self.params["weight"], self.params.get("bias"), self.stride,
                                              self.padding, self.output_padding, self.dilation, self.groups)

    def backprop(self, dy, saved):
        dx, dw, db = backend_of(dy).conv_transpose2d_backward(dy, saved, self.params["weight"],
                                                              input_grad=self.needs_input_grad,
                                                              weight_grad=self.trainable)
        if self.trainable:
            self.add_grad("weight", dw)
            if self.use_bias:
                self.add_grad("bias", db)
        return dx

