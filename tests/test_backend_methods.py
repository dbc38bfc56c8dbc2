"""Every backend's overrides of the hot operations against the generic versions (backends/ops).

The generic method runs on the same array library and device (``generic(backend)``),
so only the override differs.  Exact where the arithmetic is the same operations in
the same order (max-pool, ReLU, the optimiser updates, im2col); otherwise within a
stated tolerance of a few float32 ulps of the values involved (GEMMs blocked
differently, sums in another order or in float64).
"""
import math

import numpy as np
import pytest

import backends
from helpers import generic, host

OVERRIDING = ("numba", "numba-small-tasks", "numba-blas-threads", "numpy-pure", "numpy-threads", "cupy")
# float32 results of sums over a few hundred terms, ordered differently: relative to the
# largest magnitude in the result.
F32_TOL = 2e-6


@pytest.fixture(params=OVERRIDING)
def fast(request):
    name = request.param
    if name == "numba":
        try:
            from backends.numba_backend import NumbaBackend
        except ImportError as exc:
            pytest.skip(f"numba is not importable: {exc}")
        return NumbaBackend("test")
    if name.startswith("numba-"):
        pytest.importorskip("numba")
        from backends.numba_backend import NumbaBackend
        backend = NumbaBackend("test")
        if name == "numba-small-tasks":   # every product split, in uneven slices, even for tiny inputs
            backend.CONV_ROWS_PER_TASK, backend.GEMM_MIN_WORK, backend.CONV_BAND_BYTES = 1, 1, 600
        else:                             # without NumPy's OpenBLAS: BLAS's own threads
            backend._sgemm = None
        return backend
    if name.startswith("numpy"):
        from backends.numpy_backend import NumpyBackend
        backend = NumpyBackend("test")
        if name == "numpy-threads":   # the batch split over threads, even for tiny inputs, unevenly
            backend.threads, backend.parallel_min_size = 3, 0
        return backend
    try:
        return backends.resolve(name)
    except backends.BackendError as exc:
        pytest.skip(f"{name} backend unavailable here: {exc}")




def close(backend, ours, ref, tol=F32_TOL, what=""):
    ours, ref = host(backend, ours), host(backend, ref)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tol * scale, err_msg=what)


def channels_last_view(backend, rng, shape, dtype=np.float32):
    """An NCHW-shaped array with channels-last memory, as the layers pass them."""
    n, c, h, w = shape
    nhwc = backend.from_numpy(rng.standard_normal((n, h, w, c)).astype(dtype))
    return backend.xp.permute_dims(nhwc, (0, 3, 1, 2))


CONVS = [  # (channels, filters, k, stride, pad, h, w)
    (1, 4, 3, 1, 1, 9, 8), (3, 5, 3, 2, 1, 9, 9), (6, 3, 2, 1, 0, 5, 7), (2, 3, 3, 1, 2, 4, 4),
    (4, 2, 1, 1, 0, 5, 5), (2, 4, 5, 3, 2, 11, 10), (5, 3, 4, 2, 2, 6, 6), (2, 2, 2, 1, 1, 3, 3)]


