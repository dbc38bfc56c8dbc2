"""Seeded random graphs against PyTorch: DAGs of today's layers and the merges, with fan-out,
concatenations of 2-4 branches, broadcast multiplies (gates of shape (N, C, 1, 1)), shared
layers called twice and nested Sequential/Residual containers.  For each graph its PyTorch twin
is built from the same spec (``to_torch``), and the outputs, the input gradient, every parameter
gradient and the weights after three optimiser steps must match, in float64 and in float32.

CI runs a fixed 20 graphs; ``DCNN_ORACLE_GRAPHS=200 python -m pytest tests/test_graph_oracle.py``
runs the full 200.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the oracle; install it with pip install -e '.[test]'")

import backends  # noqa: E402
from dcnn import (Add, AvgPool2D, Average, BatchNorm2D, Concatenate, Conv2D, Dense, FeatureMapNorm,  # noqa: E402
                  Flatten, GlobalAvgPool2D, Input, MaxPool2D, Multiply, ReLU, Residual, Sequential, Subtract)
from dcnn.io.torch_model import load_into_torch, to_torch  # noqa: E402
from dcnn.layers.graph import Graph  # noqa: E402
from dcnn.model.losses import SoftmaxCrossEntropy  # noqa: E402
from dcnn.model.optimizers import SGD  # noqa: E402
from dcnn.model.parameters import FlatParameters  # noqa: E402

torch.set_num_threads(2)
GRAPHS = int(os.environ.get("DCNN_ORACLE_GRAPHS", "20"))
TOLERANCE = {"float64": dict(rtol=1e-9, atol=1e-10), "float32": dict(rtol=2e-3, atol=2e-4)}


def same_size_layer(rng, channels):
    """A layer that keeps (H, W): a padded odd convolution, a ReLU, a norm, or a container of them."""
    kind = rng.choice(["conv", "conv", "relu", "bn", "fmn", "seq", "res"])
    if kind == "conv":
        k = int(rng.choice([1, 3, 5]))
        return Conv2D(int(rng.integers(1, 6)), k, 1, k // 2, use_bias=bool(rng.integers(2)))
    if kind == "relu":
        return ReLU(None if rng.integers(3) else 1.5)
    if kind == "bn":
        return BatchNorm2D()
    if kind == "fmn":
        return FeatureMapNorm()
    if kind == "seq":
        return Sequential([Conv2D(int(rng.integers(1, 6)), 3, 1, 1), ReLU()])
    shortcut = None if rng.integers(2) else Sequential([Conv2D(channels, 1, use_bias=False), BatchNorm2D()])
    return Residual([Conv2D(channels, 3, 1, 1, use_bias=False), BatchNorm2D(), ReLU(), Conv2D(channels, 3, 1, 1)],
                    shortcut)


def random_graph(seed):
    """(input shape, Input tensor, output tensor, the kinds of structure drawn)."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(5, 9))
    shape = (int(rng.integers(1, 4)), size, size)
    x = Input(shape)
    pool, kinds = [x], set()
    shared = {}
    for _ in range(int(rng.integers(3, 8))):
        op = rng.choice(["layer", "layer", "concat", "gate", "merge", "shared", "shrink"])
        t = pool[int(rng.integers(len(pool)))]
        c, h, w = t.shape
        if len(pool) > 1 and t is not pool[-1]:
            kinds.add("fan-out")
        if op == "layer" or (op in ("concat", "merge") and len(pool) < 1):
            pool.append(same_size_layer(rng, c)(t))
        elif op == "concat":
            branches = [same_size_layer(rng, c)(t) for _ in range(int(rng.integers(2, 5)))]
            pool.append(Concatenate()(branches))
            kinds.add(f"concat{len(branches)}")
        elif op == "gate":              # squeeze-and-excitation: maps times per-channel gates
            gate = Conv2D(c, 1)(AvgPool2D(h)(t)) if rng.integers(2) else Conv2D(c, h)(t)
            pool.append(Multiply()([t, gate]))
            kinds.add("broadcast")
        elif op == "merge":
            other = same_size_layer(rng, c)(t)
            other = Conv2D(c, 1)(other) if other.shape != t.shape else other
            merge = [Add, Subtract, Average, Multiply][int(rng.integers(4))]
            pool.append(merge()([t, other]))
            kinds.add(merge.__name__)
        elif op == "shared":            # one layer, two calls
            key = (c, h)
            layer = shared.get(key) or Conv2D(c, 3, 1, 1, name=f"shared_{len(shared)}")
            shared[key] = layer
            pool.append(layer(ReLU()(layer(t))))
            kinds.add("shared")
        elif h >= 4:
            pool.append((MaxPool2D if rng.integers(2) else AvgPool2D)(2)(t))
    last = pool[-1]
    if last is x:
        last = Conv2D(2, 3, 1, 1)(x)
    head = Dense(int(rng.integers(2, 6)))
    y = head(GlobalAvgPool2D()(last)) if rng.integers(2) else head(Flatten()(last))
    return shape, x, y, kinds


