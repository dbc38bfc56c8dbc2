"""Building blocks of mobile networks, as lists of layers: MobileNetV2's inverted residual.

Each returns layers to splice into a model (``*inverted_residual(...)``); the skip is the
``Residual`` container, so state keys are those of a torch module with ``body`` children.
"""
from .activations import ReLU
from .container import Residual
from .conv import Conv2D, DepthwiseConv2D
from .normalization import BatchNorm2D


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
