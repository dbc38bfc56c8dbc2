"""Graph: a container that runs a DAG of layer calls, from ``Input`` tensors to outputs.

``Graph(inputs, outputs)`` is what ``DCNNetwork(inputs=x, outputs=y)`` holds.  Its children are
its distinct layers by name, so its state-dict keys are ``<name>.<torch param>``.  The nodes run
in a topological order; chains of one-input layers whose links feed nothing else run as one
``run_order`` sequence (BatchNorm+ReLU fused, ReLU after MaxPool, Conv+MaxPool fused), so a chain
written with the functional API costs what the list form costs.

What a node keeps for backward belongs to that node's entry in the saved list, never to its
layer, so one layer may be called at several nodes (shared weights, summed gradients).  Backward
runs in reverse order, frees each node's saved values as soon as its backward has run, and sums
the gradients of a tensor that feeds several nodes as they arrive.
"""
from __future__ import annotations

from backends import backend_of

from .base import Layer, snake_case
from .container import apply_steps, backprop_steps, run_order
from .symbolic import SymbolicTensor, fmt_shapes


class _Step:
    """One unit of execution: a chain of one-input nodes (run as ``run_order`` steps) or a merge."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.inputs = nodes[0].inputs
        self.output = nodes[-1].output
        self.merge = nodes[0].many
        self.steps = None if self.merge else run_order([n.layer for n in nodes])

    def apply(self, args):
        if self.merge:
            return self.nodes[0].layer.apply(args)
        return apply_steps(self.steps, args[0])

    def backprop(self, dy, saved) -> list:
        if self.merge:
            return list(self.nodes[0].layer.backprop(dy, saved))
        return [backprop_steps(dy, saved)]


class Graph(Layer):
    """The layers called from ``inputs`` (a SymbolicTensor or a list) to ``outputs`` (likewise)."""

    def __init__(self, inputs, outputs):
        super().__init__()
        self.multiple_inputs = isinstance(inputs, (list, tuple))
        self.multiple_outputs = isinstance(outputs, (list, tuple))
        self.inputs = _tensors(inputs, "inputs")
        self.outputs = _tensors(outputs, "outputs")
        self.nodes = _topological_nodes(self.inputs, self.outputs)
        self.layers = list(dict.fromkeys(node.layer for node in self.nodes))
        _name_layers(self.layers)
        self.plan = _plan(self.nodes, self.outputs)
        uses = {}
        for step in self.plan:
            for t in step.inputs:
                uses[t.id] = uses.get(t.id, 0) + 1
        self._uses = uses

    # --- the layer tree ---------------------------------------------------------------------------
    def children(self):
        return [(layer.name, layer) for layer in self.layers]

    def describe(self) -> str:
        return f"Graph({len(self.layers)} layers, {len(self.nodes)} calls)"

    def node_labels(self) -> dict:
        """A label per node: the layer's name, then ``name#2``... for a layer's later calls."""
        seen, labels = {}, {}
        for node in self.nodes:
            seen[node.layer] = seen.get(node.layer, 0) + 1
            labels[node] = node.layer.name + ("" if seen[node.layer] == 1 else f"#{seen[node.layer]}")
        return labels

    def producer_label(self, tensor: SymbolicTensor, labels: dict) -> str:
        if tensor.node is None:
            i = next(i for i, t in enumerate(self.inputs) if t is tensor)
            return tensor.name or ("input" if len(self.inputs) == 1 else f"input_{i}")
        return labels[tensor.node]

    # --- shapes and building ----------------------------------------------------------------------
    def _shapes(self, tensors, many):
        return [t.shape for t in tensors] if many else tensors[0].shape

    def output_shape(self, input_shape):
        expected = self._shapes(self.inputs, self.multiple_inputs)
        if tuple(input_shape) != tuple(expected):
            raise ValueError(f"this graph takes input {fmt_shapes(expected)}; got {fmt_shapes(tuple(input_shape))}")
        return self._shapes(self.outputs, self.multiple_outputs)

    def build(self, input_shape, rng, backend):
        self.output_shape(input_shape)
        first = {}
        for node in self.nodes:
            layer, shapes = node.layer, self._shapes(node.inputs, node.many)
            if layer not in first:
                first[layer] = shapes
                if not layer.built:
                    layer.build(shapes, rng, backend)
            elif shapes != first[layer] and any(sub.params or sub.buffers for _, sub in layer.named_modules()):
                raise ValueError(f"{layer.name} is shared, and its weights were made for input "
                                 f"{fmt_shapes(first[layer])}; a later call gives it {fmt_shapes(shapes)}")
        super().build(input_shape, rng, backend)

    def set_needs_input_grad(self, value: bool) -> None:
        # A layer must return dL/dx unless every call of it reads only graph inputs that need none.
        self.needs_input_grad = value
        graph_inputs = {t.id for t in self.inputs}
        for layer in self.layers:
            calls = [n for n in self.nodes if n.layer is layer]
            internal = any(t.id not in graph_inputs for n in calls for t in n.inputs)
            layer.set_needs_input_grad(value or internal)

    # --- computing --------------------------------------------------------------------------------
    def apply(self, x):
        xs = list(x) if self.multiple_inputs else [x]
        if len(xs) != len(self.inputs):
            raise ValueError(f"this graph takes {len(self.inputs)} inputs; got {len(xs)}")
        values = {t.id: v for t, v in zip(self.inputs, xs)}
        left = dict(self._uses)
        saved = []
        for step in self.plan:
            y, step_saved = step.apply([values[t.id] for t in step.inputs])
            saved.append(step_saved)
            values[step.output.id] = y
            for t in step.inputs:           # an activation no later step reads is let go
                left[t.id] -= 1
                if left[t.id] == 0 and all(t is not o for o in self.outputs):
                    del values[t.id]
        outs = [values[t.id] for t in self.outputs]
        return (outs if self.multiple_outputs else outs[0]), saved

    def backprop(self, dy, saved):
        grads = {}
        dys = list(dy) if self.multiple_outputs else [dy]
        for t, g in zip(self.outputs, dys):
            _accumulate(grads, t, g)
        for i in range(len(self.plan) - 1, -1, -1):
            step, step_saved = self.plan[i], saved.pop()
            g = grads.pop(step.output.id, None)
            if g is None:                   # nothing downstream reaches the loss
                continue
            for t, dx in zip(step.inputs, step.backprop(g, step_saved)):
                if dx is not None:
                    _accumulate(grads, t, dx)
            del step_saved                   # this node's forward values go now
        if not self.needs_input_grad:
            return None
        dxs = [grads.get(t.id) for t in self.inputs]
        return dxs if self.multiple_inputs else dxs[0]

    def forward_stages(self, x, key: str = ""):
        """Every node's output, node by node (nested containers show their own steps)."""
        values = {t.id: v for t, v in zip(self.inputs, list(x) if self.multiple_inputs else [x])}
        labels = self.node_labels()
        for node in self.nodes:
            label = f"{key}.{labels[node]}" if key else labels[node]
            if node.many:
                y = node.layer.apply([values[t.id] for t in node.inputs])[0]
                yield label, node.layer, y
            else:
                for stage in node.layer.forward_stages(values[node.inputs[0].id], label):
                    yield stage
                y = stage[2]
            values[node.output.id] = y

    def logits_graph(self, is_softmax) -> "Graph":
        """The same graph without a trailing Softmax (the loss fuses it), or itself."""
        if self.multiple_outputs or self.outputs[0].node is None or not is_softmax(self.outputs[0].node.layer):
            return self
        inner = self.outputs[0].node.inputs[0]
        return Graph(self.inputs if self.multiple_inputs else self.inputs[0], inner)


