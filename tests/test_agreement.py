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
