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


# --- issue 20: every new layer, drawn with random hyperparameters -----------------------------------------
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from torch_compare import compare_layers, compare_training  # noqa: E402
from dcnn.layers.activations import (ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, ReLU6, Sigmoid,  # noqa: E402
                                     SiLU, Tanh)
from dcnn.layers.conv import DepthwiseConv2D  # noqa: E402
from dcnn.layers.conv_variants import Conv2DTranspose, SeparableConv2D  # noqa: E402
from dcnn.layers.normalization import BatchNorm1D, GroupNorm, LayerNorm  # noqa: E402
from dcnn.layers.pooling import GlobalMaxPool2D  # noqa: E402
from dcnn.layers.resampling import Cropping2D, UpSampling2D, ZeroPadding2D  # noqa: E402
from dcnn.layers.shape import Identity, Reshape  # noqa: E402

FAMILY_ARCHITECTURES = 40
FAMILY_KINDS = ["grouped", "depthwise", "separable", "transpose", "upsample", "pool_padded", "norm", "activation",
                "pad_crop", "reshape", "residual"]
ACTIVATION_MAKERS = [lambda r: LeakyReLU(float(r.uniform(0.01, 0.3))), lambda r: ELU(float(r.uniform(0.3, 1.5))),
                     lambda r: ReLU6(), lambda r: Sigmoid(), lambda r: Tanh(), lambda r: SiLU(), lambda r: GELU(),
                     lambda r: GELU("tanh"), lambda r: HardSigmoid(), lambda r: HardSwish()]


def _divisor(rng, n):
    return int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))


def family_layer(rng, shape):
    """One random layer of issue 20's families that may fit ``shape`` (the caller checks)."""
    c, h, w = shape
    kind = FAMILY_KINDS[int(rng.integers(len(FAMILY_KINDS)))]
    pair = lambda lo, hi: (int(rng.integers(lo, hi)), int(rng.integers(lo, hi)))
    if kind == "grouped":
        groups = _divisor(rng, c)
        filters = groups * int(rng.integers(1, 4))
        stride, dilation = pair(1, 3), pair(1, 3)
        if stride == (1, 1) and rng.integers(3) == 0:
            padding = "same"
        else:
            padding = pair(0, 3)
        return Conv2D(filters, pair(1, 5), stride, padding, dilation, groups, use_bias=bool(rng.integers(2)))
    if kind == "depthwise":
        return DepthwiseConv2D(pair(1, 5), pair(1, 3), pair(0, 3), int(rng.integers(1, 3)), pair(1, 3),
                               use_bias=bool(rng.integers(2)))
    if kind == "separable":
        return SeparableConv2D(int(rng.integers(1, 6)), pair(1, 4), pair(1, 3), pair(0, 2), int(rng.integers(1, 3)),
                               use_bias=bool(rng.integers(2)))
    if kind == "transpose":
        stride, dilation = pair(1, 4), pair(1, 3)
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        groups = _divisor(rng, c)
        return Conv2DTranspose(groups * int(rng.integers(1, 3)), pair(1, 4), stride, pair(0, 2), output_padding,
                               groups, dilation, use_bias=bool(rng.integers(2)))
    if kind == "upsample":
        return UpSampling2D(pair(1, 3), "bilinear" if rng.integers(2) else "nearest")
    if kind == "pool_padded":
        k = int(rng.integers(2, 4))
        cls = MaxPool2D if rng.integers(2) else AvgPool2D
        return cls(k, int(rng.integers(1, k + 1)), int(rng.integers(0, k // 2 + 1)))
    if kind == "norm":
        return [LayerNorm(), GroupNorm(_divisor(rng, c))][int(rng.integers(2))]
    if kind == "activation":
        return ACTIVATION_MAKERS[int(rng.integers(len(ACTIVATION_MAKERS)))](rng)
    if kind == "pad_crop":
        edges = ((int(rng.integers(0, 3)), int(rng.integers(0, 3))), (int(rng.integers(0, 3)), int(rng.integers(0, 3))))
        return ZeroPadding2D(edges) if rng.integers(2) else Cropping2D(edges)
    if kind == "reshape":
        return Reshape((c, w, h)) if rng.integers(2) else Identity()
    body = [DepthwiseConv2D(3, 1, 1, use_bias=False), BatchNorm2D(), ReLU6(), Conv2D(c, 1), GroupNorm(_divisor(rng, c))]
    return Residual(body)


def family_architecture(seed):
    rng = np.random.default_rng(10_000 + seed)
    shape = (int(rng.integers(1, 5)), int(rng.integers(4, 12)), int(rng.integers(4, 12)))
    layers, current = [], shape
    for _ in range(int(rng.integers(2, 6))):
        layer = family_layer(rng, current)
        try:
            out = layer.output_shape(current)
        except ValueError:
            continue
        if len(out) != 3 or min(out[1:]) < 1 or out[1] * out[2] > 400 or out[0] > 12:
            continue
        layers.append(layer)
        current = out
    head = [GlobalMaxPool2D(keepdims=bool(rng.integers(2)))] if rng.integers(2) else [Flatten()]
    if len(head[0].output_shape(current)) == 3:
        head.append(Flatten())
    head += [Dense(int(rng.integers(3, 7)))]
    if rng.integers(2):
        head += [BatchNorm1D(), ACTIVATION_MAKERS[int(rng.integers(len(ACTIVATION_MAKERS)))](rng)]
    return shape, layers + head


def test_the_family_architectures_cover_every_new_layer():
    seen = set()
    for seed in range(FAMILY_ARCHITECTURES):
        for _, layer in Sequential(family_architecture(seed)[1]).named_modules():
            seen.add(type(layer).__name__)
            if isinstance(layer, Conv2D) and not isinstance(layer, DepthwiseConv2D):
                seen |= {"groups"} if layer.groups > 1 else set()
                seen |= {"dilation"} if layer.dilation != (1, 1) else set()
            if isinstance(layer, Conv2DTranspose):
                seen |= {"output_padding"} if any(layer.output_padding) else set()
                seen |= {"transpose_stride"} if layer.stride != (1, 1) else set()
    wanted = {"DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "UpSampling2D", "LayerNorm", "GroupNorm",
              "ZeroPadding2D", "Cropping2D", "Reshape", "GlobalMaxPool2D", "BatchNorm1D", "Residual", "groups",
              "dilation", "output_padding", "transpose_stride"}
    assert wanted <= seen, f"never drawn: {sorted(wanted - seen)}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(FAMILY_ARCHITECTURES))
def test_family_architecture_matches_torch(seed, dtype):
    """Forward (training mode), the input gradient, every parameter gradient, buffers, then three
    SGD steps of the same layers under a classifier head, against torch, in float32 and float64."""
    shape, layers = family_architecture(seed)
    tol = dict(rtol=1e-3, atol=5e-4) if dtype == np.float32 else None
    if dtype == np.float64 and any(isinstance(l, HardSigmoid) for _, l in Sequential(layers).named_modules()):
        tol = dict(rtol=1e-7, atol=1e-9)     # torch's float64 Hardsigmoid takes its slope 1/6 as a float32
    what = f"family architecture {seed} ({dtype.__name__}): input {shape}, {Sequential(layers).describe()}"
    compare_layers(layers, shape, dtype, seed=seed, batch=8, what=what, tol=tol)
    shape, layers = family_architecture(seed)
    compare_training(layers, shape, dtype, seed=seed, what=what, tol=tol)