@pytest.mark.parametrize("c,f,k,stride,pad,h,w", CONVS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_conv2d(fast, rng, c, f, k, stride, pad, h, w, bias, layout):
    x = (channels_last_view(fast, rng, (3, c, h, w)) if layout == "nhwc"
         else fast.from_numpy(rng.standard_normal((3, c, h, w)).astype(np.float32)))
    weight = fast.from_numpy(rng.standard_normal((f, c, k, k)).astype(np.float32))
    b = fast.from_numpy(rng.standard_normal(f).astype(np.float32)) if bias else None
    y, saved = fast.conv2d(x, weight, b, stride, pad)
    y_ref, saved_ref = generic(fast).conv2d(x, weight, b, stride, pad)
    close(fast, y, y_ref, what="y")
    dy = fast.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
    ours = fast.conv2d_backward(dy, saved, weight)
    ref = generic(fast).conv2d_backward(dy, saved_ref, weight)
    for name, a, r in zip(("dx", "dw", "db"), ours, ref):
        if r is None:
            assert a is None, name
        else:
            close(fast, a, r, what=name)
    dx, dw, db = fast.conv2d_backward(dy, saved, weight, input_grad=False)
    assert dx is None and dw is not None
    dx, dw, db = fast.conv2d_backward(dy, saved, weight, weight_grad=False)
    assert dw is None and db is None and dx is not None


@pytest.mark.parametrize("c,f,k,stride,pad,h,pool_k,pool_stride", [
    (1, 4, 3, 1, 1, 8, 2, 2), (3, 5, 3, 1, 1, 9, 2, 2), (2, 3, 3, 2, 1, 11, 3, 2), (4, 2, 1, 1, 0, 6, 3, 1)])
def test_conv2d_max_pool2d(fast, rng, c, f, k, stride, pad, h, pool_k, pool_stride):
    """The fused step against the generic conv2d then max_pool2d, and both backward passes after it."""
    x = channels_last_view(fast, rng, (5, c, h, h))
    weight = fast.from_numpy(rng.standard_normal((f, c, k, k)).astype(np.float32))
    b = fast.from_numpy(rng.standard_normal(f).astype(np.float32))
    y, (conv_saved, pool_saved) = fast.conv2d_max_pool2d(x, weight, b, stride, pad, pool_k, pool_stride)
    ref = generic(fast)
    y_ref, (conv_ref, pool_ref) = ref.conv2d_max_pool2d(x, weight, b, stride, pad, pool_k, pool_stride)
    close(fast, y, y_ref, what="y")
    dy = fast.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
    ours = fast.conv2d_backward(fast.max_pool2d_backward(dy, pool_saved), conv_saved, weight)
    theirs = ref.conv2d_backward(ref.max_pool2d_backward(dy, pool_ref), conv_ref, weight)
    for name, a, r in zip(("dx", "dw", "db"), ours, theirs):
        close(fast, a, r, what=name)


POOLS = [(2, 2, 8, 8), (2, 2, 9, 7), (3, 2, 9, 8), (3, 3, 10, 11), (2, 1, 5, 6), (1, 1, 4, 4), (3, 1, 5, 5),
         (2, 3, 8, 9), (4, 4, 4, 4)]


@pytest.mark.parametrize("k,stride,h,w", POOLS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_exact(fast, rng, k, stride, h, w, ties, dtype):
    data = rng.standard_normal((2, 5, h, w))
    if ties:   # every pattern of ties, and a plateau as a blank background gives
        data = np.round(data * 2) / 2
        data[:, :2] = 0.5
    x = fast.xp.permute_dims(fast.from_numpy(data.transpose(0, 2, 3, 1).astype(dtype)), (0, 3, 1, 2))
    y, saved = fast.max_pool2d(x, k, stride)
    y_ref, saved_ref = generic(fast).max_pool2d(x, k, stride)
    np.testing.assert_array_equal(host(fast, y), host(fast, y_ref))
    # The gradient may arrive in NCHW memory (after a Flatten).
    dy = fast.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    dx, dx_ref = fast.max_pool2d_backward(dy, saved), generic(fast).max_pool2d_backward(dy, saved_ref)
    assert host(fast, dx).dtype == np.dtype(dtype)
    if stride >= k:   # each pixel in at most one window: the gradient is routed, not summed
        np.testing.assert_array_equal(host(fast, dx), host(fast, dx_ref))
    else:             # overlapping windows: the same terms, summed in another order
        close(fast, dx, dx_ref, tol=F32_TOL)


@pytest.mark.parametrize("cap", [math.inf, 0.8])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7, 9)])
def test_relu_exact(fast, rng, cap, shape):
    data = np.round(rng.standard_normal(shape) * 2) / 2   # exact zeros and values at the cap
    data.flat[::7] = cap if cap != math.inf else 0.0
    x = fast.from_numpy(data.astype(np.float32))
    y, saved = fast.relu(x, cap)
    y_ref, saved_ref = generic(fast).relu(x, cap)
    np.testing.assert_array_equal(host(fast, y), host(fast, y_ref))
    dy = fast.from_numpy(rng.standard_normal(shape).astype(np.float32))
    np.testing.assert_array_equal(host(fast, fast.relu_backward(dy, saved)),
                                  host(fast, generic(fast).relu_backward(dy, saved_ref)))


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concat_and_add_exact(fast, rng, layout, dtype):
    # As a U-Net's skip: concatenated with the upsampled maps, then its two gradients summed, one
    # of them the Concatenate's slice of a channels-last gradient.
    def maps(c):
        if layout == "nhwc":
            return channels_last_view(fast, rng, (3, c, 5, 4), dtype)
        return fast.from_numpy(rng.standard_normal((3, c, 5, 4)).astype(dtype))
    skip, up = maps(2), maps(3)
    y, y_ref = fast.concat([skip, up], 1), generic(fast).concat([skip, up], 1)
    np.testing.assert_array_equal(host(fast, y), host(fast, y_ref))
    sliced, other = channels_last_view(fast, rng, (3, 5, 5, 4), dtype)[:, 1:3], maps(2)
    for a, b in ((sliced, other), (other, sliced), (skip, other)):
        ours, ref = fast.add(a, b), generic(fast).add(a, b)
        assert host(fast, ours).dtype == np.dtype(dtype)
        np.testing.assert_array_equal(host(fast, ours), host(fast, ref))


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_class_argmax_exact(fast, rng, layout):
    # Per-pixel predicted classes of channels-last logits, with ties and NaNs (the first wins, as NumPy's).
    shape = (3, 6, 5, 4)
    logits = rng.integers(0, 3, shape).astype(np.float32)        # small integers: many ties
    logits[0, 2, 1, 1] = logits[1, 4, 2, 3] = logits[1, 1, 2, 3] = np.nan
    x = fast.from_numpy(logits)
    if layout == "nhwc":
        x = fast.xp.permute_dims(fast.from_numpy(np.ascontiguousarray(logits.transpose(0, 2, 3, 1))), (0, 3, 1, 2))
    ours, ref = fast.class_argmax(x), generic(fast).class_argmax(x)
    np.testing.assert_array_equal(host(fast, ours), host(fast, ref))
    np.testing.assert_array_equal(host(fast, ours), logits.argmax(axis=1))


