"""Issue 13, the API half: arguments that would end in NaN or a deep traceback fail at once, named."""
import math

import numpy as np
import pytest

from dcnn import Conv2D, DCNNetwork, Dense, Flatten, ReLU
from dcnn.model.optimizers import SGD, Adam, get_optimizer


@pytest.mark.parametrize("make,message", [
    (lambda: SGD(lr=math.inf), r"SGD learning rate must be a finite number in \(0, inf\); got inf"),
    (lambda: SGD(lr=float("nan")), "SGD learning rate must be a finite number"),
    (lambda: SGD(lr=0), "SGD learning rate must be a finite number"),
    (lambda: SGD(lr=0.1, momentum=float("nan")), r"SGD momentum must be a finite number in \[0, 1\); got nan"),
    (lambda: SGD(lr=0.1, momentum=1.0), r"SGD momentum must be .* in \[0, 1\)"),
    (lambda: SGD(lr=0.1, momentum=-0.5), "SGD momentum"),
    (lambda: SGD(lr=0.1, weight_decay=-1), "SGD weight_decay"),
    (lambda: SGD(lr=0.1, weight_decay=math.inf), "SGD weight_decay"),
    (lambda: Adam(lr=1e-3, betas=(1.0, 0.999)), r"Adam beta1 must be a finite number in \[0, 1\); got 1.0"),
    (lambda: Adam(lr=1e-3, betas=(0.9, 1.5)), "Adam beta2"),
    (lambda: Adam(lr=1e-3, betas=(0.9, float("nan"))), "Adam beta2"),
    (lambda: Adam(lr=1e-3, eps=0), r"Adam eps must be a finite number in \(0, inf\)"),
    (lambda: Adam(lr=-1), "Adam learning rate"),
    (lambda: get_optimizer("adam", lr=math.inf), "Adam learning rate"),
])
def test_optimizer_arguments_are_validated(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("make,message", [
    (lambda: SGD(lr="0.1"), "SGD learning rate must be a number; got str"),
    (lambda: SGD(lr=0.1, momentum=True), "SGD momentum must be a number; got bool"),
    (lambda: SGD(lr=0.1, momentum=0.9, nesterov="yes"), "nesterov must be True or False"),
    (lambda: Adam(betas=0.9), r"betas must be a pair"),
])
def test_optimizer_argument_types_are_validated(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_valid_optimizer_arguments_still_pass():
    assert SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4).momentum == 0.9
    assert Adam(lr=1e-3, betas=(0.0, 0.99), eps=1e-7).betas == (0.0, 0.99)


def small_net(**kwargs):
    return DCNNetwork([Conv2D(2, 3), ReLU(), Flatten(), Dense(3)], **kwargs)


def test_fit_refuses_a_negative_initial_epoch():
    net = small_net(input_shape=(1, 6, 6)).compile("sgd", lr=0.1)
    x, y = np.zeros((4, 1, 6, 6), np.float32), np.arange(4) % 3
    with pytest.raises(ValueError, match=r"initial_epoch must be an int >= 0 .*got -2"):
        net.fit(x, y, epochs=2, initial_epoch=-2, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch must be an int"):
        net.fit(x, y, epochs=2, initial_epoch=1.5, verbose=0)


@pytest.mark.parametrize("shape,error,message", [
    ((1, 0, 0), ValueError, r"input_shape must have every dimension >= 1; got \(1, 0, 0\)"),
    ((1, -28, 28), ValueError, "every dimension >= 1"),
    ((1, 2.5, 28), TypeError, "tuple of ints"),
    ("1x28x28", TypeError, "tuple of ints"),
    ((), TypeError, "non-empty"),
    ((3, 100_000, 100_000), ValueError, "too large: 30,000,000,000 values per sample, the limit is"),
])
def test_network_input_shape_is_validated(shape, error, message):
    with pytest.raises(error, match=message):
        small_net(input_shape=shape)
    with pytest.raises(error, match=message):
        small_net().build(shape)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])   # 1e39 overflows float32
def test_conv2d_refuses_a_non_finite_fixed_kernel(bad):
    kernel = np.full((2, 3, 3), bad)
    with pytest.raises(ValueError, match="kernel contains NaN or Inf values"):
        Conv2D(2, kernel=kernel)


@pytest.mark.parametrize("make", [lambda: __import__("dcnn").ReLU(), lambda: __import__("dcnn").Flatten(),
                                  lambda: __import__("dcnn").MaxPool2D(2), lambda: __import__("dcnn").Softmax()])
def test_backward_before_forward_says_to_call_forward_first(make):
    layer = make()
    with pytest.raises(RuntimeError, match=r"\.backward\(\) was called before forward\(\).*call forward\(x\) first"):
        layer.backward(np.ones((2, 3), np.float32))


def test_backward_after_forward_still_works_and_other_attribute_errors_pass_through():
    from dcnn import ReLU
    from dcnn.layers.base import Layer
    relu = ReLU()
    x = np.array([[-1.0, 2.0]], np.float32)
    relu.forward(x)
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), [[0.0, 1.0]])

    class Broken(Layer):
        def backward(self, dy):
            return dy.no_such_method()
    with pytest.raises(AttributeError, match="no_such_method"):
        Broken().backward(np.ones(2))
