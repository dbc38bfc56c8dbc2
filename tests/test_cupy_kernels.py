"""CupyBackend's fused kernels against the generic Backend methods they override.

Every test runs twice: on ``cupy-on-cpu`` (CupyBackend's own method code with the
CUDA kernel sources compiled by g++ and NumPy arrays; tests/cuda_on_cpu.py), here
and in CI; and on ``cupy``, a real GPU, where one exists (skipped with the reason
elsewhere).  The reference is the generic method on the same backend's arrays.
"""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backends
from backends import cupy_kernels
from backends.base import Backend
from helpers import generic, host
from backends.cupy_backend import LAUNCHES, TF32_MODES, CupyBackend, _tf32_mode

sys.path.insert(0, str(Path(__file__).parent))
import cuda_on_cpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = [  # (k, stride, h, w): tiling, overlapping, gaps, odd sizes
    (2, 2, 8, 8), (2, 2, 9, 7), (3, 2, 9, 8), (3, 3, 10, 11), (2, 1, 5, 6), (1, 1, 4, 4), (3, 1, 5, 5),
    (2, 3, 8, 9), (4, 4, 4, 4)]
CONVS = [  # (filters, channels, k, stride, padding, h, w)
    (4, 1, 3, 1, 1, 7, 7), (5, 3, 3, 2, 1, 9, 8), (2, 4, 1, 1, 0, 5, 5), (3, 2, 5, 1, 2, 6, 7),
    (3, 2, 3, 3, 0, 10, 9), (6, 5, 2, 2, 1, 6, 6), (2, 3, 4, 1, 3, 4, 5)]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-12)}


@pytest.fixture(params=["cupy-on-cpu", "cupy"])
def fused(request):
    if request.param == "cupy-on-cpu":
        if cuda_on_cpu.compiler() is None:
            pytest.skip("no C++ compiler (g++) to run the CUDA kernel sources on the CPU")
        return cuda_on_cpu.CupyOnCpu()
    try:
        return backends.resolve("cupy")
    except backends.BackendError as exc:
        pytest.skip(f"cupy backend unavailable here: {exc}")




def close(backend, ours, ref, dtype, what, exact=False):
    a, b = host(backend, ours), host(backend, ref)
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    if exact:
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(a, b, err_msg=what, **TOL[dtype])


