"""No host wait in a training step, proven without a GPU.

On CuPy, the host waits for the device whenever a value is read back (``float()``,
``int()``, ``bool()``, ``.item()``, a transfer to the host) and whenever an array's
shape depends on its data: a boolean-mask read or write (``a[mask]``,
``a[mask] = b``) copies the mask's count to the host first.  array-api-compat's
generic ``clip`` writes through such masks, so an innocent ``xp.clip`` in a layer
makes every ReLU wait.  NumPy cannot show any of this.

Here the training step runs on ``array_api_strict`` with its data-dependent-shape
and boolean-indexing flags off (so any mask index or ``nonzero``/``unique`` raises)
and with every read-back method of its arrays made to raise.  A step that passes
makes no such wait on any backend.  On a GPU the same step also runs under
``cupyx.allow_synchronize(False)``, CuPy's own guard.
"""
import contextlib

import numpy as np
import pytest

import backends
from dcnn import BatchNorm2D, Conv2D, ConvBlock, DCNNetwork, Dense, Dropout, Flatten, MaxPool2D, ReLU

READ_BACKS = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__", "__dlpack__",
              "__iter__", "to_device")


class HostWait(AssertionError):
    """A training step read a device value back (or indexed by a mask)."""


@contextlib.contextmanager
def no_read_back(strict):
    """array_api_strict without data-dependent shapes, boolean indexing or read-backs."""
    flags = strict.get_array_api_strict_flags()
    array = strict._array_object.Array
    saved = {name: array.__dict__[name] for name in READ_BACKS if name in array.__dict__}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostWait(f"the training step called Array.{name}: on a GPU that waits for the device")
        return method

    def compat_clip(x, /, min=None, max=None):
        # What ``xp.clip`` does on CuPy (array-api-compat's generic clip): masked writes.
        out = strict.asarray(x, copy=True)
        for bound, outside in ((min, strict.less), (max, strict.greater)):
            if bound is not None:
                b = strict.broadcast_to(strict.asarray(bound, dtype=x.dtype, device=x.device), x.shape)
                mask = outside(out, b)
                out[mask] = b[mask]
        return out

    native_clip = strict.clip
    strict.set_array_api_strict_flags(boolean_indexing=False, data_dependent_shapes=False)
    strict.clip = compat_clip
    for name in saved:
        setattr(array, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(array, name, method)
        strict.clip = native_clip
        strict.set_array_api_strict_flags(**{k: v for k, v in flags.items() if k != "enabled_extensions"})


def convnet(backend, optimizer, **options):
    """The default preset's layer kinds (conv, pool, BN+ReLU, dense, dropout) plus a capped ReLU."""
    layers = [Conv2D(4, 3, padding=1), MaxPool2D(2), BatchNorm2D(), ReLU(),
              Conv2D(6, 3, padding=1), BatchNorm2D(), ReLU(max_activation=2.0), MaxPool2D(2),
              Flatten(), Dense(16), ReLU(), Dropout(0.25), Dense(5)]
    return DCNNetwork(layers, input_shape=(1, 12, 12), seed=3, backend=backend).build() \
        .compile(optimizer, **options)


OPTIMIZERS = {
    "adam": ("adam", {"lr": 1e-3}),
    "adamw": ("adamw", {"lr": 1e-3, "weight_decay": 0.01}),
    "adam_l2": ("adam", {"lr": 1e-3, "weight_decay": 1e-4}),
    "sgd_nesterov": ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
    "sgd_plain": ("sgd", {"lr": 0.05}),
}


@pytest.fixture
def strict_backend():
    try:
        return backends.resolve("array_api_strict")
    except backends.BackendError as exc:
        pytest.skip(f"array_api_strict unavailable: {exc}")


@pytest.mark.parametrize("targets", ["labels", "one_hot"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_step_reads_nothing_back(strict_backend, rng, name, targets):
    import array_api_strict
    net = convnet(strict_backend, OPTIMIZERS[name][0], **OPTIMIZERS[name][1])
    labels = rng.integers(0, 5, 8)
    y = labels if targets == "labels" else np.eye(5, dtype=np.float32)[labels]
    x = strict_backend.from_numpy(rng.random((8, 1, 12, 12), dtype=np.float32))
    y = strict_backend.from_numpy(y)
    before = strict_backend.to_numpy(net.flat_parameters().data).copy()
    with no_read_back(array_api_strict):
        for _ in range(2):
            loss, correct = net.train_on_batch(x, y)
    assert np.isfinite(strict_backend.to_numpy(loss)) and 0 <= int(strict_backend.to_numpy(correct)) <= 8
    assert not np.array_equal(strict_backend.to_numpy(net.flat_parameters().data), before), "nothing trained"


def test_the_guard_catches_a_masked_write_and_a_read_back(strict_backend):
    """The check can fail: the idioms that wait on a GPU raise under it."""
    import array_api_strict
    xp = strict_backend.xp
    x = strict_backend.from_numpy(np.array([-1.0, 2.0], dtype=np.float32))
    with no_read_back(array_api_strict):
        with pytest.raises(Exception, match="boolean"):
            x[x > 0] = 0.0
        with pytest.raises(HostWait):
            float(xp.sum(x))
        with pytest.raises(HostWait):
            bool(xp.any(x > 0))
        with pytest.raises(Exception, match="boolean"):
            xp.clip(x, 0.0, 1.0)          # array-api-compat's clip, as on CuPy
    assert float(xp.sum(x)) == 1.0          # restored afterwards


def test_the_seed_network_step_reads_nothing_back(strict_backend, rng):
    """ConvBlock: a frozen conv, a capped ReLU before pooling, per-map normalisation; SGD with momentum."""
    import array_api_strict
    net = DCNNetwork([ConvBlock(2, 3, padding=1, max_activation=1.0), ConvBlock(3, 3, padding=1, max_activation=6.0),
                      Flatten(), Dense(8), ReLU(), Dense(4)], input_shape=(1, 12, 12), backend=strict_backend) \
        .build().compile("sgd", lr=0.05, momentum=0.9)
    x = strict_backend.from_numpy(rng.random((6, 1, 12, 12), dtype=np.float32))
    y = strict_backend.from_numpy(rng.integers(0, 4, 6))
    with no_read_back(array_api_strict):
        net.train_on_batch(x, y)


def test_cupy_training_step_never_synchronises(rng):
    """On a GPU: CuPy's own guard raises on any implicit synchronisation in the step."""
    try:
        backend = backends.resolve("cupy")
    except backends.BackendError as exc:
        pytest.skip(f"cupy backend unavailable here: {exc}")
    import cupyx
    for name in ("adam", "sgd_nesterov"):
        net = convnet(backend, OPTIMIZERS[name][0], **OPTIMIZERS[name][1])
        x = backend.from_numpy(rng.random((8, 1, 12, 12), dtype=np.float32))
        y = backend.from_numpy(rng.integers(0, 5, 8))
        net.train_on_batch(x, y)            # first step compiles the kernels (may synchronise)
        backend.synchronize()
        with cupyx.allow_synchronize(False):
            for _ in range(3):
                net.train_on_batch(x, y)
        backend.synchronize()
