"""The layer families of issue 20 against PyTorch, one test per layer (more random draws in
tests/test_random_oracle.py): forward, every gradient, buffers, three optimiser steps, in
float32 and float64; and their construction errors."""
import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is the oracle; install it with pip install -e '.[test]'")

from dcnn.layers.pooling import GlobalAvgPool2D  # noqa: E402
from torch_compare import compare_layers, compare_training  # noqa: E402

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_avg_pool(dtype, keepdims):
    compare_layers([GlobalAvgPool2D(keepdims=keepdims)], (3, 5, 4), dtype)
    assert GlobalAvgPool2D(keepdims=keepdims).output_shape((3, 5, 4)) == ((3, 1, 1) if keepdims else (3,))
    compare_training([GlobalAvgPool2D(keepdims=keepdims)], (3, 5, 4), dtype)


def test_global_avg_pool_keepdims_must_be_a_bool():
    with pytest.raises(ValueError, match="GlobalAvgPool2D: keepdims must be True or False"):
        GlobalAvgPool2D(keepdims="yes")


# --- activations -------------------------------------------------------------------------------
from dcnn.layers.activations import (ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, ReLU6, Sigmoid,  # noqa: E402
                                     SiLU, Tanh)
from dcnn.layers.normalization import BatchNorm1D, GroupNorm, LayerNorm  # noqa: E402
from dcnn.layers.conv import Conv2D  # noqa: E402
from dcnn.layers.core import Dense, Flatten  # noqa: E402

ACTIVATIONS = {
    "leaky_relu": lambda: LeakyReLU(), "leaky_relu_0.2": lambda: LeakyReLU(0.2), "elu": lambda: ELU(),
    "elu_0.5": lambda: ELU(0.5), "relu6": lambda: ReLU6(), "sigmoid": lambda: Sigmoid(), "tanh": lambda: Tanh(),
    "silu": lambda: SiLU(), "gelu": lambda: GELU(), "gelu_tanh": lambda: GELU("tanh"),
    "hardsigmoid": lambda: HardSigmoid(), "hardswish": lambda: HardSwish()}


def activation_input(rng, shape=(3, 2, 5, 6)):
    """Wide values, the kinks themselves (0, +-3, 6) and extremes (exp overflows there)."""
    x = rng.standard_normal(shape) * 4
    x.flat[:9] = [0.0, -3.0, 3.0, 6.0, -0.0, 60.0, -60.0, 100.0, -100.0]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation(name, dtype, rng):
    # torch's float64 Hardsigmoid takes its slope 1/6 as a float32 literal: 3e-8 off.
    tol = dict(rtol=1e-7, atol=1e-9) if name == "hardsigmoid" and dtype == np.float64 else None
    compare_layers([ACTIVATIONS[name]()], (2, 5, 6), dtype, x=activation_input(rng), tol=tol)
    compare_layers([Flatten(), ACTIVATIONS[name]()], (2, 5, 6), dtype, x=activation_input(rng), tol=tol)
    compare_training([Conv2D(3, 3, padding=1), ACTIVATIONS[name]()], (2, 5, 6), dtype, tol=tol)


@pytest.mark.parametrize("make,message", [
    (lambda: LeakyReLU("x"), "LeakyReLU: negative_slope must be a finite number"),
    (lambda: ELU(float("nan")), "ELU: alpha must be a finite number"),
    (lambda: GELU("erf"), "GELU: approximate must be 'none' or 'tanh'")])
def test_activation_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- norms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5), (6,)])
def test_layer_norm(shape, dtype):
    layers = [LayerNorm()] if len(shape) == 3 else [Dense(6), LayerNorm()]
    model = compare_layers(layers, shape, dtype)
    compare_training(layers if len(shape) == 1 else [Conv2D(4, 3, padding=1), LayerNorm()], shape, dtype)
    assert model.layers[-1].params["weight"].shape == (shape if len(shape) == 3 else (6,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups,channels", [(1, 4), (2, 4), (4, 4), (3, 6)])
def test_group_norm(groups, channels, dtype):
    compare_layers([GroupNorm(groups)], (channels, 3, 5), dtype)
    compare_training([Conv2D(channels, 3, padding=1), GroupNorm(groups)], (2, 5, 4), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_1d(dtype, training):
    compare_layers([Dense(5), BatchNorm1D()], (7,), dtype, batch=6, training=training)
    compare_training([Dense(5), BatchNorm1D()], (7,), dtype)


@pytest.mark.parametrize("make,shape,message", [
    (lambda: GroupNorm(0), None, "GroupNorm: num_groups must be a positive int"),
    (lambda: GroupNorm(3), (4, 5, 5), r"GroupNorm\(3\): 3 groups do not divide 4 channels"),
    (lambda: LayerNorm(eps=0), None, "LayerNorm: eps must be a positive number"),
    (lambda: BatchNorm1D(), (3, 4, 4), r"BatchNorm1D\(\) expects flat \(features,\) inputs")])
def test_norm_errors(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().output_shape(shape) if shape else make()
