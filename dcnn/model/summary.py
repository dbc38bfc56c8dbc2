"""What ``DCNNetwork.summary()`` prints and ``parameter_counts()`` returns."""
from __future__ import annotations

import numpy as np


def parameter_counts(net) -> tuple[int, int]:
    """(trainable, non-trainable): frozen weights and float buffers (BatchNorm's running statistics)
    count as non-trainable, as in Keras."""
    trainable = frozen = 0
    for _, layer in net.model.named_layers():
        count = layer.param_count()
        if layer.trainable:
            trainable += count
        else:
            frozen += count
        frozen += sum(int(np.prod(b.shape)) for b in layer.buffers.values()
                      if "float" in str(getattr(b, "dtype", "")))
    return trainable, frozen


def summary(net, print_fn=print):
    """Each layer's output shape and parameter count, and the trainable and non-trainable totals.

    Prints the table with ``print_fn`` and returns None, as Keras does (so a notebook shows it
    once); ``print_fn=None`` returns the text instead of printing it.
    """
    rows = _graph_rows(net) if net.is_graph else _chain_rows(net)
    columns = len(rows[0])
    widths = [max(len(r[c]) for r in rows) for c in range(columns)]
    fmt = lambda r: "  ".join(v.rjust(w) if c == 3 else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip()
    rule = "-" * len(fmt(rows[0]))
    trainable, frozen = parameter_counts(net)
    text = "\n".join([fmt(r) for r in rows[:1]] + [rule] + [fmt(r) for r in rows[1:]] + [rule,
                     f"total parameters: {trainable + frozen:,}  (trainable: {trainable:,}, "
                     f"non-trainable: {frozen:,})",
                     f"backend: {net.backend.describe()}"])
    if print_fn is None:
        return text
    print_fn(text)
    return None


def _shape(shape) -> str:
    return str(("N",) + tuple(shape)).replace("'", "")


def _chain_rows(net) -> list[tuple]:
    rows = [("#", "layer", "output shape", "params"), ("", "input", _shape(net.input_shape), "")]
    shape = net.input_shape
    for i, layer in enumerate(net.layers):
        shape = layer.output_shape(shape)
        rows += _layer_rows(layer, str(i), _shape(shape))
    return rows


def _graph_rows(net) -> list[tuple]:
    """A row per call, with the calls it reads ("connected to", as Keras prints it); a shared
    layer's parameters are counted at its first call."""
    graph = net.model
    labels = graph.node_labels()
    rows = [("#", "layer", "output shape", "params", "connected to")]
    for i, t in enumerate(graph.inputs):
        rows.append(("", graph.producer_label(t, labels), _shape(t.shape), "", ""))
    counted = set()
    for node in graph.nodes:
        source = ", ".join(graph.producer_label(t, labels) for t in node.inputs)
        first = node.layer not in counted
        counted.add(node.layer)
        for row in _layer_rows(node.layer, labels[node], _shape(node.output.shape), count=first):
            rows.append(row + (source if row[0] == labels[node] else "",))
    return rows


def _layer_rows(layer, key: str, shape: str, count: bool = True) -> list[tuple]:
    """The layer's row, then its sublayers' (indented), as ``named_modules`` walks them."""
    rows = []
    for sub_key, sub in layer.named_modules(key):
        depth = sub_key.count(".")
        name = type(sub).__name__ if any(True for _ in sub.children()) else sub.describe()
        rows.append((sub_key, "  " * depth + name, shape if sub is layer else "",
                     f"{sub.param_count():,}" if count else "(shared)"))
    return rows
