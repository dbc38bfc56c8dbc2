"""Every layer's backward pass, and whole networks, against float64 central differences.

Runs on every available backend, including array_api_strict's second device.
"""
import numpy as np
import pytest

from dcnn import (BatchNorm2D, Conv2D, ConvBlock, DCNNetwork, Dense, FeatureMapNorm, Flatten, MaxPool2D, ReLU,
                  Softmax, SoftmaxCrossEntropy)
from helpers import cast_params, directional_check, leaves


def untied(rng, shape, gap=0.05):
    """Values with no ties and no two within ``gap`` (max-pool and ReLU kinks stay put)."""
    values = (rng.permutation(int(np.prod(shape))) - np.prod(shape) / 2.3) * gap
    return values.reshape(shape)


def check_layer(backend, layer, x_host, rng, training=True):
    xp = backend.xp
    x = backend.from_numpy(x_host.astype(np.float64))
    layer.build(tuple(x.shape[1:]), np.random.default_rng(0), backend)
    cast_params(layer, backend, xp.float64)
    layer.train(training)
    names = [(leaf, name) for leaf in leaves(layer) for name in leaf.params]
    params = [leaf.params[name] for leaf, name in names]

    def backward(dy):
        dx = layer.backward(dy)
        return [dx] + [leaf.grads[name] for leaf, name in names]

    directional_check(backend, lambda: layer.forward(x), [x], params, backward, rng)


@pytest.mark.parametrize("filters,k,stride,pad", [(3, 3, 1, 0), (4, 3, 2, 1), (2, 5, 1, 2), (3, 2, 3, 0), (2, 1, 1, 0)])
def test_conv2d(backend, rng, filters, k, stride, pad):
    check_layer(backend, Conv2D(filters, k, stride, pad), rng.standard_normal((2, 3, 7, 8)), rng)


def test_conv2d_fixed_edge_filters_frozen(backend, rng):
    edges = np.array([[[1, 0, -1]] * 3, [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]], np.float32)
    layer = Conv2D(2, kernel=edges, trainable=False)
    x = backend.from_numpy(rng.standard_normal((2, 1, 6, 6)).astype(np.float32))
    layer(x)
    assert layer.params["weight"].shape == (2, 1, 3, 3)
    layer.backward(layer.forward(x))
    assert "weight" not in layer.grads


@pytest.mark.parametrize("size,stride,hw", [(2, None, (6, 6)), (3, 2, (7, 7)), (3, 3, (8, 7)), (2, 1, (5, 4))])
def test_maxpool(backend, rng, size, stride, hw):
    check_layer(backend, MaxPool2D(size, stride), untied(rng, (2, 3) + hw), rng)


@pytest.mark.parametrize("cap", [None, 1.5])
def test_relu(backend, rng, cap):
    x = untied(rng, (2, 3, 5, 5), gap=0.037)
    x = np.where(np.abs(x - 1.5) < 0.02, x + 0.05, x)  # keep away from the cap's kink too
    check_layer(backend, ReLU(cap), x, rng)


def test_feature_map_norm(backend, rng):
    check_layer(backend, FeatureMapNorm(), rng.standard_normal((3, 2, 4, 5)) * 3 + 1, rng)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(backend, rng, training):
    layer = BatchNorm2D()
    x = rng.standard_normal((4, 3, 3, 5)) * 2 + 0.5
    check_layer(backend, layer, x, rng, training=training)


def test_dense_and_flatten(backend, rng):
    from dcnn import Sequential
    check_layer(backend, Sequential([Flatten(), Dense(5)]), rng.standard_normal((3, 2, 2, 3)), rng)


def test_softmax(backend, rng):
    check_layer(backend, Softmax(), rng.standard_normal((4, 6)), rng)


def test_seed_conv_block(backend, rng):
    check_layer(backend, ConvBlock(3, 3, padding=1, max_activation=2.0), untied(rng, (2, 2, 6, 6), 0.01), rng)


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_cross_entropy(backend, rng, one_hot):
    loss = SoftmaxCrossEntropy()
    logits = backend.from_numpy(rng.standard_normal((5, 4)) * 3)
    labels = rng.integers(0, 4, 5)
    targets = backend.from_numpy(np.eye(4)[labels] if one_hot else labels)

    def backward(dy):
        return [loss.backward() * dy]

    directional_check(backend, lambda: loss.forward(logits, targets), [logits], [], backward, rng)


def _whole_network_check(backend, rng, layers, x_shape):
    xp = backend.xp
    net = DCNNetwork(layers, input_shape=x_shape[1:], backend=backend)
    net.build()
    net.model.set_needs_input_grad(True)
    cast_params(net.model, backend, xp.float64)
    loss = SoftmaxCrossEntropy()
    x = backend.from_numpy(untied(rng, x_shape, 0.01))
    y = backend.from_numpy(rng.integers(0, 3, x_shape[0]))
    names = [(leaf, name) for leaf in leaves(net.model) for name in leaf.params]

    net.model.train(True)

    def forward():       # the network's own steps (run_order's fusions), kept for model.backward
        return loss.forward(net.model.forward(x), y)

    def backward(dy):
        dx = net.model.backward(loss.backward() * dy)
        return [dx] + [leaf.grads[name] for leaf, name in names]

    directional_check(backend, forward, [x], [leaf.params[n] for leaf, n in names], backward, rng)


