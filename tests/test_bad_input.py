"""Bad input fails early with a ValueError or TypeError that names the problem."""
import numpy as np
import pytest

from dcnn import Conv2D, DCNNetwork, Dense, Flatten, MaxPool2D, ReLU


@pytest.fixture
def net():
    return DCNNetwork([Conv2D(4, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(3)],
                      input_shape=(1, 8, 8)).compile("sgd", lr=0.1)


def good(n=4):
    return np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32), np.arange(n) % 3


def test_wrong_rank(net):
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 8, 8\); got 3-D shape \(4, 8, 8\)"):
        net.fit(good()[0][:, 0], good()[1], verbose=0)


def test_wrong_channel_count(net):
    x = np.zeros((4, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="wrong channel count: 3 instead of 1"):
        net.predict(x)


def test_non_float_input(net):
    with pytest.raises(TypeError, match="floating-point values .* got dtype uint8"):
        net.fit(np.zeros((4, 1, 8, 8), np.uint8), good()[1], verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(net, bad):
    x, y = good()
    x[2, 0, 3, 3] = bad
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        net.fit(x, y, verbose=0)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")   # the overflow is the point
def test_float64_too_large_for_float32(net, backend):
    """1e39 is a finite float64 but inf as float32: refused, not trained on as inf
    (host input, and input already on the backend's device)."""
    net = DCNNetwork(net.layers, input_shape=(1, 8, 8), backend=backend).compile("sgd", lr=0.1)
    x, y = good()
    x = x.astype(np.float64)
    x[1, 0, 2, 2] = 1e39
    with pytest.raises(ValueError, match="too large for float32"):
        net.fit(x, y, verbose=0)
    x = backend.from_numpy(x, np.float64)
    with pytest.raises(ValueError, match="too large for float32"):
        net.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="too large for float32"):
        net.predict(x)


def test_labels_out_of_range(net):
    x, _ = good()
    with pytest.raises(ValueError, match=r"labels outside \[0, 2\]: found 0..7"):
        net.fit(x, np.array([0, 1, 7, 2]), verbose=0)


def test_lengths_differ(net):
    x, y = good()
    with pytest.raises(ValueError, match="x and y have different lengths: 4 samples but 3 targets"):
        net.fit(x, y[:3], verbose=0)


def test_empty_batch(net):
    with pytest.raises(ValueError, match="x is empty"):
        net.predict(np.zeros((0, 1, 8, 8), np.float32))


def test_batch_size_zero(net):
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        net.fit(*good(), batch_size=0, verbose=0)


def test_fit_before_compile():
    net = DCNNetwork([Flatten(), Dense(2)], input_shape=(1, 2, 2))
    with pytest.raises(RuntimeError, match="call compile"):
        net.fit(*good(2), verbose=0)


def test_unknown_optimizer_and_loss(net):
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; valid ones are: sgd, adam"):
        net.compile("rmsprop")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        net.compile("sgd", loss="hinge")


def test_dense_on_images_suggests_flatten():
    net = DCNNetwork([Conv2D(2, 3), Dense(3)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="add a Flatten layer"):
        net.build()


def test_kernel_larger_than_input():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        DCNNetwork([Conv2D(2, 5), Flatten(), Dense(2)], input_shape=(1, 3, 3)).build()


@pytest.mark.parametrize("kwargs,message", [({"filters": 0}, "filters must be a positive int"),
                                            ({"filters": 2, "kernel_size": 0}, "kernel_size must be an int >= 1"),
                                            ({"filters": 2, "stride": (1, 0)}, r"stride must be an int >= 1 or a pair"),
                                            ({"filters": 2, "stride": (1, 2, 3)}, r"stride must be .* a pair")])
def test_bad_layer_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conv2D(**kwargs)