def test_the_graphs_cover_every_structure():
    kinds = set()
    for seed in range(GRAPHS):
        kinds |= random_graph(seed)[3]
    assert {"fan-out", "concat2", "broadcast", "shared", "Add", "Multiply"} <= kinds, kinds
    assert kinds & {"concat3", "concat4"} and kinds & {"Subtract", "Average"}


def _dcnn_step(graph, be, x, y, loss, optimizer, params):
    logits, saved = graph.apply(x)
    value = loss.forward(logits, y)
    graph.zero_grad()
    dx = graph.backprop(loss.backward(), saved)
    grads = [layer.grads[name] for _, layer in graph.named_modules() for name in layer.params]
    optimizer.step(params, params.gather(grads))
    return logits, value, dx, grads


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(GRAPHS))
def test_random_graph_matches_torch(seed, dtype):
    be = backends.resolve("numpy")
    xp = be.xp
    shape, x_in, y_out, _ = random_graph(seed)
    graph = Graph(x_in, y_out)
    graph.build(shape, np.random.default_rng(seed), be)
    graph.set_needs_input_grad(True)
    for _, layer in graph.named_modules():
        layer.params = {k: xp.astype(v, getattr(xp, dtype)) for k, v in layer.params.items()}
        layer.buffers = {k: xp.astype(v, getattr(xp, dtype)) if xp.isdtype(v.dtype, "real floating") else v
                         for k, v in layer.buffers.items()}
    module = to_torch(graph).to(getattr(torch, dtype))
    load_into_torch(module, {k: be.to_numpy(v) for k, v in graph.state().items()})
    module.train()
    graph.train(True)
    rng = np.random.default_rng(seed + 1000)
    x = rng.standard_normal((4,) + shape).astype(dtype)
    classes = y_out.shape[0]
    labels = rng.integers(0, classes, 4)
    refs = [(key, layer.params, name) for key, layer in graph.named_modules() for name in layer.params]
    params = FlatParameters(be, [(f"{k}.{n}", holder, n) for k, holder, n in refs])
    # SGD with momentum and weight decay, whose step is proportional to the gradient.  (Adam is not
    # fit for this comparison: a parameter whose gradient is zero in exact arithmetic, such as a bias
    # before a normalisation, gets steps of +-lr from rounding noise.  Adam's update itself is checked
    # against torch.optim.Adam in tests/test_torch_oracle.py.)
    optimizer = SGD(lr=0.05, momentum=0.9, weight_decay=1e-3)
    torch_optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    loss = SoftmaxCrossEntropy()
    tol = TOLERANCE[dtype]
    what = f"graph {seed} ({dtype}): input {shape}, {len(graph.nodes)} calls"
    for step in range(3):
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        torch_optimizer.zero_grad()
        logits_t = module(xt)
        torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(labels)).backward()
        grads_t = {k: p.grad.numpy().copy() for k, p in module.named_parameters()}
        torch_optimizer.step()
        logits, _, dx, grads = _dcnn_step(graph, be, be.from_numpy(x), be.from_numpy(labels), loss, optimizer, params)
        np.testing.assert_allclose(be.to_numpy(logits), logits_t.detach().numpy(), **tol,
                                   err_msg=f"step {step} output: {what}")
        np.testing.assert_allclose(be.to_numpy(dx), xt.grad.numpy(), **tol, err_msg=f"step {step} dx: {what}")
        for (key, _, name), g in zip(refs, grads):
            full = f"{key}.{name}"
            np.testing.assert_allclose(be.to_numpy(g), grads_t[full], **tol, err_msg=f"step {step} d{full}: {what}")
    state = {k: be.to_numpy(v) for k, v in graph.state().items()}
    for key, value in module.state_dict().items():
        np.testing.assert_allclose(state[key], value.numpy(), **tol, err_msg=f"after 3 steps, {key}: {what}")