@pytest.mark.parametrize("ignore_index", [None, 3, 255])
def test_confusion_counts_exact(fast, rng, ignore_index):
    # A class metric's counts every step: (N, H, W) predictions of a channels-last arg-max against
    # masks, some labels ignored and, for 255, some outside the classes (they count nowhere).
    k = 5
    logits = channels_last_view(fast, rng, (4, k, 6, 7), np.float32)
    predicted = fast.xp.argmax(logits, axis=1)
    labels = rng.integers(0, k, (4, 6, 7))
    labels[0, :2] = 3 if ignore_index is None else ignore_index
    labels = fast.from_numpy(labels)
    ours = fast.confusion_counts(predicted, labels, k, ignore_index)
    ref = generic(fast).confusion_counts(predicted, labels, k, ignore_index)
    assert host(fast, ours).dtype == np.int64 and host(fast, ours).shape == (k, k)
    np.testing.assert_array_equal(host(fast, ours), host(fast, ref))
    expected = np.zeros((k, k), np.int64)
    true, pred = host(fast, labels).ravel(), host(fast, predicted).ravel()
    kept = (true < k) & (true != (-1 if ignore_index is None else ignore_index))
    np.add.at(expected, (true[kept], pred[kept]), 1)
    np.testing.assert_array_equal(host(fast, ours), expected)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu_cap", [None, math.inf, 1.5])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 7, 3, 3), (1, 2, 1, 2)])
