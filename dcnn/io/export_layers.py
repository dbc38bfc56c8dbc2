"""ONNX mappings of the layer families of issue 20 (convolution variants, activations, norms,
resampling, pooling with padding, shape layers), used by dcnn.io.export.

``add(graph, layer, x)`` appends the nodes of one layer and returns its output's name, or
None when the layer is not one of these.  Only standard operators of opset 17.
"""
from __future__ import annotations

import math

import numpy as np

from ..layers.activations import ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, Sigmoid, SiLU, Tanh
from ..layers.conv import Conv2D, DepthwiseConv2D
from ..layers.conv_variants import Conv2DTranspose, SeparableConv2D
from ..layers.normalization import GroupNorm, LayerNorm
from ..layers.pooling import AvgPool2D, GlobalMaxPool2D, MaxPool2D
from ..layers.resampling import Cropping2D, UpSampling2D, ZeroPadding2D
from ..layers.shape import Identity, Reshape

BIG = np.iinfo(np.int64).max


def _conv(graph, layer, x):
    inputs = [x, graph.constant("weight", graph.host(layer, "weight"))]
    if "bias" in layer.params:
        inputs.append(graph.constant("bias", graph.host(layer, "bias")))
    top, bottom, left, right = layer.pads
    groups = layer.input_shape[0] if isinstance(layer, DepthwiseConv2D) else layer.groups
    return graph.node("Conv", inputs, kernel_shape=list(layer.kernel_size), pads=[top, left, bottom, right],
                      strides=list(layer.stride), dilations=list(layer.dilation), group=groups)


def _conv_transpose(graph, layer, x):
    inputs = [x, graph.constant("weight", graph.host(layer, "weight"))]
    if "bias" in layer.params:
        inputs.append(graph.constant("bias", graph.host(layer, "bias")))
    ph, pw = layer.padding
    return graph.node("ConvTranspose", inputs, kernel_shape=list(layer.kernel_size), pads=[ph, pw, ph, pw],
                      strides=list(layer.stride), dilations=list(layer.dilation), group=layer.groups,
                      output_padding=list(layer.output_padding))


def _gelu(graph, layer, x):
    half = graph.constant("half", np.float32(0.5))
    one = graph.constant("one", np.float32(1.0))
    if layer.approximate == "tanh":
        cube = graph.node("Mul", [graph.node("Mul", [x, x]), x])
        inner = graph.node("Add", [x, graph.node("Mul", [cube, graph.constant("c", np.float32(0.044715))])])
        t = graph.node("Tanh", [graph.node("Mul", [inner, graph.constant("k", np.float32(math.sqrt(2 / math.pi)))])])
    else:
        t = graph.node("Erf", [graph.node("Mul", [x, graph.constant("k", np.float32(1 / math.sqrt(2)))])])
    return graph.node("Mul", [graph.node("Mul", [x, half]), graph.node("Add", [t, one])])


def _group_norm(graph, layer, x):
    g = layer.num_groups
    grouped = graph.node("Reshape", [x, graph.int_constant("shape", [0, g, -1])])
    normed = graph.node("InstanceNormalization", [grouped, graph.constant("scale", np.ones(g)),
                                                  graph.constant("shift", np.zeros(g))], epsilon=float(layer.eps))
    back = graph.node("Reshape", [normed, graph.node("Shape", [x])])
    per_channel = lambda key: graph.constant(key, graph.host(layer, key).reshape(-1, 1, 1))
    return graph.node("Add", [graph.node("Mul", [back, per_channel("weight")]), per_channel("bias")])


def _resampling(graph, layer, x):
    if isinstance(layer, AvgPool2D):
        return graph.node("AveragePool", [x], kernel_shape=[layer.pool_size] * 2, strides=[layer.stride] * 2,
                          pads=[layer.padding] * 4, count_include_pad=1)
    if isinstance(layer, MaxPool2D):
        return graph.node("MaxPool", [x], kernel_shape=[layer.pool_size] * 2, strides=[layer.stride] * 2,
                          pads=[layer.padding] * 4)
    if isinstance(layer, GlobalMaxPool2D):
        pooled = graph.node("GlobalMaxPool", [x])
        return pooled if layer.keepdims else graph.node("Flatten", [pooled], axis=1)
    if isinstance(layer, UpSampling2D):
        scales = graph.constant("scales", np.array([1.0, 1.0, *layer.size], np.float32))
        if layer.interpolation == "nearest":
            return graph.node("Resize", [x, "", scales], mode="nearest", nearest_mode="floor",
                              coordinate_transformation_mode="asymmetric")
        return graph.node("Resize", [x, "", scales], mode="linear", coordinate_transformation_mode="pytorch_half_pixel")
    if isinstance(layer, ZeroPadding2D):
        top, bottom, left, right = layer.pads
        return graph.node("Pad", [x, graph.int_constant("pads", [0, 0, top, left, 0, 0, bottom, right])])
    if isinstance(layer, Cropping2D):
        top, bottom, left, right = layer.crops
        return graph.node("Slice", [x, graph.int_constant("starts", [top, left]),
                                    graph.int_constant("ends", [-bottom if bottom else BIG, -right if right else BIG]),
                                    graph.int_constant("axes", [2, 3])])
    if isinstance(layer, Reshape):
        return graph.node("Reshape", [x, graph.int_constant("shape", [0, *layer.target_shape])])
    if isinstance(layer, Identity):
        return x
    return None


def add(graph, layer, x):
    """The output name of ``layer``'s nodes, or None if it has no mapping here."""
    resampled = _resampling(graph, layer, x)
    if resampled is not None:
        return resampled
    if isinstance(layer, SeparableConv2D):
        return _conv(graph, layer.pointwise, _conv(graph, layer.depthwise, x))
    if isinstance(layer, Conv2D):
        return _conv(graph, layer, x)
    if isinstance(layer, Conv2DTranspose):
        return _conv_transpose(graph, layer, x)
    if isinstance(layer, LeakyReLU):
        return graph.node("LeakyRelu", [x], alpha=float(layer.negative_slope))
    if isinstance(layer, ELU):
        return graph.node("Elu", [x], alpha=float(layer.alpha))
    simple = {Sigmoid: "Sigmoid", Tanh: "Tanh", HardSwish: "HardSwish"}.get(type(layer))
    if simple:
        return graph.node(simple, [x])
    if isinstance(layer, HardSigmoid):
        return graph.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    if isinstance(layer, SiLU):
        return graph.node("Mul", [x, graph.node("Sigmoid", [x])])
    if isinstance(layer, GELU):
        return _gelu(graph, layer, x)
    if isinstance(layer, LayerNorm):
        return graph.node("LayerNormalization", [x, graph.constant("scale", graph.host(layer, "weight")),
                                                 graph.constant("shift", graph.host(layer, "bias"))],
                          axis=1, epsilon=float(layer.eps))
    if isinstance(layer, GroupNorm):
        return _group_norm(graph, layer, x)
    return None