def test_seed_network(backend, rng):
    """The notebook's chain: conv -> capped ReLU -> pool -> per-map norm -> flatten -> dense."""
    _whole_network_check(backend, rng, [
        Conv2D(3, 3, padding=1), ReLU(max_activation=3.0), MaxPool2D(2), FeatureMapNorm(),
        Conv2D(4, 3), ReLU(), Flatten(), Dense(6, init="he"), ReLU(), Dense(3)], (3, 2, 8, 8))


def test_batchnorm_network(backend, rng):
    _whole_network_check(backend, rng, [
        Conv2D(4, 3, stride=2, padding=1), BatchNorm2D(), ReLU(), MaxPool2D(2),
        Flatten(), Dense(3)], (4, 1, 9, 9))


# --- issue 20's layer families ---------------------------------------------------------------------
from dcnn.layers.activations import (ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, ReLU6, Sigmoid,  # noqa: E402
                                     SiLU, Tanh)
from dcnn.layers.normalization import BatchNorm1D, GroupNorm, LayerNorm  # noqa: E402

KINKED = {"leaky_relu": LeakyReLU, "elu": ELU, "relu6": ReLU6, "hardsigmoid": HardSigmoid, "hardswish": HardSwish}
SMOOTH = {"sigmoid": Sigmoid, "tanh": Tanh, "silu": SiLU, "gelu": GELU, "gelu_tanh": lambda: GELU("tanh"),
          "elu_0.3": lambda: ELU(0.3), "leaky_relu_0.2": lambda: LeakyReLU(0.2)}


@pytest.mark.parametrize("name", sorted({**KINKED, **SMOOTH}))
def test_activation(backend, rng, name):
    x = untied(rng, (2, 3, 4, 5), gap=0.0731) * 1.3
    for kink in (0.0, -3.0, 3.0, 6.0):      # keep the kinks away from the values
        x = np.where(np.abs(x - kink) < 0.02, x + 0.05, x)
    check_layer(backend, {**KINKED, **SMOOTH}[name](), x, rng)


def test_layer_norm(backend, rng):
    check_layer(backend, LayerNorm(), rng.standard_normal((3, 2, 4, 5)) * 3 + 1, rng)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm(backend, rng, groups):
    check_layer(backend, GroupNorm(groups), rng.standard_normal((3, 6, 3, 4)) * 2 - 1, rng)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_1d(backend, rng, training):
    check_layer(backend, BatchNorm1D(), rng.standard_normal((5, 4)) * 2 + 0.5, rng, training=training)


from dcnn.layers.conv import DepthwiseConv2D  # noqa: E402
from dcnn.layers.conv_variants import Conv2DTranspose, SeparableConv2D  # noqa: E402

CONV_FAMILY = {
    "grouped_dilated_rect": lambda: Conv2D(4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
    "same_even": lambda: Conv2D(3, (2, 4), padding="same"),
    "depthwise": lambda: DepthwiseConv2D(3, 2, 1),
    "depthwise_multiplier_dilated": lambda: DepthwiseConv2D((3, 2), (1, 2), (2, 1), depth_multiplier=2,
                                                            dilation=(2, 1)),
    "separable": lambda: SeparableConv2D(3, 3, padding=1),
    "transpose": lambda: Conv2DTranspose(3, 3, stride=2, padding=1, output_padding=1),
    "transpose_grouped_dilated": lambda: Conv2DTranspose(4, (2, 3), stride=(1, 2), padding=(1, 0), groups=2,
                                                         dilation=(2, 1)),
}


@pytest.mark.parametrize("name", sorted(CONV_FAMILY))
def test_conv_family(backend, rng, name):
    check_layer(backend, CONV_FAMILY[name](), rng.standard_normal((2, 4, 7, 6)), rng)


from dcnn.layers.pooling import AvgPool2D, GlobalMaxPool2D  # noqa: E402
from dcnn.layers.resampling import Cropping2D, UpSampling2D, ZeroPadding2D  # noqa: E402
from dcnn.layers.shape import Identity, Reshape  # noqa: E402

RESAMPLING = {
    "upsample_nearest": lambda: UpSampling2D((2, 3)),
    "upsample_bilinear": lambda: UpSampling2D((3, 2), "bilinear"),
    "maxpool_padded": lambda: MaxPool2D(3, 2, 1),
    "avgpool_padded": lambda: AvgPool2D(3, 2, 1),
    "global_max": lambda: GlobalMaxPool2D(),
    "global_max_keepdims": lambda: GlobalMaxPool2D(keepdims=True),
    "zero_padding": lambda: ZeroPadding2D(((1, 2), (0, 3))),
    "cropping": lambda: Cropping2D(((0, 2), (1, 1))),
    "reshape": lambda: Reshape((5, -1)),
    "identity": lambda: Identity(),
}


@pytest.mark.parametrize("name", sorted(RESAMPLING))
def test_resampling(backend, rng, name):
    check_layer(backend, RESAMPLING[name](), untied(rng, (2, 3, 5, 6), gap=0.031), rng)