def test_batch_norm(fast, rng, training, relu_cap, shape):
    n, c, h, w = shape
    x = channels_last_view(fast, rng, shape)
    x = x * 3.0 + 5.0                          # a mean far from 0: the variance must not cancel
    weight = fast.from_numpy(rng.uniform(0.5, 2, c).astype(np.float32))
    bias = fast.from_numpy(rng.standard_normal(c).astype(np.float32))
    stats = [rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)]
    running = {who: [fast.from_numpy(s.copy()) for s in stats] for who in ("ours", "ref")}
    opts = dict(training=training, momentum=0.1, eps=1e-5, relu_cap=relu_cap)
    y, saved = fast.batch_norm(x, weight, bias, *running["ours"], **opts)
    y_ref, saved_ref = generic(fast).batch_norm(x, weight, bias, *running["ref"], **opts)
    close(fast, y, y_ref, tol=1e-5, what="y")
    for ours, ref in zip(running["ours"], running["ref"]):
        close(fast, ours, ref, tol=1e-6, what="running statistics")
    dy = fast.from_numpy(rng.standard_normal(shape).astype(np.float32))
    ours = fast.batch_norm_backward(dy, saved)
    ref = generic(fast).batch_norm_backward(dy, saved_ref)
    for name, a, r in zip(("dx", "dweight", "dbias"), ours, ref):
        close(fast, a, r, tol=2e-5, what=name)
    assert fast.batch_norm_backward(dy, saved, input_grad=False)[0] is None