# --- element-wise --------------------------------------------------------------------------
@pytest.mark.parametrize("cap", [math.inf, 0.7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu(fused, rng, cap, dtype):
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    x[0, 0, 0, :3] = [0.0, cap if cap != math.inf else 1e30, -0.0]      # the edges of the mask
    x, dy = fused.from_numpy(x), fused.from_numpy(rng.standard_normal(x.shape).astype(dtype))
    (y, saved), (y_ref, saved_ref) = fused.relu(x, cap), generic(fused).relu(x, cap)
    close(fused, y, y_ref, dtype, "relu", exact=True)
    close(fused, fused.relu_backward(dy, saved), generic(fused).relu_backward(dy, saved_ref), dtype,
          "relu backward", exact=True)


class FixedDraws:
    """A generator that hands out the same uniform draws to both versions."""

    def __init__(self, backend, rng):
        self.backend, self.rng = backend, rng

    def random(self, shape, dtype):
        self.last = self.backend.from_numpy(self.rng.random(shape).astype(dtype))
        return self.last


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout(fused, rng, dtype):
    x = fused.from_numpy(rng.standard_normal((16, 33)).astype(dtype))
    dy = fused.from_numpy(rng.standard_normal((16, 33)).astype(dtype))
    y, saved = fused.dropout(x, 0.3, FixedDraws(fused, np.random.default_rng(5)))
    y_ref, saved_ref = generic(fused).dropout(x, 0.3, FixedDraws(fused, np.random.default_rng(5)))
    close(fused, y, y_ref, dtype, "dropout", exact=True)
    close(fused, fused.dropout_backward(dy, saved), generic(fused).dropout_backward(dy, saved_ref), dtype,
          "dropout backward", exact=True)


# --- pooling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k,stride,h,w", WINDOWS)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool(fused, rng, k, stride, h, w, ties):
    x = rng.standard_normal((2, 3, h, w))
    if ties:   # plateaus: the first maximum in row-major order must win, as in torch
        x = np.round(x)
        x[:, 1] = 0.5
    x = fused.from_numpy(x.astype(np.float32))
    (y, saved), (y_ref, saved_ref) = fused.max_pool2d(x, k, stride), generic(fused).max_pool2d(x, k, stride)
    close(fused, y, y_ref, np.float32, "max_pool", exact=True)
    dy = fused.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
    close(fused, fused.max_pool2d_backward(dy, saved), generic(fused).max_pool2d_backward(dy, saved_ref),
          np.float32, "max_pool backward")


def test_max_pool_of_a_non_contiguous_input(fused, rng):
    x = fused.from_numpy(rng.standard_normal((2, 6, 6, 3)).astype(np.float32))
    x = fused.xp.permute_dims(x, (0, 3, 1, 2))                 # NCHW shape, channels-last memory
    (y, _), (y_ref, _) = fused.max_pool2d(x, 2, 2), generic(fused).max_pool2d(x, 2, 2)
    close(fused, y, y_ref, np.float32, "max_pool of a view", exact=True)


# --- batch normalisation -----------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu_cap", [None, math.inf, 0.8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm(fused, rng, training, relu_cap, dtype):
    n, c, h, w = 4, 3, 5, 6
    x = (rng.standard_normal((n, c, h, w)) * 2 + 1.5).astype(dtype)
    weight = (rng.random(c) + 0.5).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    stats = [rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)]
    dy = rng.standard_normal((n, c, h, w)).astype(dtype)
    results = []
    for backend in (fused, generic(fused)):
        running = [fused.from_numpy(s.copy()) for s in stats]
        y, saved = backend.batch_norm(fused.from_numpy(x), fused.from_numpy(weight), fused.from_numpy(bias),
                                      *running, training=training, momentum=0.1, eps=1e-5, relu_cap=relu_cap)
        grads = backend.batch_norm_backward(fused.from_numpy(dy), saved)
        _, dw_only, db_only = backend.batch_norm_backward(fused.from_numpy(dy), saved, input_grad=False)
        results.append([y, *running, *grads, dw_only, db_only])
    names = ["y", "running_mean", "running_var", "dx", "dweight", "dbias", "dweight (no dx)", "dbias (no dx)"]
    for name, ours, ref in zip(names, *results):
        close(fused, ours, ref, dtype, f"batch_norm {name}")


# --- loss ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("targets", ["int64", "int32", "one_hot", "soft"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy(fused, rng, targets, dtype):
    n, k = 37, 10
    logits = (rng.standard_normal((n, k)) * 3).astype(dtype)
    logits[0, 2] = logits[0, 7] = logits[0].max() + 1            # a tie: the first arg-max counts
    labels = rng.integers(0, k, n)
    labels[0] = 2
    if targets in ("int64", "int32"):
        t = labels.astype(targets)
    elif targets == "one_hot":
        t = np.eye(k, dtype=dtype)[labels]
    else:
        t = rng.random((n, k)).astype(dtype)
        t[:, ::3] = 0                                              # zero targets: terms of 0, not NaN
        t /= t.sum(axis=1, keepdims=True)
    logits, t = fused.from_numpy(logits), fused.from_numpy(t)
    ours, ref = fused.softmax_cross_entropy(logits, t), generic(fused).softmax_cross_entropy(logits, t)
    close(fused, ours[0], ref[0], dtype, "loss")
    close(fused, ours[1], ref[1], dtype, "dlogits")
    close(fused, ours[2], ref[2], dtype, "correct", exact=True)


def test_softmax_cross_entropy_with_label_smoothing(fused, rng):
    """The fused kernel has no smoothing: the override must hand it to the generic version."""
    logits = fused.from_numpy((rng.standard_normal((9, 5)) * 3).astype(np.float32))
    labels = fused.from_numpy(rng.integers(0, 5, 9))
    ours = fused.softmax_cross_entropy(logits, labels, 0.1)
    ref = generic(fused).softmax_cross_entropy(logits, labels, 0.1)
    plain = fused.softmax_cross_entropy(logits, labels)
    close(fused, ours[0], ref[0], np.float32, "loss")
    close(fused, ours[1], ref[1], np.float32, "dlogits")
    assert abs(float(host(fused, ours[0])) - float(host(fused, plain[0]))) > 1e-3   # smoothing changed it


# --- optimisers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.0, False, 0.01), (0.9, False, 0.0),
                                                            (0.9, True, 1e-3)])
