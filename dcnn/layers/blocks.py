"""Building blocks of mobile networks.

MobileNetV2's inverted residual returns layers to splice into a model (``*inverted_residual(...)``);
its skip is the ``Residual`` container, so state keys are those of a torch module with ``body``
children.  EfficientNet's MBConv with squeeze-and-excitation gates the maps by a product, so it is
written with the functional API: ``mbconv(x, ...)`` takes a tensor (from ``Input`` or a layer call)
and returns the block's output tensor.
"""
from .activations import ReLU, Sigmoid, SiLU
from .container import Residual
from .conv import Conv2D, DepthwiseConv2D
from .merge import Add, Multiply
from .normalization import BatchNorm2D
from .pooling import GlobalAvgPool2D


def relu6() -> ReLU:
    """ReLU6 as a capped ReLU: the same function (torch.nn.ReLU6 = Hardtanh(0, 6)), and a ReLU right
    after a BatchNorm2D runs fused into it (container.run_order)."""
    return ReLU(6.0)


def inverted_residual(in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6) -> list:
    """MobileNetV2's block (Sandler et al., 2018): a 1x1 expansion to ``in_channels * expansion``
    maps (none when ``expansion`` is 1), BatchNorm and ReLU6; a 3x3 depthwise convolution with
    ``stride``, BatchNorm and ReLU6; a linear 1x1 projection to ``out_channels`` and BatchNorm (no
    activation: the linear bottleneck).  Wrapped in a Residual (identity skip) when the stride is 1
    and the width stays; as plain layers otherwise."""
    hidden = in_channels * expansion
    body = [] if expansion == 1 else [Conv2D(hidden, 1, use_bias=False), BatchNorm2D(), relu6()]
    body += [DepthwiseConv2D(3, stride, 1, use_bias=False), BatchNorm2D(), relu6(),
             Conv2D(out_channels, 1, use_bias=False), BatchNorm2D()]
    if stride == 1 and in_channels == out_channels:
        return [Residual(body)]
    return body


def squeeze_excite(x, reduced: int):
    """Squeeze-and-excitation (Hu et al., 2018) as EfficientNet has it (torchvision's
    SqueezeExcitation with SiLU): per-channel means (N, C, 1, 1), a 1x1 convolution to ``reduced``
    maps, SiLU, a 1x1 convolution back to C, a sigmoid, and ``x`` times those gates (broadcast)."""
    channels = x.shape[0]
    gates = GlobalAvgPool2D(keepdims=True)(x)
    gates = Sigmoid()(Conv2D(channels, 1)(SiLU()(Conv2D(reduced, 1)(gates))))
    return Multiply()([x, gates])


def mbconv(x, out_channels: int, stride: int = 1, expansion: int = 4, se_ratio: float = 0.25, kernel_size: int = 3):
    """EfficientNet's MBConv block (Tan and Le, 2019) on the tensor ``x`` of C channels: a 1x1
    expansion to ``C * expansion`` maps (none when ``expansion`` is 1), BatchNorm, SiLU; a depthwise
    ``kernel_size`` convolution with ``stride``, BatchNorm, SiLU; squeeze-and-excitation reducing to
    ``max(1, int(C * se_ratio))`` maps (none when ``se_ratio`` is 0); a linear 1x1 projection to
    ``out_channels`` and BatchNorm; plus ``x`` when the stride is 1 and the width stays."""
    channels = x.shape[0]
    y = x
    if expansion != 1:
        y = SiLU()(BatchNorm2D()(Conv2D(channels * expansion, 1, use_bias=False)(y)))
    y = DepthwiseConv2D(kernel_size, stride, kernel_size // 2, use_bias=False)(y)
    y = SiLU()(BatchNorm2D()(y))
    if se_ratio:
        y = squeeze_excite(y, max(1, int(channels * se_ratio)))
    y = BatchNorm2D()(Conv2D(out_channels, 1, use_bias=False)(y))
    return Add()([y, x]) if stride == 1 and channels == out_channels else y