def _accumulate(grads: dict, tensor, g) -> None:
    # A fan-out's gradients are summed as they arrive, out of place: a consumer's dx may be the
    # very array another consumer received (Add hands dy to each input), so it is never written into.
    grads[tensor.id] = g if tensor.id not in grads else backend_of(g).add(grads[tensor.id], g)


def _tensors(value, what: str) -> list[SymbolicTensor]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(t, SymbolicTensor) for t in items):
        raise TypeError(f"a graph's {what} must be tensors made by Input(...) or by calling layers on them; "
                        f"got {value!r}")
    return items


def _topological_nodes(inputs, outputs) -> list:
    """The nodes that the outputs depend on, each after the nodes it reads (depth-first, in input order)."""
    given = {t.id for t in inputs}
    order, state = [], {}
    for out in outputs:
        stack = [(out, False)]
        while stack:
            tensor, expanded = stack.pop()
            node = tensor.node
            if node is None:
                if tensor.id not in given:
                    raise ValueError(f"the outputs depend on an Input of shape {fmt_shapes(tensor.shape)} "
                                     "that is not among the graph's inputs")
                continue
            if expanded:
                if state.get(node) != "done":
                    state[node] = "done"
                    order.append(node)
                continue
            if state.get(node) == "done":
                continue
            if state.get(node) == "open":
                continue
            state[node] = "open"
            stack.append((tensor, True))
            stack.extend((t, False) for t in reversed(node.inputs))
    return order


def _name_layers(layers) -> None:
    """Unique names within the model: given names are kept (a repeat is an error), the others get
    Keras's ``conv2d``, ``conv2d_1``... in the order the graph first calls them."""
    given = [layer.name for layer in layers if layer.has_name]
    repeated = sorted({n for n in given if given.count(n) > 1})
    if repeated:
        raise ValueError(f"layer names must be unique within a model; {', '.join(map(repr, repeated))} "
                         "name more than one layer")
    taken = set(given)
    for layer in layers:
        if layer.has_name:
            continue
        base, n = snake_case(type(layer).__name__), 0
        name = base
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        layer.name = name
        taken.add(name)


def _plan(nodes, outputs) -> list[_Step]:
    """Nodes grouped into steps: a one-input node joins the chain of the node before it when that
    node's output feeds it alone (and is no graph output)."""
    consumers = {}
    for node in nodes:
        for t in node.inputs:
            consumers[t.id] = consumers.get(t.id, 0) + 1
    output_ids = {t.id for t in outputs}
    steps, chain_of = [], {}
    for node in nodes:
        if not node.many:
            t = node.inputs[0]
            prev = chain_of.get(t.id)
            if prev is not None and consumers[t.id] == 1 and t.id not in output_ids:
                prev.append(node)
                del chain_of[t.id]
                chain_of[node.output.id] = prev
                continue
        chain = [node]
        steps.append(chain)
        if not node.many:
            chain_of[node.output.id] = chain
    return [_Step(chain) for chain in steps]