def test_sgd_update(fused, rng, momentum, nesterov, weight_decay):
    p0 = rng.standard_normal(1000).astype(np.float32)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    out = []
    for backend in (fused, generic(fused)):
        p, buf = fused.from_numpy(p0.copy()), fused.from_numpy(np.zeros(1000, np.float32))
        for g in grads:
            backend.sgd_update(p, fused.from_numpy(g), buf if momentum else None, lr=0.05, momentum=momentum,
                               nesterov=nesterov, weight_decay=weight_decay)
        out.append((p, buf))
    close(fused, out[0][0], out[1][0], np.float32, "param")
    close(fused, out[0][1], out[1][1], np.float32, "momentum buffer")


@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (1e-2, False), (1e-2, True)])
def test_adam_update(fused, rng, weight_decay, decoupled):
    p0 = rng.standard_normal(1000).astype(np.float32)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    out = []
    for backend in (fused, generic(fused)):
        p = fused.from_numpy(p0.copy())
        m, v = (fused.from_numpy(np.zeros(1000, np.float32)) for _ in range(2))
        for step, g in enumerate(grads, 1):
            backend.adam_update(p, fused.from_numpy(g), m, v, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                                weight_decay=weight_decay, decoupled=decoupled, step=step)
        out.append((p, m, v))
    for name, ours, ref in zip(("param", "exp_avg", "exp_avg_sq"), *out):
        close(fused, ours, ref, np.float32, name)


# --- convolution --------------------------------------------------------------------------------
@pytest.mark.parametrize("f,c,k,stride,pad,h,w", CONVS)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d(fused, rng, f, c, k, stride, pad, h, w, use_bias, dtype):
    x = fused.from_numpy(rng.standard_normal((2, c, h, w)).astype(dtype))
    weight = fused.from_numpy(rng.standard_normal((f, c, k, k)).astype(dtype))
    bias = fused.from_numpy(rng.standard_normal(f).astype(dtype)) if use_bias else None
    (y, saved), (y_ref, saved_ref) = (b.conv2d(x, weight, bias, stride, pad) for b in (fused, generic(fused)))
    close(fused, y, y_ref, dtype, "conv2d")
    dy = fused.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    for input_grad, weight_grad in ((True, True), (False, True), (True, False)):
        ours = fused.conv2d_backward(dy, saved, weight, input_grad=input_grad, weight_grad=weight_grad)
        ref = generic(fused).conv2d_backward(dy, saved_ref, weight, input_grad=input_grad, weight_grad=weight_grad)
        for name, a, b in zip(("dx", "dweight", "dbias"), ours, ref):
            assert (a is None) == (b is None), name
            if a is not None:
                close(fused, a, b, dtype, f"conv2d {name} (input_grad={input_grad}, weight_grad={weight_grad})")


