"""A model's architecture as plain JSON: the layer spec stored beside the weights (never pickle).

One generic mechanism, no per-layer code: every Layer keeps the arguments its constructor
was called with (``Layer.init_args``), so a layer is ``{"layer": class name, "args": {...}}``,
with layers inside arguments (Sequential's list, a residual branch) written the same way,
recursively, and NumPy arrays (a fixed kernel) as nested lists.  Loading looks the class up
by name among the Layer subclasses defined so far and calls it with those arguments; an
unknown name is refused with an error that says so.  Nothing in a spec is ever executed.
"""
from __future__ import annotations

import inspect

import numpy as np

from .base import LAYER_CLASSES, Layer
from .graph import Graph

FORMAT = "dcnn-model"
VERSION = 1            # a list of layers
GRAPH_VERSION = 2      # a graph: its layers, then each call with the tensors it reads (as Keras's inbound nodes)
MAX_DEPTH = 64


class SpecError(ValueError):
    """A model spec that cannot be written or built; the message names the layer and field."""


def layer_spec(layer: Layer) -> dict:
    """``{"layer": "Conv2D", "args": {...}}`` for one layer, nested layers included."""
    args = layer.init_args()
    for name, value in args.items():
        current = getattr(layer, name, None)
        # A container's layer list can grow after construction (Sequential.add): record what it holds now.
        if _is_layer_list(value) and _is_layer_list(current):
            args[name] = current
    where = type(layer).__name__
    spec = {"layer": where, "args": {k: _encode(v, f"{where}.{k}") for k, v in args.items()}}
    if layer.has_name:
        spec["name"] = layer.name
    return spec


def model_spec(net) -> dict:
    """The whole network: input shape and layers, or its graph (what ``build_network`` needs)."""
    if isinstance(net.model, Graph):
        return {"format": FORMAT, "version": GRAPH_VERSION,
                "input_shape": None if net.input_shape is None else list(net.input_shape),
                "graph": graph_spec(net.model)}
    return {"format": FORMAT, "version": VERSION,
            "input_shape": None if net.input_shape is None else list(net.input_shape),
            "layers": [layer_spec(layer) for layer in net.layers]}


def graph_spec(graph: Graph) -> dict:
    """``inputs`` (shapes, names), ``layers`` (each once, by name), ``nodes`` (each call: its layer's name
    and the tensors it reads, ``["input", i]`` or ``["node", k]`` for the k-th node's output), ``outputs``."""
    index = {node: k for k, node in enumerate(graph.nodes)}
    inputs = {t.id: i for i, t in enumerate(graph.inputs)}
    ref = lambda t: ["input", inputs[t.id]] if t.node is None else ["node", index[t.node]]
    return {"inputs": [{"shape": list(t.shape), **({"name": t.name} if t.name else {})} for t in graph.inputs],
            "layers": [layer_spec(layer) for layer in graph.layers],
            "nodes": [{"layer": node.layer.name, "inbound": [ref(t) for t in node.inputs], "list": node.many}
                      for node in graph.nodes],
            "outputs": [ref(t) for t in graph.outputs]}


def build_layer(spec, where: str = "layer", depth: int = 0) -> Layer:
    """A new (unbuilt) layer from its spec."""
    if depth > MAX_DEPTH:
        raise SpecError(f"{where}: layers nested more than {MAX_DEPTH} deep; the spec is damaged")
    if not isinstance(spec, dict) or not isinstance(spec.get("layer"), str) or not isinstance(spec.get("args", {}), dict):
        raise SpecError(f"{where}: a layer spec must be {{'layer': name, 'args': {{...}}}}; got {_short(spec)}")
    name = spec["layer"]
    cls = LAYER_CLASSES.get(name)
    if cls is None:
        raise SpecError(f"{where}: unknown layer class {name!r}; known ones are: {', '.join(sorted(LAYER_CLASSES))}. "
                        "If it is your own Layer subclass, import it before loading (on the command line: "
                        "--custom-layers FILE.py)")
    args = {k: _decode(v, f"{where}.{k}", depth) for k, v in spec.get("args", {}).items()}
    positional, keywords = [], {}
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    for p in params:
        if p.name not in args:
            continue
        value = args.pop(p.name)
        if p.kind is p.VAR_POSITIONAL:
            positional.extend(value)
        elif p.kind is p.VAR_KEYWORD:
            keywords.update(value)
        elif p.kind is p.POSITIONAL_ONLY:
            positional.append(value)
        else:
            keywords[p.name] = value
    if args:
        raise SpecError(f"{where}: {name} takes no argument(s) {', '.join(sorted(args))}; the spec is from another "
                        "version of that layer")
    try:
        layer = cls(*positional, **keywords)
        if "name" in spec:
            layer.name = spec["name"]
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {name}(...) refused its stored arguments: {exc}") from None
    return layer


def _is_layer_list(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, Layer) for v in value)


def _encode(value, where: str):
    if isinstance(value, Layer):
        return {"__layer__": layer_spec(value)}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{where}.{k}") for k, v in value.items()}}
    raise SpecError(f"{where}: a {type(value).__name__} cannot be stored in a JSON model spec; give the layer "
                    "plain numbers, strings, lists, NumPy arrays or layers as arguments")


def _decode(value, where: str, depth: int):
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]", depth) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if "__layer__" in value:
            return build_layer(value["__layer__"], where, depth + 1)
        if "__array__" in value:
            try:
                return np.asarray(value["__array__"], dtype=np.dtype(str(value.get("dtype", "float32"))))
            except (TypeError, ValueError) as exc:
                raise SpecError(f"{where}: not an array ({exc})") from None
        if isinstance(value.get("__dict__"), dict):
            return {k: _decode(v, f"{where}.{k}", depth) for k, v in value["__dict__"].items()}
        raise SpecError(f"{where}: unexpected object {_short(value)}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
