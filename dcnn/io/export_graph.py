"""ONNX for a dcnn graph: each node becomes the ONNX operators of its layer, in the graph's order,
each merge a standard operator (Add, Sub, Mul, Mean, Concat, with ONNX's NumPy-style broadcasting)."""
from __future__ import annotations

from ..layers.merge import Add, Average, Concatenate, Multiply, Subtract


def add_graph(onnx_graph, graph, x: str, where: str, add_layer) -> str:
    """Append ``graph``'s nodes to ``onnx_graph`` reading tensor ``x``; returns the output tensor's name.
    ``add_layer(onnx_graph, layer, x, where)`` maps one layer (dcnn.io.export's mapping)."""
    if graph.multiple_inputs or graph.multiple_outputs:
        raise ValueError(f"{where}: ONNX export takes graphs with one input and one output")
    names = {graph.inputs[0].id: x}
    labels = graph.node_labels()
    for node in graph.nodes:
        args = [names[t.id] for t in node.inputs]
        label = f"{where}.{labels[node]}" if where else labels[node]
        if node.many:
            names[node.output.id] = _merge(onnx_graph, node.layer, args, label)
        else:
            shape = node.inputs[0].shape
            onnx_graph.current_channels = shape[0] if len(shape) == 3 else None
            names[node.output.id] = add_layer(onnx_graph, node.layer, args[0], label)
    return names[graph.outputs[0].id]


def _merge(g, layer, args, where) -> str:
    if isinstance(layer, Add):
        return _fold(g, "Add", args)
    if isinstance(layer, Multiply):
        return _fold(g, "Mul", args)
    if isinstance(layer, Subtract):
        return g.node("Sub", args)
    if isinstance(layer, Average):
        return g.node("Mean", args)
    if isinstance(layer, Concatenate):
        return g.node("Concat", args, axis=layer.axis)
    raise ValueError(f"{where}: {type(layer).__name__} has no ONNX mapping")


def _fold(g, op, args) -> str:
    y = g.node(op, args[:2])
    for x in args[2:]:
        y = g.node(op, [y, x])
    return y
