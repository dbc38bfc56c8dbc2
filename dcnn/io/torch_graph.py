"""The PyTorch twin of a dcnn graph: a generated ``nn.Module`` with the same names and weights.

Its submodules are the graph's layers under their names, so ``state_dict()`` has the graph's
keys (``stem.weight``...), and its ``forward`` replays the graph's calls in the same order; a
shared layer is one submodule called at each of its nodes, and the merges are torch operators.
``dcnn.io.torch_model.to_torch(graph)`` builds it.
"""
from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as exc:   # pragma: no cover - depends on the environment
    raise ImportError("dcnn.io.torch_graph needs PyTorch: pip install -e '.[test]' or pip install torch") from exc

from ..layers.merge import Add, Average, Concatenate, Multiply, Subtract


def _merge(layer):
    if isinstance(layer, Add):
        return lambda xs: sum(xs[1:], xs[0])
    if isinstance(layer, Subtract):
        return lambda xs: xs[0] - xs[1]
    if isinstance(layer, Multiply):
        def product(xs):
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return y
        return product
    if isinstance(layer, Average):
        return lambda xs: sum(xs[1:], xs[0]) / len(xs)
    if isinstance(layer, Concatenate):
        return lambda xs: torch.cat(xs, dim=layer.axis)
    raise TypeError(f"no torch operator known for the merge {type(layer).__name__}")


class TorchGraph(nn.Module):
    """``modules``: the torch module of each stateful or one-input layer, by the layer's name."""

    def __init__(self, graph, modules: dict):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.multiple_inputs = graph.multiple_inputs
        self.multiple_outputs = graph.multiple_outputs
        index = {node: k for k, node in enumerate(graph.nodes)}
        inputs = {t.id: i for i, t in enumerate(graph.inputs)}
        ref = lambda t: ("input", inputs[t.id]) if t.node is None else ("node", index[t.node])
        self.calls = [(node.layer.name, _merge(node.layer) if node.many else None, [ref(t) for t in node.inputs])
                      for node in graph.nodes]
        self.outputs = [ref(t) for t in graph.outputs]

    def forward(self, x):
        inputs = list(x) if self.multiple_inputs else [x]
        outs = []
        pick = lambda r: inputs[r[1]] if r[0] == "input" else outs[r[1]]
        for name, merge, refs in self.calls:
            args = [pick(r) for r in refs]
            outs.append(merge(args) if merge is not None else getattr(self, name)(args[0]))
        results = [pick(r) for r in self.outputs]
        return results if self.multiple_outputs else results[0]
