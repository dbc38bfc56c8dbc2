"""Seeded random architectures against PyTorch: stacks of convolutions (odd sizes, strides,
paddings, outputs larger than inputs), max and average pools, BatchNorm, residual blocks
(identity and projection), global pooling and dense layers.  Forward in training mode,
the input gradient and every parameter gradient must match the equivalent torch.nn module."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the oracle; install it with pip install -e '.[test]'")

import backends  # noqa: E402
from dcnn import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Residual,
                  Sequential)
from dcnn.layers import projection  # noqa: E402
from dcnn.io.torch_model import load_into_torch, to_torch  # noqa: E402

torch.set_num_threads(2)
ARCHITECTURES = 30


def random_layer(rng, shape):
    """One random layer that fits ``shape`` (C, H, W), or None if the draw does not fit."""
    c, h, w = shape
    kind = rng.choice(["conv", "conv", "bigger", "pool", "avg", "norm", "relu", "residual", "residual"])
    if kind == "conv":
        k = int(rng.integers(1, 6))
        return Conv2D(int(rng.integers(1, 7)), k, int(rng.integers(1, 4)), int(rng.integers(0, k + 1)),
                      use_bias=bool(rng.integers(2)))
    if kind == "bigger":          # stride 1 and p < k < 2p + 1: the output is larger than the input
        p = int(rng.integers(1, 3))
        return Conv2D(int(rng.integers(1, 6)), int(rng.integers(p + 1, 2 * p + 1)), 1, p)
    if kind in ("pool", "avg"):
        k = int(rng.integers(2, 4))
        cls = MaxPool2D if kind == "pool" else AvgPool2D
        return cls(k, int(rng.integers(1, k + 1)))
    if kind == "norm":
        return BatchNorm2D()
    if kind == "relu":
        return ReLU(None if rng.integers(3) else 2.0)
    stride = int(rng.integers(1, 3))
    filters = c if stride == 1 and rng.integers(2) else int(rng.integers(2, 7))
    body = [Conv2D(filters, 3, stride, 1, use_bias=False), BatchNorm2D(), ReLU(), Conv2D(filters, 3, 1, 1)]
    if rng.integers(2):
        body.append(BatchNorm2D())
    identity = stride == 1 and filters == c
    return Residual(body, None if identity else projection(filters, stride, batch_norm=bool(rng.integers(2))))


def random_architecture(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(5, 14)), int(rng.integers(5, 14)))
    layers, current = [], shape
    for _ in range(int(rng.integers(2, 7))):
        layer = random_layer(rng, current)
        try:
            out = layer.output_shape(current)
        except ValueError:
            continue
        if min(out[1:]) < 1 or (isinstance(layer, BatchNorm2D) and out[1] * out[2] < 2):
            continue
        layers.append(layer)
        current = out
    if rng.integers(2):
        layers += [GlobalAvgPool2D(), Dense(int(rng.integers(2, 6)))]
    else:
        layers += [Flatten(), Dense(int(rng.integers(3, 9))), ReLU(), Dense(int(rng.integers(2, 6)))]
    return shape, layers


def test_the_architectures_cover_the_tricky_cases():
    kinds = set()
    for seed in range(ARCHITECTURES):
        shape, layers = random_architecture(seed)
        for layer in Sequential(layers).named_modules():
            layer = layer[1]
            if isinstance(layer, Conv2D) and layer.stride == (1, 1) and layer.pads[0] < layer.kernel_size[0] < 2 * layer.pads[0] + 1:
                kinds.add("bigger")
            kinds.add(type(layer).__name__ + ("_proj" if isinstance(layer, Residual) and layer.shortcut else ""))
    assert {"bigger", "Residual", "Residual_proj", "AvgPool2D", "MaxPool2D", "BatchNorm2D"} <= kinds


@pytest.mark.parametrize("seed", range(ARCHITECTURES))
def test_random_architecture_matches_torch(seed):
    be = backends.resolve("numpy")
    shape, layers = random_architecture(seed)
    model = Sequential(layers)
    model.build(shape, np.random.default_rng(seed), be)
    module = to_torch(model)
    load_into_torch(module, {k: be.to_numpy(v) for k, v in model.state().items()})
    module.train()
    x = np.random.default_rng(seed + 1000).standard_normal((4,) + shape).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    y = model.forward(be.from_numpy(x))
    what = f"architecture {seed}: input {shape}, {model.describe()}"
    np.testing.assert_allclose(be.to_numpy(y), yt.detach().numpy(), rtol=1e-4, atol=1e-4, err_msg=what)
    dy = np.random.default_rng(seed + 2000).standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    dx = model.backward(be.from_numpy(dy))
    np.testing.assert_allclose(be.to_numpy(dx), xt.grad.numpy(), rtol=1e-3, atol=1e-4, err_msg="dx: " + what)
    modules = dict(model.named_modules())
    for key, param in module.named_parameters():
        prefix, name = key.rsplit(".", 1)
        np.testing.assert_allclose(be.to_numpy(modules[prefix].grads[name]), param.grad.numpy(), rtol=1e-3,
                                   atol=1e-4, err_msg=f"d{key}: " + what)
