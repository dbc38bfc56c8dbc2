"""Backend agreement: the same layer code on CuPy (and array_api_strict) gives NumPy's
values and dtypes.  One set of tests, parametrised over the backends present;
CuPy's cases skip with the reason where no GPU exists."""
import numpy as np
import pytest

from dcnn import (BatchNorm2D, Conv2D, DCNNetwork, Dense, Dropout, FeatureMapNorm, Flatten, MaxPool2D, ReLU,
                  SoftmaxCrossEntropy)

LAYERS = {
    "conv": lambda: Conv2D(5, 3, stride=2, padding=1),
    "conv_same": lambda: Conv2D(4, 3, padding="same"),
    "relu_cap": lambda: ReLU(max_activation=0.8),
    "maxpool": lambda: MaxPool2D(2),
    "maxpool_overlap": lambda: MaxPool2D(3, 2),
    "feature_map_norm": lambda: FeatureMapNorm(),
    "batchnorm": lambda: BatchNorm2D(),
}


def assert_agrees(backend, ours, reference, what, rtol=1e-5, atol=1e-6):
    """Namespace, dtype, shape and values (catches arrays that silently stayed NumPy)."""
    assert backend.owns(ours), f"{what}: result is not a {backend.name} array ({type(ours).__name__})"
    host = backend.to_numpy(ours)
    assert host.dtype == reference.dtype, f"{what}: dtype {host.dtype} != {reference.dtype}"
    np.testing.assert_allclose(host, reference, rtol=rtol, atol=atol, err_msg=what)


def run_layer(backend, make, x, dy):
    layer = make()
    layer.build(x.shape[1:], np.random.default_rng(0), backend)
    y = layer.forward(backend.from_numpy(x))
    dx = layer.backward(backend.from_numpy(dy))
    return layer, y, dx


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_forward_and_backward_agree(other_backend, numpy_backend, rng, name):
    x = rng.standard_normal((3, 2, 9, 9)).astype(np.float32)
    ref_layer = LAYERS[name]()
    ref_layer.build(x.shape[1:], np.random.default_rng(0), numpy_backend)
    y_ref = ref_layer.forward(x)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    dx_ref = ref_layer.backward(dy)
    layer, y, dx = run_layer(other_backend, LAYERS[name], x, dy)
    assert_agrees(other_backend, y, np.asarray(y_ref), f"{name} forward")
    assert_agrees(other_backend, dx, np.asarray(dx_ref), f"{name} input gradient")
    for key in layer.grads:
        assert_agrees(other_backend, layer.grads[key], np.asarray(ref_layer.grads[key]), f"{name} {key} gradient",
                      rtol=1e-4, atol=1e-5)


def test_loss_agrees(other_backend, numpy_backend, rng):
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    ref, ours = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    value_ref = ref.forward(logits, labels)
    value = ours.forward(other_backend.from_numpy(logits), other_backend.from_numpy(labels))
    assert_agrees(other_backend, value, np.asarray(value_ref), "loss")
    assert_agrees(other_backend, ours.backward(), ref.backward(), "logit gradient")