# --- a whole network ----------------------------------------------------------------------------
def test_training_steps_match_numpy(fused, rng):
    """The default preset's layer kinds and dropout: a few steps give NumPy's weights.  (SGD:
    Adam would turn the rounding noise of the conv biases' gradients, zero in exact
    arithmetic because BatchNorm follows, into full-size steps.)"""
    from dcnn import BatchNorm2D, Conv2D, DCNNetwork, Dense, Dropout, Flatten, MaxPool2D, ReLU
    numpy_backend = backends.resolve("numpy")

    def make(backend):
        layers = [Conv2D(4, 3, padding=1), MaxPool2D(2), BatchNorm2D(), ReLU(), Conv2D(6, 3, padding=1),
                  MaxPool2D(2), BatchNorm2D(), ReLU(), Flatten(), Dense(16), ReLU(), Dropout(0.25), Dense(5)]
        return DCNNetwork(layers, input_shape=(1, 12, 12), seed=7, backend=backend).build() \
            .compile("sgd", lr=0.05, momentum=0.9)
    x = rng.random((16, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 5, 16)
    previous = backends.get_backend()
    try:
        states = []
        for backend in (fused, numpy_backend):
            backends.use(backend)
            net = make(backend)
            if fused.name == "cupy":       # CuPy draws its own dropout masks: compare without dropout
                net.layers[11].rate = 0.0
            for _ in range(3):
                loss, correct = net.train_on_batch(backend.from_numpy(x), backend.from_numpy(y))
            states.append({k: backend.to_numpy(v) for k, v in net.state_dict().items()})
            if fused.name == "cupy":
                break
    finally:
        backends.use(previous)
    if fused.name == "cupy":
        pytest.skip("compared per method above; dropout masks differ between CuPy and NumPy")
    for key, value in states[1].items():
        np.testing.assert_allclose(states[0][key], value, rtol=1e-4, atol=1e-5, err_msg=key)


# --- bookkeeping, CuPy's Python side, nvcc -------------------------------------------------------
def test_every_override_has_a_launch_count():
    hot = {name for name in dir(Backend) if not name.startswith("_") and callable(getattr(Backend, name))}
    # CupyBackend's own overrides and its mixins' (backends/cupy_family.py), not Backend's generic ones.
    mine = [cls for cls in CupyBackend.__mro__ if cls not in Backend.__mro__]
    overridden = {name for name in hot if any(name in cls.__dict__ for cls in mine)}
    kernels = overridden - {"owns", "from_numpy", "to_numpy", "synchronize", "random_generator", "describe"}
    assert kernels <= set(LAUNCHES), f"overrides without a launch count: {kernels - set(LAUNCHES)}"
    # The rest of LAUNCHES are generic methods that are one launch as they stand (dropout_backward: dy * mask).
    assert set(LAUNCHES) <= hot and set(LAUNCHES) - kernels == {"dropout_backward"}


def test_tf32_modes():
    assert _tf32_mode("off") == "off" and _tf32_mode(" Conv ") == "conv" and _tf32_mode("1") == "all"
    assert set(TF32_MODES) == {"off", "conv", "all"}
    with pytest.raises(ValueError, match="DCNN_TF32.*off, conv, all"):
        _tf32_mode("fast")


def test_importing_the_kernels_imports_no_cupy():
    code = "import sys, backends.cupy_kernels, backends.cupy_backend; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_kernel_objects_construct_with_cupy():
    """CuPy parses every kernel's parameters (no GPU needed; nothing is compiled)."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed here")
    cupy_kernels.elementwise.cache_clear()
    cupy_kernels.raw.cache_clear()
    for name in cupy_kernels.ELEMENTWISE:
        kernel = cupy_kernels.elementwise(name)
        assert isinstance(kernel, cupy.ElementwiseKernel)
        assert kernel.nin + kernel.nout == len(cuda_on_cpu._parse(cupy_kernels.ELEMENTWISE[name][0])) + \
            len(cuda_on_cpu._parse(cupy_kernels.ELEMENTWISE[name][1]))
    for name in cupy_kernels.RAW:
        for dtype in ("float32", "float64"):
            assert isinstance(cupy_kernels.raw(name, dtype), cupy.RawKernel)
    with pytest.raises(TypeError, match="float32 or float64"):
        cupy_kernels.raw("bn_stats", "float16")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA toolkit (nvcc) here")
def test_cuda_sources_compile_with_nvcc():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_kernels_nvcc.py")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("mode", ["conv", "all"])
def test_tf32_modes_agree_with_fp32_on_a_gpu(rng, mode):
    try:
        backend = backends.resolve("cupy")
    except backends.BackendError as exc:
        pytest.skip(f"cupy backend unavailable here: {exc}")
    x = backend.from_numpy(rng.standard_normal((8, 16, 12, 12)).astype(np.float32))
    weight = backend.from_numpy(rng.standard_normal((32, 16, 3, 3)).astype(np.float32))
    reference, _ = backend.conv2d(x, weight, None, 1, 1)
    backend.tf32 = mode
    try:
        y, _ = backend.conv2d(x, weight, None, 1, 1)
    finally:
        backend.tf32 = "off"
    again, _ = backend.conv2d(x, weight, None, 1, 1)
    np.testing.assert_allclose(host(backend, y), host(backend, reference), rtol=2e-2, atol=2e-2)
    np.testing.assert_array_equal(host(backend, again), host(backend, reference))


class FakeRuntime:
    def __init__(self, driver, runtime=13020, devices=1):
        self.driver, self.runtime, self.devices = driver, runtime, devices

    def driverGetVersion(self):
        return self.driver

    def runtimeGetVersion(self):
        return self.runtime

    def getDeviceCount(self):
        return self.devices


@pytest.mark.parametrize("driver,devices,message", [
    (0, 0, "no CUDA GPU/driver found"),                          # CuPy installed, no NVIDIA driver
    (12080, 1, "driver supports CUDA 12.8, but this CuPy needs CUDA 13"),
    (13000, 0, "no CUDA GPU found"),
])
def test_why_cupy_cannot_run_is_said_plainly(driver, devices, message):
    from types import SimpleNamespace
    from backends.cupy_backend import BackendUnavailable, _check_driver
    fake = SimpleNamespace(cuda=SimpleNamespace(runtime=FakeRuntime(driver, devices=devices)))
    with pytest.raises(BackendUnavailable, match=message):
        _check_driver(fake)
    assert "insufficient" not in message


def test_a_working_driver_passes_the_check():
    from types import SimpleNamespace
    from backends.cupy_backend import _check_driver
    _check_driver(SimpleNamespace(cuda=SimpleNamespace(runtime=FakeRuntime(13020))))


def test_a_driver_without_a_device_is_said_plainly():
    from types import SimpleNamespace
    from backends.cupy_backend import BackendUnavailable, _check_driver

    class NoDevice(FakeRuntime):
        def getDeviceCount(self):
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    with pytest.raises(BackendUnavailable, match="no CUDA GPU found"):
        _check_driver(SimpleNamespace(cuda=SimpleNamespace(runtime=NoDevice(13000))))


# --- issue 20: activations, depthwise / grouped / transposed convolution, resampling, norms ----------
ACTIVATION_KINDS = [("leaky_relu", 0.01), ("elu", 0.7), ("sigmoid", 0.0), ("tanh", 0.0), ("silu", 0.0),
                    ("gelu", 0.0), ("gelu_tanh", 0.0), ("hardsigmoid", 0.0), ("hardswish", 0.0)]


@pytest.mark.parametrize("kind,alpha", ACTIVATION_KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation(fused, rng, kind, alpha, dtype):
    data = rng.standard_normal((2, 3, 4, 5)) * 4
    data.flat[:9] = [0.0, -3.0, 3.0, 6.0, -6.0, 60.0, -60.0, 100.0, -100.0]
    x = fused.xp.permute_dims(fused.from_numpy(data.transpose(0, 2, 3, 1).astype(dtype)), (0, 3, 1, 2))
    (y, saved), (y_ref, saved_ref) = fused.activation(x, kind, alpha), generic(fused).activation(x, kind, alpha)
    close(fused, y, y_ref, dtype, kind)
    dy = fused.from_numpy(rng.standard_normal(data.shape).astype(dtype))
    close(fused, fused.activation_backward(dy, saved), generic(fused).activation_backward(dy, saved_ref), dtype,
          f"{kind} backward")


def _grads(fused, ours, ref, dtype, what):
    for name, a, b in zip(("dx", "dweight", "dbias"), ours, ref):
        assert (a is None) == (b is None), f"{what} {name}"
        if a is not None:
            close(fused, a, b, dtype, f"{what} {name}")


DEPTHWISE = [  # (channels, multiplier, (kh, kw), stride, pads, dilation, h, w)
    (3, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 7, 8), (2, 3, (3, 5), (1, 2), (2, 2, 1, 1), (2, 1), 9, 8),
    (4, 2, (2, 2), (2, 1), (0, 1, 1, 0), (1, 1), 6, 7), (3, 1, (3, 3), (3, 2), (0, 2, 2, 0), (2, 3), 11, 12)]


@pytest.mark.parametrize("c,m,k,stride,pads,dilation,h,w", DEPTHWISE)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_conv2d(fused, rng, c, m, k, stride, pads, dilation, h, w, use_bias, dtype):
    x = fused.from_numpy(rng.standard_normal((2, c, h, w)).astype(dtype))
    weight = fused.from_numpy(rng.standard_normal((c * m, 1) + k).astype(dtype))
    bias = fused.from_numpy(rng.standard_normal(c * m).astype(dtype)) if use_bias else None
    (y, saved), (y_ref, saved_ref) = (b.depthwise_conv2d(x, weight, bias, stride, pads, dilation)
                                      for b in (fused, generic(fused)))
    close(fused, y, y_ref, dtype, "depthwise")
    dy = fused.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    for input_grad, weight_grad in ((True, True), (False, True), (True, False)):
        flags = dict(input_grad=input_grad, weight_grad=weight_grad)
        _grads(fused, fused.depthwise_conv2d_backward(dy, saved, weight, **flags),
               generic(fused).depthwise_conv2d_backward(dy, saved_ref, weight, **flags), dtype, f"depthwise {flags}")


GROUPED = [  # (filters, channels, groups, (kh, kw), stride, pads, dilation, h, w)
    (4, 6, 2, (3, 2), (2, 1), (1, 1, 0, 0), (1, 2), 9, 8), (6, 3, 3, (4, 4), (1, 1), (1, 2, 2, 1), (2, 2), 7, 8),
    (3, 2, 1, (3, 3), (1, 1), (1, 1, 1, 1), (3, 3), 9, 9), (6, 4, 2, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 5, 6)]


@pytest.mark.parametrize("f,c,g,k,stride,pads,dilation,h,w", GROUPED)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_grouped(fused, rng, f, c, g, k, stride, pads, dilation, h, w, use_bias, dtype):
    x = fused.from_numpy(rng.standard_normal((2, c, h, w)).astype(dtype))
    weight = fused.from_numpy(rng.standard_normal((f, c // g) + k).astype(dtype))
    bias = fused.from_numpy(rng.standard_normal(f).astype(dtype)) if use_bias else None
    (y, saved), (y_ref, saved_ref) = (b.conv2d_grouped(x, weight, bias, stride, pads, dilation, g)
                                      for b in (fused, generic(fused)))
    close(fused, y, y_ref, dtype, "grouped")
    dy = fused.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    for input_grad, weight_grad in ((True, True), (False, True), (True, False)):
        flags = dict(input_grad=input_grad, weight_grad=weight_grad)
        _grads(fused, fused.conv2d_grouped_backward(dy, saved, weight, **flags),
               generic(fused).conv2d_grouped_backward(dy, saved_ref, weight, **flags), dtype, f"grouped {flags}")


TRANSPOSED = [  # (filters, channels, groups, (kh, kw), stride, padding, output_padding, dilation, h, w)
    (4, 2, 1, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 5, 4), (6, 4, 2, (3, 4), (2, 3), (2, 1), (1, 2), (2, 1), 5, 4),
    (3, 3, 1, (2, 2), (3, 3), (0, 0), (2, 2), (3, 3), 3, 3), (2, 2, 2, (1, 3), (1, 1), (0, 1), (0, 0), (1, 1), 4, 5)]


@pytest.mark.parametrize("f,c,g,k,stride,padding,output_padding,dilation,h,w", TRANSPOSED)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose2d(fused, rng, f, c, g, k, stride, padding, output_padding, dilation, h, w, use_bias, dtype):
    x = fused.from_numpy(rng.standard_normal((2, c, h, w)).astype(dtype))
    weight = fused.from_numpy(rng.standard_normal((c, f // g) + k).astype(dtype))
    bias = fused.from_numpy(rng.standard_normal(f).astype(dtype)) if use_bias else None
    args = (stride, padding, output_padding, dilation, g)
    (y, saved), (y_ref, saved_ref) = (b.conv_transpose2d(x, weight, bias, *args) for b in (fused, generic(fused)))
    close(fused, y, y_ref, dtype, "transposed")
    dy = fused.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    for input_grad, weight_grad in ((True, True), (False, True), (True, False)):
        flags = dict(input_grad=input_grad, weight_grad=weight_grad)
        _grads(fused, fused.conv_transpose2d_backward(dy, saved, weight, **flags),
               generic(fused).conv_transpose2d_backward(dy, saved_ref, weight, **flags), dtype, f"transposed {flags}")


@pytest.mark.parametrize("size", [(2, 2), (3, 2), (1, 4)])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("hw", [(4, 5), (1, 1), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsample2d(fused, rng, size, mode, hw, dtype):
    x = fused.from_numpy(rng.standard_normal((2, 3) + hw).astype(dtype))
    (y, saved), (y_ref, saved_ref) = fused.upsample2d(x, size, mode), generic(fused).upsample2d(x, size, mode)
    close(fused, y, y_ref, dtype, "upsample")
    dy = fused.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    close(fused, fused.upsample2d_backward(dy, saved), generic(fused).upsample2d_backward(dy, saved_ref), dtype,
          "upsample backward")


@pytest.mark.parametrize("pads,value", [((1, 2, 0, 3), 0.0), ((1, 1, 1, 1), -math.inf), ((0, 0, 0, 0), 0.0)])
def test_pad2d(fused, rng, pads, value):
    x = fused.from_numpy(rng.standard_normal((2, 3, 4, 5)).astype(np.float32))
    close(fused, fused.pad2d(x, pads, value), generic(fused).pad2d(x, pads, value), np.float32, "pad2d", exact=True)


@pytest.mark.parametrize("ties", [False, True])
def test_global_max_pool2d(fused, rng, ties):
    data = rng.standard_normal((3, 4, 5, 6))
    if ties:
        data = np.round(data)
    x = fused.from_numpy(data.astype(np.float32))
    (y, saved), (y_ref, saved_ref) = fused.global_max_pool2d(x), generic(fused).global_max_pool2d(x)
    close(fused, y, y_ref, np.float32, "global max", exact=True)
    dy = fused.from_numpy(rng.standard_normal((3, 4)).astype(np.float32))
    close(fused, fused.global_max_pool2d_backward(dy, saved), generic(fused).global_max_pool2d_backward(dy, saved_ref),
          np.float32, "global max backward", exact=True)


def test_dropout2d(fused, rng):
    x = fused.from_numpy(rng.standard_normal((6, 5, 3, 4)).astype(np.float32))
    y, mask = fused.dropout2d(x, 0.4, FixedDraws(fused, np.random.default_rng(2)))
    y_ref, mask_ref = generic(fused).dropout2d(x, 0.4, FixedDraws(fused, np.random.default_rng(2)))
    close(fused, y, y_ref, np.float32, "dropout2d", exact=True)
    dy = fused.from_numpy(rng.standard_normal((6, 5, 3, 4)).astype(np.float32))
    close(fused, fused.dropout_backward(dy, mask), generic(fused).dropout_backward(dy, mask_ref), np.float32,
          "dropout2d backward", exact=True)


@pytest.mark.parametrize("kind,shape,groups", [("layer", (3, 4, 5, 6), 0), ("layer", (5, 7), 0),
                                               ("group", (3, 6, 4, 5), 2), ("group", (2, 4, 3, 3), 4),
                                               ("group", (2, 3, 5, 1), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_norms(fused, rng, kind, shape, groups, dtype):
    x = fused.from_numpy((rng.standard_normal(shape) * 3 + 2).astype(dtype))
    pshape = shape[1:] if kind == "layer" else (shape[1],)
    weight = fused.from_numpy(rng.uniform(0.5, 2, pshape).astype(dtype))
    bias = fused.from_numpy(rng.standard_normal(pshape).astype(dtype))
    dy = fused.from_numpy(rng.standard_normal(shape).astype(dtype))
    results = []
    for b in (fused, generic(fused)):
        if kind == "layer":
            y, saved = b.layer_norm(x, weight, bias, 1e-5)
            grads = b.layer_norm_backward(dy, saved)
            no_dx = b.layer_norm_backward(dy, saved, input_grad=False)
        else:
            y, saved = b.group_norm(x, weight, bias, groups, 1e-5)
            grads = b.group_norm_backward(dy, saved)
            no_dx = b.group_norm_backward(dy, saved, input_grad=False)
        assert no_dx[0] is None
        results.append([y, *grads, *no_dx[1:]])
    for name, ours, ref in zip(("y", "dx", "dweight", "dbias", "dweight (no dx)", "dbias (no dx)"), *results):
        close(fused, ours, ref, dtype, f"{kind} norm {name}")
