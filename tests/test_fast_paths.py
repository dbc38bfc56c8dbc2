"""Device fast paths against the generic array-API ``Backend`` methods they override.

Each fast path (e.g. ``NumpyBackend.patches``) must give exactly what the generic
method gives on the same backend's arrays: random data, ties, odd sizes, strides
that overlap, tile, or leave gaps.  The layers that use them are also checked
against PyTorch (tests/test_torch_oracle.py) and by gradient checks.
"""
import numpy as np
import pytest

import backends
from helpers import generic, host
from dcnn import BatchNorm2D, Conv2D, DCNNetwork, Dense, Flatten, MaxPool2D, ReLU
from dcnn.layers.container import ConvMaxPool, Sequential, run_order

FAST = ("numpy", "numpy-threads", "cupy")
WINDOWS = [  # (k, stride, h, w)
    (2, 2, 8, 8), (2, 2, 9, 7), (3, 2, 9, 8), (3, 3, 10, 11), (2, 1, 5, 6), (1, 1, 4, 4), (3, 1, 5, 5),
    (2, 3, 8, 9), (4, 4, 4, 4), (3, 3, 3, 5)]


@pytest.fixture(params=FAST)
def fast(request):
    if request.param == "numpy-threads":
        # The batch split over threads, even for tiny inputs, and into uneven parts.
        from backends.numpy_backend import NumpyBackend
        threaded = NumpyBackend("test")
        threaded.threads, threaded.parallel_min_size = 3, 0
        return threaded
    try:
        return backends.resolve(request.param)
    except backends.BackendError as exc:
        pytest.skip(f"{request.param} backend unavailable here: {exc}")




