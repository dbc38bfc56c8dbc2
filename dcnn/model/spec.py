"""A network from its JSON spec (``dcnn.layers.spec`` writes and reads the layers; this builds the network).

A graph is rebuilt by replaying its calls: each node's layer called on the tensors it read.  Nothing
in a spec is ever executed; a reference to a node or input that does not exist is refused.
"""
from __future__ import annotations

from ..layers.spec import (FORMAT, GRAPH_VERSION, VERSION, SpecError, build_layer, graph_spec,  # noqa: F401
                           layer_spec, model_spec)
from ..layers.symbolic import Input
from .network import DCNNetwork


def build_network(spec: dict, *, backend=None, seed: int = 0):
    """A built DCNNetwork from ``model_spec``'s output (weights still initial)."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise SpecError(f"not a dcnn model spec (format {spec.get('format') if isinstance(spec, dict) else spec!r})")
    if spec.get("version") not in (VERSION, GRAPH_VERSION):
        raise SpecError(f"a version {spec.get('version')!r} model spec; this dcnn reads versions {VERSION} "
                        f"(layers) and {GRAPH_VERSION} (graphs)")
    if spec["version"] == GRAPH_VERSION:
        inputs, outputs = build_graph(spec.get("graph"))
        net = DCNNetwork(inputs=inputs, outputs=outputs, seed=seed, backend=backend)
        # "input_shape": None asks for the network unbuilt (the loader checks its shapes against the file first).
        return net if "input_shape" in spec and spec["input_shape"] is None else net.build()
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError("a model spec needs a non-empty list 'layers'")
    built = [build_layer(s, f"layers[{i}]") for i, s in enumerate(layers)]
    net = DCNNetwork(built, input_shape=spec.get("input_shape"), seed=seed, backend=backend)
    return net.build() if net.input_shape is not None else net


def build_graph(graph) -> tuple:
    """(input tensor, output tensor) of a graph spec, its calls replayed."""
    if not isinstance(graph, dict) or not all(isinstance(graph.get(k), list) for k in ("inputs", "layers", "nodes",
                                                                                       "outputs")):
        raise SpecError("a graph spec needs lists 'inputs', 'layers', 'nodes' and 'outputs'")
    inputs = []
    for i, item in enumerate(graph["inputs"]):
        if not isinstance(item, dict) or not isinstance(item.get("shape"), list):
            raise SpecError(f"graph.inputs[{i}] must be {{'shape': [...]}}; got {item!r}"[:200])
        try:
            inputs.append(Input(item["shape"], name=item.get("name")))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"graph.inputs[{i}]: {exc}") from None
    layers = {}
    for i, item in enumerate(graph["layers"]):
        layer = build_layer(item, f"graph.layers[{i}]")
        if not isinstance(item, dict) or "name" not in item or item["name"] in layers:
            raise SpecError(f"graph.layers[{i}] needs a name of its own (unique in the graph)")
        layers[item["name"]] = layer
    outputs_of = []

    def tensor(ref, where):
        if (not isinstance(ref, list) or len(ref) != 2 or ref[0] not in ("input", "node")
                or not isinstance(ref[1], int) or isinstance(ref[1], bool)):
            raise SpecError(f"{where} must be ['input', i] or ['node', k]; got {ref!r}"[:200])
        pool = inputs if ref[0] == "input" else outputs_of
        if not 0 <= ref[1] < len(pool):
            raise SpecError(f"{where} refers to {ref[0]} {ref[1]}, which does not come before it")
        return pool[ref[1]]

    for k, node in enumerate(graph["nodes"]):
        where = f"graph.nodes[{k}]"
        if not isinstance(node, dict) or node.get("layer") not in layers or not isinstance(node.get("inbound"), list):
            raise SpecError(f"{where} must name one of the graph's layers and list its inbound tensors")
        args = [tensor(ref, f"{where}.inbound[{j}]") for j, ref in enumerate(node["inbound"])]
        try:
            outputs_of.append(layers[node["layer"]](args if node.get("list") else args[0]))
        except (TypeError, ValueError, IndexError) as exc:
            raise SpecError(f"{where} ({node['layer']}): {exc}") from None
    outputs = [tensor(ref, f"graph.outputs[{i}]") for i, ref in enumerate(graph["outputs"])]
    if len(inputs) != 1 or len(outputs) != 1:
        raise SpecError("a DCNNetwork graph has one input and one output")
    return inputs[0], outputs[0]
