"""The torch.nn module tree equivalent to a dcnn model, with the same state-dict keys.

``to_torch(layer)`` builds it (uninitialised weights: load ``net.state_dict()`` into it);
used by the PyTorch oracle tests and scripts/resnet_torch.py, and to move a model to
PyTorch.  PyTorch is optional: without it this module raises an ImportError saying so.
"""
from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as exc:   # pragma: no cover - depends on the environment
    raise ImportError("dcnn.io.torch_model needs PyTorch: pip install -e '.[test]' or pip install torch") from exc

from ..layers import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, FeatureMapNorm, Flatten, GlobalAvgPool2D,
                       MaxPool2D, ReLU, Residual, Sequential, Softmax)
from ..layers.conv import DepthwiseConv2D
from ..layers.conv_variants import Conv2DTranspose, SeparableConv2D
from ..layers.activations import ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, ReLU6, Sigmoid, SiLU, Tanh
from ..layers.normalization import BatchNorm1D, GroupNorm, LayerNorm
from ..layers.core import Dropout2D
from ..layers.pooling import GlobalMaxPool2D
from ..layers.resampling import Cropping2D, UpSampling2D, ZeroPadding2D
from ..layers.shape import Identity, Reshape


class TorchResidual(nn.Module):
    """body(x) + shortcut(x); no shortcut attribute for the identity (it has no state)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None):
        super().__init__()
        self.body = body
        if shortcut is not None:
            self.shortcut = shortcut

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if hasattr(self, "shortcut") else x)


class TorchSeparable(nn.Module):
    """pointwise(depthwise(x)), with those two children (Keras' SeparableConv2D)."""

    def __init__(self, depthwise: nn.Module, pointwise: nn.Module):
        super().__init__()
        self.depthwise, self.pointwise = depthwise, pointwise

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class TorchGlobalMaxPool(nn.Module):
    """AdaptiveMaxPool2d(1) (the gradient to the first maximum, as dcnn's), flattened unless keepdims."""

    def __init__(self, keepdims: bool = False):
        super().__init__()
        self.keepdims = keepdims

    def forward(self, x):
        y = nn.functional.adaptive_max_pool2d(x, 1)
        return y if self.keepdims else y.flatten(1)


class TorchCrop(nn.Module):
    def __init__(self, crops):
        super().__init__()
        self.crops = crops

    def forward(self, x):
        top, bottom, left, right = self.crops
        return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]


class TorchReshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)


class TorchGlobalAvgPool(nn.Module):
    def __init__(self, keepdims: bool = False):
        super().__init__()
        self.keepdims = keepdims

    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=self.keepdims)


def to_torch(layer) -> nn.Module:
    """The equivalent module of a built dcnn layer (a whole model: ``net.model``; a graph gives
    a generated module, ``dcnn.io.torch_graph.TorchGraph``)."""
    from ..layers.graph import Graph
    from .torch_graph import TorchGraph
    if isinstance(layer, Graph):
        return TorchGraph(layer, {name: to_torch(sub) for name, sub in layer.children() if not sub.takes_many})
    if isinstance(layer, Sequential):
        return nn.Sequential(*[to_torch(child) for child in layer.layers])
    if isinstance(layer, Residual):
        return TorchResidual(to_torch(layer.body), None if layer.shortcut is None else to_torch(layer.shortcut))
    if isinstance(layer, SeparableConv2D):
        return TorchSeparable(to_torch(layer.depthwise), to_torch(layer.pointwise))
    if not layer.built and isinstance(layer, (Conv2D, Conv2DTranspose, Dense, BatchNorm2D, LayerNorm, GroupNorm)):
        raise ValueError(f"{layer.describe()} is not built yet: build the model first")
    special = _family(layer)
    if special is not None:
        return special
    if isinstance(layer, Conv2D):
        f, cg, _, _ = layer.params["weight"].shape
        groups = layer.input_shape[0] if isinstance(layer, DepthwiseConv2D) else layer.groups
        return nn.Conv2d(cg * groups, f, layer.kernel_size, layer.stride, layer.padding, layer.dilation, groups,
                         bias=layer.use_bias)
    if isinstance(layer, Conv2DTranspose):
        c = layer.params["weight"].shape[0]
        return nn.ConvTranspose2d(c, layer.filters, layer.kernel_size, layer.stride, layer.padding,
                                  layer.output_padding, layer.groups, bias=layer.use_bias, dilation=layer.dilation)
    if isinstance(layer, Dense):
        units, features = layer.params["weight"].shape
        return nn.Linear(features, units, bias=layer.use_bias)
    if isinstance(layer, BatchNorm2D):
        return nn.BatchNorm2d(layer.params["weight"].shape[0], eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, ReLU):
        return nn.ReLU() if layer.max_activation is None else nn.Hardtanh(0.0, layer.max_activation)
    if isinstance(layer, AvgPool2D):
        return nn.AvgPool2d(layer.pool_size, layer.stride, layer.padding)
    if isinstance(layer, MaxPool2D):
        return nn.MaxPool2d(layer.pool_size, layer.stride, layer.padding)
    if isinstance(layer, GlobalAvgPool2D):
        return TorchGlobalAvgPool(layer.keepdims)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.rate)
    if isinstance(layer, FeatureMapNorm):
        return nn.InstanceNorm2d(1, eps=layer.eps)   # no affine, no running stats: any channel count
    if isinstance(layer, Softmax):
        return nn.Softmax(dim=-1)
    raise TypeError(f"no torch equivalent known for {layer.describe()}")


_ACTIVATIONS = {Sigmoid: nn.Sigmoid, Tanh: nn.Tanh, SiLU: nn.SiLU, HardSigmoid: nn.Hardsigmoid,
                HardSwish: nn.Hardswish, ReLU6: nn.ReLU6}


def _family(layer):
    """The torch module of one of issue 20's layers, or None."""
    if isinstance(layer, GlobalMaxPool2D):
        return TorchGlobalMaxPool(layer.keepdims)
    if isinstance(layer, UpSampling2D):
        return nn.Upsample(scale_factor=tuple(float(s) for s in layer.size), mode=layer.interpolation,
                           **({"align_corners": False} if layer.interpolation == "bilinear" else {}))
    if isinstance(layer, ZeroPadding2D):
        top, bottom, left, right = layer.pads
        return nn.ZeroPad2d((left, right, top, bottom))
    if isinstance(layer, Cropping2D):
        return TorchCrop(layer.crops)
    if isinstance(layer, Reshape):
        return TorchReshape(layer.target_shape)
    if isinstance(layer, Identity):
        return nn.Identity()
    if isinstance(layer, Dropout2D):
        return nn.Dropout2d(layer.rate)
    if type(layer) in _ACTIVATIONS:
        return _ACTIVATIONS[type(layer)]()
    if isinstance(layer, LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, ELU):
        return nn.ELU(layer.alpha)
    if isinstance(layer, GELU):
        return nn.GELU(approximate=layer.approximate)
    if isinstance(layer, BatchNorm1D):
        return nn.BatchNorm1d(layer.params["weight"].shape[0], eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, LayerNorm):
        return nn.LayerNorm(tuple(layer.params["weight"].shape), eps=layer.eps)
    if isinstance(layer, GroupNorm):
        return nn.GroupNorm(layer.num_groups, layer.params["weight"].shape[0], eps=layer.eps)
    return None


def load_into_torch(module: nn.Module, state: dict) -> None:
    """Copy a dcnn state dict (host arrays) into ``module``; every key must match."""
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
