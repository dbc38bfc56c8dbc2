"""Symbolic tensors and nodes: what calling a layer on ``Input(...)`` records (the functional API).

A ``SymbolicTensor`` is an edge of the graph: a shape (without the batch axis) and the node that
makes it, no data.  A ``Node`` is one call of a layer: the layer, its input tensors and its output
tensor.  A layer is not a node: one layer called twice makes two nodes that share its weights,
and what each call keeps for backward belongs to its node (``dcnn.layers.graph.Graph`` runs them).
"""
from __future__ import annotations

import itertools

_ids = itertools.count()


class SymbolicTensor:
    """A tensor of a graph being defined: ``shape`` excludes the batch axis."""

    def __init__(self, shape: tuple, node: "Node | None" = None, name: str | None = None):
        self.shape = tuple(int(d) for d in shape)
        self.node = node            # None for a graph input
        self.name = name
        self.id = next(_ids)        # creation order: a stable tie-break for the graph's order

    @property
    def ndim(self) -> int:
        return len(self.shape) + 1

    def __repr__(self) -> str:
        made_by = "input" if self.node is None else self.node.layer.name
        return f"<SymbolicTensor shape=(N, {', '.join(map(str, self.shape))}) from {made_by}>"


class Node:
    """One call of ``layer`` on ``inputs`` (a list of SymbolicTensors), making ``output``."""

    def __init__(self, layer, inputs: list[SymbolicTensor], output_shape: tuple, many: bool):
        self.layer, self.inputs = layer, list(inputs)
        self.many = many            # the layer takes a list (a merge), not one tensor
        self.output = SymbolicTensor(output_shape, self)

    def __repr__(self) -> str:
        return f"<Node {self.layer.name}({', '.join(repr(t) for t in self.inputs)})>"


def Input(shape, name: str | None = None) -> SymbolicTensor:
    """A graph's input: ``shape`` without the batch axis, e.g. ``Input((3, 32, 32))``."""
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"Input shape must be a tuple of ints such as (3, 32, 32); got {shape!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"Input shape must be positive sizes (batch axis excluded); got {shape}")
    return SymbolicTensor(shape, None, name)


def is_symbolic(x) -> bool:
    """True for a SymbolicTensor or a non-empty list/tuple of them (the input of a merge)."""
    if isinstance(x, SymbolicTensor):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, SymbolicTensor) for t in x)


def call_symbolic(layer, x) -> SymbolicTensor:
    """Record ``layer(x)`` as a node; shapes are checked now, so a misfit fails at the line that made it."""
    many = isinstance(x, (list, tuple))
    if many != bool(getattr(layer, "takes_many", False)):
        what = "a list of tensors" if layer.takes_many else "one tensor"
        raise TypeError(f"{layer.name} ({type(layer).__name__}) takes {what}; got "
                        f"{'a list of ' + str(len(x)) if many else 'one tensor'}")
    inputs = list(x) if many else [x]
    shapes = [t.shape for t in inputs] if many else inputs[0].shape
    try:
        out = layer.output_shape(shapes)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{layer.name} cannot take input {fmt_shapes(shapes)}: {exc}") from None
    return Node(layer, inputs, out, many).output


def fmt_shapes(shapes) -> str:
    if shapes and isinstance(shapes[0], tuple):
        return "[" + ", ".join(fmt_shapes(s) for s in shapes) + "]"
    return "(N, " + ", ".join(map(str, shapes)) + ")"