def inputs(rng, shape, dtype, ties):
    x = rng.standard_normal(shape)
    if ties:  # few distinct values: ties of every pattern, and a plateau as a blank background gives
        x = np.round(x * 2) / 2
        x[:, : shape[1] // 3, :, :] = 0.5
    return x.astype(dtype)


@pytest.mark.parametrize("k,stride,h,w", WINDOWS)
@pytest.mark.parametrize("channels", [1, 3, 8])     # offset-major below 16 values per window row
@pytest.mark.parametrize("ones", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_patches(fast, rng, k, stride, h, w, channels, ones, dtype):
    x = fast.from_numpy(rng.standard_normal((2, h, w, channels)).astype(dtype))
    ours, ref = fast.patches(x, k, k, stride, ones), generic(fast).patches(x, k, k, stride, ones)
    assert ours.dtype == ref.dtype and tuple(ours.shape) == tuple(ref.shape)
    np.testing.assert_array_equal(host(fast, ours), host(fast, ref))


@pytest.mark.parametrize("channels", [1, 6])
def test_patches_of_a_channels_last_view(fast, rng, channels):
    """The convolution passes NCHW views of NHWC memory (and padded copies)."""
    nchw = fast.from_numpy(rng.standard_normal((2, channels, 7, 6)).astype(np.float32))
    view = fast.xp.permute_dims(nchw, (0, 2, 3, 1))
    for stride in (1, 2):
        ours, ref = fast.patches(view, 3, 3, stride, True), generic(fast).patches(view, 3, 3, stride, True)
        np.testing.assert_array_equal(host(fast, ours), host(fast, ref))


@pytest.mark.parametrize("k,stride,h,w", WINDOWS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool(fast, rng, k, stride, h, w, ties, dtype):
    x = fast.from_numpy(inputs(rng, (2, h, w, 4), dtype, ties))
    y, saved = fast.max_pool(x, k, stride)
    y_ref, saved_ref = generic(fast).max_pool(x, k, stride)
    assert y.dtype == y_ref.dtype and tuple(y.shape) == tuple(y_ref.shape)
    np.testing.assert_array_equal(host(fast, y), host(fast, y_ref))
    dy = fast.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    dx = fast.max_pool_backward(dy, saved, k, stride)
    dx_ref = generic(fast).max_pool_backward(dy, saved_ref, k, stride)
    assert dx.dtype == dx_ref.dtype and tuple(dx.shape) == tuple(x.shape)
    np.testing.assert_array_equal(host(fast, dx), host(fast, dx_ref))


def test_max_pool_all_ties_go_to_the_first_pixel(fast):
    x = fast.from_numpy(np.zeros((1, 4, 4, 2), np.float32))
    y, saved = fast.max_pool(x, 2, 2)
    dx = host(fast, fast.max_pool_backward(fast.xp.ones_like(y), saved, 2, 2))
    expected = np.zeros((1, 4, 4, 2), np.float32)
    expected[:, ::2, ::2, :] = 1
    np.testing.assert_array_equal(dx, expected)


def test_max_pool_of_a_channels_last_view_with_strided_gradient(fast, rng):
    """The pool sees NCHW views of NHWC memory; its gradient may arrive in NCHW memory."""
    xp = fast.xp
    x = xp.permute_dims(fast.from_numpy(rng.standard_normal((3, 6, 8, 8)).astype(np.float32)), (0, 2, 3, 1))
    y, saved = fast.max_pool(x, 2, 2)
    y_ref, saved_ref = generic(fast).max_pool(x, 2, 2)
    dy = xp.permute_dims(fast.from_numpy(rng.standard_normal((3, 6, 4, 4)).astype(np.float32)), (0, 2, 3, 1))
    np.testing.assert_array_equal(host(fast, fast.max_pool_backward(dy, saved, 2, 2)),
                                  host(fast, generic(fast).max_pool_backward(dy, saved_ref, 2, 2)))


@pytest.mark.parametrize("inner", [1, 7, 300, 5001])
def test_contract(fast, rng, inner):
    """A product with a long inner dimension, split over threads on the CPU."""
    a = rng.standard_normal((6, inner)).astype(np.float32)
    b = rng.standard_normal((inner, 5)).astype(np.float32)
    if hasattr(fast, "contract_min_inner"):
        fast.contract_min_inner = min(fast.contract_min_inner, 64) if fast.threads > 2 else fast.contract_min_inner
    ours = fast.contract(fast.from_numpy(a), fast.from_numpy(b))
    ref = generic(fast).contract(fast.from_numpy(a), fast.from_numpy(b))
    assert ours.dtype == ref.dtype and tuple(ours.shape) == (6, 5)
    np.testing.assert_allclose(host(fast, ours), host(fast, ref), rtol=1e-5, atol=1e-4)


def test_contract_leaves_the_blas_thread_count_as_it_was():
    from backends.numpy_backend import NumpyBackend
    backend = NumpyBackend("test")
    if backend._blas_threads is None:
        pytest.skip("no OpenBLAS thread control found in this NumPy")
    backend.threads, backend.contract_min_inner = 2, 64
    before = backend._blas_threads[1]()
    a, b = np.ones((3, 1000), np.float32), np.ones((1000, 2), np.float32)
    np.testing.assert_array_equal(backend.contract(a, b), np.full((3, 2), 1000, np.float32))
    assert backend._blas_threads[1]() == before


def test_run_order_puts_each_pool_before_its_relu():
    conv, relu, pool, relu2, pool2, dense = Conv2D(2), ReLU(), MaxPool2D(), ReLU(6.0), MaxPool2D(3, 2), Dense(3)
    assert run_order([conv, relu, pool, relu2, pool2, dense]) == [ConvMaxPool(conv, pool), relu, pool2, relu2, dense]
    assert run_order([relu, relu2, pool]) == [relu, pool, relu2]
    assert run_order([pool, relu]) == [pool, relu]


@pytest.mark.parametrize("cap", [None, 0.7])
@pytest.mark.parametrize("k,stride", [(2, 2), (3, 2), (2, 3)])
def test_pool_then_relu_equals_relu_then_pool(backend, rng, cap, k, stride):
    """The reordering is exact, forward and backward, even with plateaus at 0 and at the cap."""
    x = rng.standard_normal((2, 3, 9, 8))
    x[:, :, :4, :] = np.round(x[:, :, :4, :])   # many exact ties, some at 0
    x = backend.from_numpy(x.astype(np.float32))
    dy = None
    results = []
    for swapped in (False, True):
        block = Sequential([ReLU(cap), MaxPool2D(k, stride)])
        layers = run_order(block.layers) if swapped else block.layers
        y = x
        for layer in layers:
            y = layer.forward(y)
        if dy is None:
            dy = backend.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
        d = dy
        for layer in reversed(layers):
            d = layer.backward(d)
        results.append((host(backend, y), host(backend, d)))
    (y0, d0), (y1, d1) = results
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(d1, d0)


def test_network_training_step_matches_the_unfused_order(rng):
    """A whole step of the benchmark's network, with and without the reordering."""
    def make():
        return DCNNetwork([Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU(), MaxPool2D(2), Conv2D(6, 3, padding=1),
                           ReLU(), MaxPool2D(2), Flatten(), Dense(16), ReLU(), Dense(5)],
                          input_shape=(1, 12, 12), seed=3, backend="numpy").build().compile("sgd", lr=0.1, momentum=0.9)
    x = rng.random((8, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 5, 8)
    fused, plain = make(), make()
    plain._logit_layers = lambda: plain.layers          # the layers in the order they were added
    for _ in range(3):
        loss_f, _ = fused.train_on_batch(x, y)
        loss_p, _ = plain.train_on_batch(x, y)
        assert float(loss_f) == float(loss_p)
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(fused.state_dict()[key], value, err_msg=key)


def test_training_step_does_not_wait_for_the_device(rng):
    """No host synchronisation in a step: queued behind ~0.2 s of device work, the
    step is issued and returns long before that work is done (GPU only)."""
    try:
        backend = backends.resolve("cupy")
    except backends.BackendError as exc:
        pytest.skip(f"cupy backend unavailable here: {exc}")
    import time
    xp = backend.xp
    net = DCNNetwork([Conv2D(8, 3, padding=1), BatchNorm2D(), ReLU(), MaxPool2D(2), Flatten(), Dense(10)],
                     input_shape=(1, 28, 28), backend=backend).build().compile("sgd", lr=0.01, momentum=0.9)
    x = backend.from_numpy(rng.random((64, 1, 28, 28), dtype=np.float32))
    y = backend.from_numpy(rng.integers(0, 10, 64))
    net.train_on_batch(x, y)                 # compiles the kernels
    a = backend.from_numpy(rng.random((4096, 4096), dtype=np.float32))
    backend.synchronize()
    t0 = time.perf_counter()
    a @ a
    backend.synchronize()
    products = max(1, int(0.2 / max(time.perf_counter() - t0, 1e-6)))
    t0 = time.perf_counter()
    for _ in range(products):
        a = xp.tanh(a @ a)
    net.train_on_batch(x, y)
    host_done = time.perf_counter() - t0
    backend.synchronize()
    device_done = time.perf_counter() - t0
    assert host_done < 0.5 * device_done, f"host done after {host_done:.3f} s, device after {device_done:.3f} s"


@pytest.mark.parametrize("filters,channels,k,stride,pad", [(1, 1, 3, 1, 1), (1, 1, 2, 2, 0), (8, 3, 3, 1, 1)])
def test_conv_weight_gradient_both_reductions(backend, rng, filters, channels, k, stride, pad):
    """The weight gradient as per-sample products summed (a long reduction into a
    small matrix, as in the first layer) or as one GEMM, against float64 einsum."""
    layer = Conv2D(filters, k, stride, pad)
    x = rng.standard_normal((3, channels, 16, 16))
    layer.build(x.shape[1:], np.random.default_rng(0), backend)
    y = layer.forward(backend.from_numpy(x.astype(np.float32)))
    dy = rng.standard_normal(tuple(y.shape))
    layer.backward(backend.from_numpy(dy.astype(np.float32)))
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xpad, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    expected = np.einsum("nfyx,ncyxij->fcij", dy, windows[:, :, :dy.shape[2], :dy.shape[3]])
    np.testing.assert_allclose(host(backend, layer.grads["weight"]), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(host(backend, layer.grads["bias"]), dy.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)
