"""Export a trained model to ONNX (``dcnn export RUN model.onnx``), for ONNX Runtime and other tools.

Needs the optional ``onnx`` package (``pip install onnx onnxruntime``, or ``pip install -e '.[onnx]'``
in a clone).  The graph takes float32 (N, C, H, W) images in [0, 1], the batch size left free, and
gives what ``net.predict`` gives: class probabilities (or, with ``logits=True``, the scores before
the softmax).  Each dcnn layer maps to standard ONNX operators; a layer without a mapping is refused
by name.  The class names go into the model's metadata (``classes``, JSON).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import export_layers
from ..layers import (BatchNorm2D, Dense, Dropout, FeatureMapNorm, Flatten, GlobalAvgPool2D, ReLU, Residual,
                       Sequential, Softmax)

OPSET = 17


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ImportError("exporting to ONNX needs the onnx package: pip install onnx onnxruntime "
                          "(in a clone of dcnn: pip install -e '.[onnx]')") from exc
    return onnx, TensorProto, helper, numpy_helper


class _Graph:
    def __init__(self, net, helper, numpy_helper):
        self.net, self.helper, self.numpy_helper = net, helper, numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def constant(self, stem, array):
        name = self.name(stem)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def int_constant(self, stem, values):
        name = self.name(stem)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=out + "_node", **attrs))
        return out

    def host(self, layer, key):
        return self.net.backend.to_numpy(layer.state()[key])

    def add(self, layer, x, where: str):
        if isinstance(layer, Sequential):
            for i, inner in enumerate(layer.layers):
                x = self.add(inner, x, f"{where}.{i}")
            return x
        mapped = export_layers.add(self, layer, x)
        if mapped is not None:
            return mapped
        if isinstance(layer, ReLU):
            if layer.max_activation is None:
                return self.node("Relu", [x])
            return self.node("Clip", [x, self.constant("min", np.float32(0)),
                                      self.constant("max", np.float32(layer.max_activation))])
        if isinstance(layer, BatchNorm2D):
            return self.node("BatchNormalization", [x] + [self.constant(key, self.host(layer, key)) for key in
                                                          ("weight", "bias", "running_mean", "running_var")],
                             epsilon=float(layer.eps))
        if isinstance(layer, FeatureMapNorm):
            channels = self.current_channels
            return self.node("InstanceNormalization", [x, self.constant("scale", np.ones(channels)),
                                                       self.constant("shift", np.zeros(channels))],
                             epsilon=float(layer.eps))
        if isinstance(layer, Flatten):
            return self.node("Flatten", [x], axis=1)
        if isinstance(layer, Dense):
            inputs = [x, self.constant("weight", self.host(layer, "weight"))]
            if "bias" in layer.params:
                inputs.append(self.constant("bias", self.host(layer, "bias")))
            return self.node("Gemm", inputs, transB=1)
        if isinstance(layer, Dropout):       # the identity at inference
            return x
        if isinstance(layer, GlobalAvgPool2D):
            pooled = self.node("GlobalAveragePool", [x])
            return pooled if layer.keepdims else self.node("Flatten", [pooled], axis=1)
        if isinstance(layer, Residual):
            channels = self.current_channels
            body = _add_tracking_shape(self, layer.body, x, f"{where}.body")
            self.current_channels = channels
            shortcut = x if layer.shortcut is None else _add_tracking_shape(self, layer.shortcut, x,
                                                                             f"{where}.shortcut")
            return self.node("Add", [body, shortcut])
        if isinstance(layer, Softmax):
            return self.node("Softmax", [x], axis=1)
        raise ValueError(f"{where}: {type(layer).__name__} has no ONNX mapping in dcnn.io.export yet; the layers that "
                         "export are dcnn's own (see dcnn.io.export_layers) and containers of them")


def to_onnx(net, *, classes=None, logits: bool = False):
    """The network as an ``onnx.ModelProto`` (checked with ``onnx.checker``)."""
    onnx, TensorProto, helper, numpy_helper = _onnx()
    net.build()
    graph = _Graph(net, helper, numpy_helper)
    x = "input"
    shape = net.input_shape
    layers = list(net.layers)
    if getattr(net, "is_graph", False):        # a graph: its nodes in order (dcnn.io.export_graph)
        from .export_graph import add_graph
        model = net.model.logits_graph(lambda layer: isinstance(layer, Softmax)) if logits else net.model
        x = add_graph(graph, model, x, "", _add_tracking_shape)
        layers = [model.outputs[0].node.layer] if model.outputs[0].node is not None else []
    else:
        if logits and layers and isinstance(layers[-1], Softmax):
            layers = layers[:-1]
        for i, layer in enumerate(layers):
            graph.current_channels = shape[0] if len(shape) == 3 else None
            x = _add_tracking_shape(graph, layer, x, f"layers[{i}]")
            shape = layer.output_shape(shape)
    if not logits and not (layers and isinstance(layers[-1], Softmax)):
        x = graph.node("Softmax", [x], axis=1)
    out_name = "logits" if logits else "probabilities"
    # (classes,), or (classes, H, W) for per-pixel scores; the softmax above is over axis 1 either way.
    out_shape = net.model.output_shape(net.input_shape)
    graph.nodes.append(helper.make_node("Identity", [x], [out_name], name="output"))
    model = helper.make_model(
        helper.make_graph(graph.nodes, "dcnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["N", *net.input_shape])],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", *out_shape])],
                          graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dcnn")
    model.ir_version = min(model.ir_version, 9)     # readable by ONNX Runtime releases of the last years
    classes = classes if classes is not None else getattr(net, "classes", None)
    if classes is not None:
        helper.set_model_props(model, {"classes": json.dumps(list(classes))})
    onnx.checker.check_model(model)
    return model


def _add_tracking_shape(graph, layer, x, where):
    """Containers run their layers one by one so that FeatureMapNorm knows its channel count."""
    if isinstance(layer, Sequential):
        shape = layer.input_shape
        for i, inner in enumerate(layer.layers):
            graph.current_channels = shape[0] if len(shape) == 3 else None
            x = _add_tracking_shape(graph, inner, x, f"{where}.{i}")
            shape = inner.output_shape(shape)
        return x
    return graph.add(layer, x, where)


def export_onnx(net, path, *, classes=None, logits: bool = False) -> Path:
    """Write ``net`` as an ONNX file (atomically); returns the path."""
    from ..utils.files import atomic_write_bytes
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"an ONNX file name ends in .onnx; got {str(path)!r}")
    atomic_write_bytes(path, to_onnx(net, classes=classes, logits=logits).SerializeToString())
    return path