def test_training_steps_agree(other_backend, numpy_backend, rng):
    """Same seed, same data: a few SGD steps give the same weights on both backends."""
    def make(backend):
        return DCNNetwork([Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU(), MaxPool2D(2), Flatten(), Dense(16),
                           ReLU(), Dense(3)], input_shape=(1, 8, 8), seed=11, backend=backend) \
            .compile("sgd", lr=0.05, momentum=0.9)
    x = rng.random((24, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 24)
    ref, ours = make(numpy_backend), make(other_backend)
    ref.fit(x, y, epochs=2, batch_size=8, verbose=0)
    ours.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for key, value in ours.model.state().items():
        assert_agrees(other_backend, value, ref.state_dict()[key], key, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.predict(x), ref.predict(x), rtol=1e-4, atol=1e-5)


def test_dropout_masks_are_drawn_on_the_device(other_backend, rng):
    layer = Dropout(0.5)
    layer.build((100,), np.random.default_rng(0), other_backend)
    y = layer.forward(other_backend.from_numpy(np.ones((50, 100), np.float32)))
    host = other_backend.to_numpy(y)
    assert other_backend.owns(y) and set(np.unique(host)) <= {0.0, 2.0}
    assert 0.4 < (host == 0).mean() < 0.6


# --- issue 20: every new backend method, through its layer, on each backend against NumPy (+ Numba) ----------
from dcnn.layers.activations import (ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, ReLU6, Sigmoid,  # noqa: E402
                                     SiLU, Tanh)
from dcnn.layers.conv import DepthwiseConv2D  # noqa: E402
from dcnn.layers.conv_variants import Conv2DTranspose, SeparableConv2D  # noqa: E402
from dcnn.layers.normalization import BatchNorm1D, GroupNorm, LayerNorm  # noqa: E402
from dcnn.layers.pooling import AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D  # noqa: E402
from dcnn.layers.resampling import Cropping2D, UpSampling2D, ZeroPadding2D  # noqa: E402
from dcnn.layers.shape import Identity, Reshape  # noqa: E402

FAMILY_LAYERS = {   # each new backend method is reached by at least one of these
    "conv_grouped": lambda: Conv2D(4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
    "conv_same_even": lambda: Conv2D(3, (2, 4), padding="same"),
    "depthwise": lambda: DepthwiseConv2D(3, 2, 1, depth_multiplier=2),
    "depthwise_dilated": lambda: DepthwiseConv2D((3, 2), 1, (2, 1), dilation=(2, 1)),
    "separable": lambda: SeparableConv2D(5, 3, padding=1),
    "transpose": lambda: Conv2DTranspose(3, 3, stride=2, padding=1, output_padding=1),
    "transpose_grouped": lambda: Conv2DTranspose(4, (2, 3), stride=(1, 2), groups=2, dilation=(2, 1)),
    "upsample_nearest": lambda: UpSampling2D((2, 3)),
    "upsample_bilinear": lambda: UpSampling2D(2, "bilinear"),
    "maxpool_padded": lambda: MaxPool2D(3, 2, 1),
    "avgpool_padded": lambda: AvgPool2D(3, 2, 1),
    "global_max": lambda: GlobalMaxPool2D(),
    "global_avg_keepdims": lambda: GlobalAvgPool2D(keepdims=True),
    "zero_padding": lambda: ZeroPadding2D(((1, 2), (0, 3))),
    "cropping": lambda: Cropping2D(((0, 2), (1, 1))),
    "reshape": lambda: Reshape((6, -1)),
    "identity": lambda: Identity(),
    "layer_norm": lambda: LayerNorm(),
    "group_norm": lambda: GroupNorm(2),
    **{f"act_{name}": make for name, make in {
        "leaky_relu": lambda: LeakyReLU(0.1), "elu": lambda: ELU(), "relu6": lambda: ReLU6(), "sigmoid": Sigmoid,
        "tanh": Tanh, "silu": SiLU, "gelu": GELU, "gelu_tanh": lambda: GELU("tanh"), "hardsigmoid": HardSigmoid,
        "hardswish": HardSwish}.items()},
}


@pytest.mark.parametrize("name", sorted(FAMILY_LAYERS))
def test_family_layer_agrees(other_backend, numpy_backend, rng, name):
    x = rng.standard_normal((3, 2, 9, 9)).astype(np.float32) * 2
    ref_layer = FAMILY_LAYERS[name]()
    ref_layer.build(x.shape[1:], np.random.default_rng(0), numpy_backend)
    y_ref = ref_layer.forward(x)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    dx_ref = ref_layer.backward(dy)
    layer, y, dx = run_layer(other_backend, FAMILY_LAYERS[name], x, dy)
    assert_agrees(other_backend, y, np.asarray(y_ref), f"{name} forward", rtol=1e-5, atol=1e-5)
    assert_agrees(other_backend, dx, np.asarray(dx_ref), f"{name} input gradient", rtol=1e-5, atol=1e-5)
    for _, leaf in layer.named_modules():
        ref_leaf = dict(ref_layer.named_modules())[_]
        for key in leaf.grads:
            assert_agrees(other_backend, leaf.grads[key], np.asarray(ref_leaf.grads[key]), f"{name} {key} gradient",
                          rtol=1e-4, atol=1e-4)


def test_batch_norm_1d_agrees(other_backend, numpy_backend, rng):
    x = rng.standard_normal((6, 5)).astype(np.float32)
    dy = rng.standard_normal((6, 5)).astype(np.float32)
    ref = BatchNorm1D()
    ref.build((5,), np.random.default_rng(0), numpy_backend)
    y_ref, dx_ref = ref.forward(x), ref.backward(dy)
    layer, y, dx = run_layer(other_backend, BatchNorm1D, x, dy)
    assert_agrees(other_backend, y, np.asarray(y_ref), "BatchNorm1D forward")
    assert_agrees(other_backend, dx, np.asarray(dx_ref), "BatchNorm1D input gradient")


def test_dropout2d_masks_are_drawn_on_the_device(other_backend):
    from dcnn.layers.core import Dropout2D
    layer = Dropout2D(0.5)
    layer.build((40, 2, 2), np.random.default_rng(0), other_backend)
    y = layer.forward(other_backend.from_numpy(np.ones((50, 40, 2, 2), np.float32)))
    host = other_backend.to_numpy(y)
    assert other_backend.owns(y) and set(np.unique(host)) <= {0.0, 2.0}
    assert (host.min(axis=(2, 3)) == host.max(axis=(2, 3))).all() and 0.4 < (host == 0).mean() < 0.6