@pytest.mark.parametrize("decoupled,weight_decay", [(False, 0.0), (False, 0.01), (True, 0.05)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_update_bitwise(fast, rng, decoupled, weight_decay, dtype):
    """The same operations in the same order: bitwise equal, over several steps."""
    size = 1001
    state = {who: [fast.from_numpy(rng.standard_normal(size).astype(dtype)) for _ in range(1)]
             + [fast.from_numpy(np.zeros(size, dtype)) for _ in range(2)] for who in ("ours",)}
    state["ref"] = [fast.xp.asarray(a, copy=True) for a in state["ours"]]
    for step in range(1, 4):
        grad = fast.from_numpy(rng.standard_normal(size).astype(dtype))
        opts = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=weight_decay,
                    decoupled=decoupled, step=step)
        fast.adam_update(state["ours"][0], grad, *state["ours"][1:], **opts)
        generic(fast).adam_update(state["ref"][0], grad, *state["ref"][1:], **opts)
        for a, r in zip(state["ours"], state["ref"]):
            np.testing.assert_array_equal(host(fast, a), host(fast, r))


@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                            (0.9, True, 1e-3), (0.5, False, 0.1)])
def test_sgd_update_bitwise(fast, rng, momentum, nesterov, weight_decay):
    size = 777
    ours = [fast.from_numpy(rng.standard_normal(size).astype(np.float32)), fast.from_numpy(np.zeros(size, np.float32))]
    ref = [fast.xp.asarray(a, copy=True) for a in ours]
    for _ in range(3):
        grad = fast.from_numpy(rng.standard_normal(size).astype(np.float32))
        opts = dict(lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        fast.sgd_update(ours[0], grad, ours[1] if momentum else None, **opts)
        generic(fast).sgd_update(ref[0], grad, ref[1] if momentum else None, **opts)
        for a, r in zip(ours, ref):
            np.testing.assert_array_equal(host(fast, a), host(fast, r))


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_cross_entropy(fast, rng, one_hot):
    logits = fast.from_numpy((rng.standard_normal((9, 5)) * 4).astype(np.float32))
    labels = rng.integers(0, 5, 9)
    targets = fast.from_numpy(np.eye(5, dtype=np.float32)[labels] if one_hot else labels)
    ours = fast.softmax_cross_entropy(logits, targets)
    ref = generic(fast).softmax_cross_entropy(logits, targets)
    for a, r in zip(ours, ref):
        close(fast, a, r, tol=1e-6)


def test_dropout(fast, rng):
    x = fast.from_numpy(rng.standard_normal((6, 40)).astype(np.float32))
    y, saved = fast.dropout(x, 0.3, fast.random_generator(5))
    y_ref, saved_ref = generic(fast).dropout(x, 0.3, fast.random_generator(5))
    np.testing.assert_array_equal(host(fast, y), host(fast, y_ref))
    dy = fast.from_numpy(rng.standard_normal((6, 40)).astype(np.float32))
    np.testing.assert_array_equal(host(fast, fast.dropout_backward(dy, saved)),
                                  host(fast, generic(fast).dropout_backward(dy, saved_ref)))


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_matmul_rows(fast, rng, rows):
    """A tall product, split over threads by rows on the CPU: each row is the same dot products."""
    a = fast.from_numpy(rng.standard_normal((rows, 19)).astype(np.float32))
    b = fast.from_numpy(rng.standard_normal((19, 5)).astype(np.float32))
    close(fast, fast.matmul_rows(a, b), generic(fast).matmul_rows(a, b), tol=1e-6)


def pooled_backend():
    pytest.importorskip("numba")
    from backends.numba_backend import NumbaBackend
    backend = NumbaBackend("test")
    if backend._sgemm is None:
        pytest.skip("NumPy's OpenBLAS GEMM is not reachable here")
    backend.GEMM_MIN_WORK = 1
    return backend


@pytest.mark.parametrize("m,k,n", [(300, 19, 5), (4, 33, 70), (1, 7, 1), (128, 64, 128)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_pooled_gemm_slices(rng, m, k, n, trans_a, trans_b):
    """Every slicing and transposition against NumPy's @ (whose small products take other kernels)."""
    backend = pooled_backend()
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    a, b = (a.T if trans_a else a), (b.T if trans_b else b)
    close(backend, backend.matmul_rows(a, b), a @ b)


def test_pooled_products_leave_the_blas_thread_count_as_it_was(rng):
    backend = pooled_backend()
    set_threads, get_threads = backend._blas_threads
    before = get_threads()
    try:
        set_threads(2)
        a = rng.standard_normal((50, 8)).astype(np.float32)
        backend.matmul_rows(a, a.T)
        assert get_threads() == 2
    finally:
        set_threads(before)


def test_pooled_convolution_does_not_depend_on_the_thread_count(rng):
    """Fixed slices (images per task, so weight-gradient partials): 1 and 2 threads give the same bits."""
    import numba
    backend = pooled_backend()
    backend.CONV_ROWS_PER_TASK, backend.CONV_BAND_BYTES = 2 * 7 * 7, 2000   # 2 images a task: 5 tasks for 9 images, in bands
    x = rng.standard_normal((9, 3, 7, 7)).astype(np.float32)
    weight = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            y, saved = backend.conv2d(x, weight, bias, 1, 1)
            results.append([y.copy(), *backend.conv2d_backward(np.ones_like(y), saved, weight)])
    finally:
        numba.set_num_threads(before)
    for ours, ref in zip(*results):
        np.testing.assert_array_equal(ours, ref)


# --- issue 20: depthwise convolution, activations ------------------------------------------------------
DEPTHWISE = [  # (channels, multiplier, (kh, kw), stride, pads (top, bottom, left, right), dilation, h, w)
    (3, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 7, 8), (4, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 9, 8),
    (2, 3, (3, 5), (1, 2), (2, 2, 1, 1), (2, 1), 9, 8), (5, 2, (2, 2), (2, 1), (0, 1, 1, 0), (1, 1), 6, 7),
    (3, 1, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), 8, 9), (1, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 3, 3),
    (6, 1, (3, 3), (3, 2), (0, 2, 2, 0), (2, 3), 11, 12)]


@pytest.mark.parametrize("c,m,k,stride,pads,dilation,h,w", DEPTHWISE)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_conv2d(fast, rng, c, m, k, stride, pads, dilation, h, w, bias, dtype):
    x = channels_last_view(fast, rng, (3, c, h, w), dtype)
    weight = fast.from_numpy(rng.standard_normal((c * m, 1) + k).astype(dtype))
    b = fast.from_numpy(rng.standard_normal(c * m).astype(dtype)) if bias else None
    ref = generic(fast)
    (y, saved), (y_ref, saved_ref) = (be.depthwise_conv2d(x, weight, b, stride, pads, dilation) for be in (fast, ref))
    tol = F32_TOL if dtype == np.float32 else 1e-12
    close(fast, y, y_ref, tol, "y")
    dy = fast.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    for input_grad, weight_grad in ((True, True), (False, True), (True, False)):
        ours = fast.depthwise_conv2d_backward(dy, saved, weight, input_grad=input_grad, weight_grad=weight_grad)
        theirs = ref.depthwise_conv2d_backward(dy, saved_ref, weight, input_grad=input_grad, weight_grad=weight_grad)
        for name, a, r in zip(("dx", "dw", "db"), ours, theirs):
            assert (a is None) == (r is None), name
            if a is not None:
                close(fast, a, r, tol, name)


TRANSPOSED = [  # (channels, filters, (kh, kw), stride, padding, output_padding, dilation, h, w)
    (3, 4, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 5, 4), (5, 2, (2, 3), (2, 3), (0, 0), (1, 2), (1, 1), 3, 4),
    (2, 3, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 4, 3), (4, 3, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 4, 5)]


@pytest.mark.parametrize("c,f,k,stride,padding,output_padding,dilation,h,w", TRANSPOSED)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("strided_dy", [False, True])
def test_conv_transpose2d(fast, rng, c, f, k, stride, padding, output_padding, dilation, h, w, bias, strided_dy):
    x = channels_last_view(fast, rng, (3, c, h, w))
    weight = fast.from_numpy(rng.standard_normal((c, f) + k).astype(np.float32))
    b = fast.from_numpy(rng.standard_normal(f).astype(np.float32)) if bias else None
    args = (stride, padding, output_padding, dilation, 1)
    (y, saved), (y_ref, saved_ref) = (be.conv_transpose2d(x, weight, b, *args) for be in (fast, generic(fast)))
    close(fast, y, y_ref, what="y")
    # As a Concatenate's backward pass hands it on: a channel slice of a channels-last gradient.
    dy = channels_last_view(fast, rng, (y.shape[0], f + 2, y.shape[2], y.shape[3]))[:, 1:f + 1] if strided_dy \
        else fast.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
    for input_grad, weight_grad in ((True, True), (False, True), (True, False)):
        flags = dict(input_grad=input_grad, weight_grad=weight_grad)
        ours = fast.conv_transpose2d_backward(dy, saved, weight, **flags)
        theirs = generic(fast).conv_transpose2d_backward(dy, saved_ref, weight, **flags)
        for name, a, r in zip(("dx", "dw", "db"), ours, theirs):
            assert (a is None) == (r is None), name
            if a is not None:
                close(fast, a, r, what=f"{name} {flags}")


@pytest.mark.parametrize("options", [{}, {"ignore_index": 255}, {"ignore_index": 0, "label_smoothing": 0.2},
                                     {"weight": [0.5, 2.0, 1.0, 0.25, 3.0], "ignore_index": 255, "label_smoothing": 0.1}])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_cross_entropy_nd(fast, rng, options, layout):
    logits = (channels_last_view(fast, rng, (3, 5, 6, 7)) if layout == "nhwc"
              else fast.from_numpy(rng.standard_normal((3, 5, 6, 7)).astype(np.float32))) * 4
    labels = rng.integers(0, 5, (3, 6, 7))
    labels[0, :2] = 255 if options.get("ignore_index") == 255 else labels[0, :2]
    weight = fast.from_numpy(np.asarray(options["weight"], np.float32)) if "weight" in options else None
    args = (fast.from_numpy(labels), weight, options.get("ignore_index"), options.get("label_smoothing", 0.0))
    for ours, ref, name in zip(fast.cross_entropy_nd(logits, *args), generic(fast).cross_entropy_nd(logits, *args),
                               ("loss", "grad")):
        close(fast, ours, ref, 1e-5, name)


ACTIVATION_KINDS = [("leaky_relu", 0.01), ("leaky_relu", 0.3), ("elu", 1.0), ("elu", 0.4), ("sigmoid", 0.0),
                    ("tanh", 0.0), ("silu", 0.0), ("gelu", 0.0), ("gelu_tanh", 0.0), ("hardsigmoid", 0.0),
                    ("hardswish", 0.0)]


@pytest.mark.parametrize("kind,alpha", ACTIVATION_KINDS)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "flat"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation(fast, rng, kind, alpha, layout, dtype):
    if layout == "flat":
        data = rng.standard_normal((7, 13)) * 4
    else:
        data = rng.standard_normal((3, 4, 5, 6)) * 4
    data.flat[:10] = [0.0, -3.0, 3.0, 6.0, -6.0, 60.0, -60.0, 100.0, -100.0, 1e-8]
    if layout == "nhwc":
        x = fast.xp.permute_dims(fast.from_numpy(data.transpose(0, 2, 3, 1).astype(dtype)), (0, 3, 1, 2))
    else:
        x = fast.from_numpy(data.astype(dtype))
    (y, saved), (y_ref, saved_ref) = fast.activation(x, kind, alpha), generic(fast).activation(x, kind, alpha)
    tol = 1e-6 if dtype == np.float32 else 1e-13      # the fused kernels compute in float64 and round once
    close(fast, y, y_ref, tol, "y")
    dy = fast.from_numpy(rng.standard_normal(tuple(x.shape)).astype(dtype))
    close(fast, fast.activation_backward(dy, saved), generic(fast).activation_backward(dy, saved_ref), tol, "dx")


@pytest.mark.parametrize("kind,shape,groups", [("layer", (3, 4, 5, 6), 1), ("layer", (5, 7), 1),
                                               ("group", (3, 6, 4, 5), 2), ("group", (2, 4, 3, 3), 4),
                                               ("group", (40, 3, 5, 1), 1)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_norms(fast, rng, kind, shape, groups, layout, dtype):
    data = rng.standard_normal(shape) * 3 + 2
    if layout == "nhwc" and len(shape) == 4:
        x = fast.xp.permute_dims(fast.from_numpy(data.transpose(0, 2, 3, 1).astype(dtype)), (0, 3, 1, 2))
    else:
        x = fast.from_numpy(data.astype(dtype))
    pshape = shape[1:] if kind == "layer" else (shape[1],)
    weight = fast.from_numpy(rng.uniform(0.5, 2, pshape).astype(dtype))
    bias = fast.from_numpy(rng.standard_normal(pshape).astype(dtype))
    dy = fast.from_numpy(rng.standard_normal(shape).astype(dtype))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    results = []
    for be in (fast, generic(fast)):
        if kind == "layer":
            y, saved = be.layer_norm(x, weight, bias, 1e-5)
            out = [y, *be.layer_norm_backward(dy, saved), *be.layer_norm_backward(dy, saved, input_grad=False)]
        else:
            y, saved = be.group_norm(x, weight, bias, groups, 1e-5)
            out = [y, *be.group_norm_backward(dy, saved), *be.group_norm_backward(dy, saved, input_grad=False)]
        assert out[4] is None
        results.append(out[:4] + out[5:])
    for name, a, r in zip(("y", "dx", "dweight", "dbias", "dweight (no dx)", "dbias (no dx)"), *results):
        close(fast, a, r, tol, name)
