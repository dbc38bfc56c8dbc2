"""The CUDA backend: CuPy.  With backends/cupy_kernels.py, the only modules that import CuPy.

The hot operations are overridden by fused kernels (backends/cupy_kernels.py), so
a convnet training step is a few dozen launches rather than several hundred;
``LAUNCHES`` below says how many each override makes (scripts/count_launches.py
uses it).  Arrays cross the methods as C-contiguous NCHW.  No method reads a
value back to the host, so a training step never waits for the device
(tests/test_no_host_wait.py).

Matmul precision (TF32): ``DCNN_TF32`` = ``off`` (default: CuPy's own setting, full
FP32 unless ``CUPY_TF32=1``), ``conv`` (TF32 for the convolutions' GEMMs only, as
PyTorch's defaults do: cuDNN convolutions may use TF32, matmuls do not) or ``all``
(every float32 GEMM).  ``CupyBackend(tf32=...)`` or ``backend.tf32 = ...`` sets it too.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from .base import Backend
from .cupy_family import FAMILY_LAUNCHES, CupyFamily
from .ops.conv import conv_output_size

TF32_ENV = "DCNN_TF32"
TF32_MODES = ("off", "conv", "all")


class BackendUnavailable(RuntimeError):
    """CuPy cannot be used on this machine; the message says why."""


def _import_cupy():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        raise BackendUnavailable(
            f"CuPy is not importable ({type(exc).__name__}: {exc}). Install it with "
            "`pip install -e '.[gpu]'` (CUDA 13 toolkit from pip) or `pip install cupy-cuda13x` "
            "(system CUDA 13 toolkit); see the README's GPU section."
        ) from exc
    return cupy


def _check_driver(cupy) -> None:
    """A plain reason when there is no GPU or driver (the CUDA runtime's own message,
    'CUDA driver version is insufficient', misleads on a machine without either)."""
    try:
        driver = cupy.cuda.runtime.driverGetVersion()    # 0 when no driver is installed
    except Exception:
        driver = 0
    if driver == 0:
        raise BackendUnavailable("CuPy imports, but no CUDA GPU/driver found on this machine.")
    runtime = cupy.cuda.runtime.runtimeGetVersion()
    if driver < runtime // 1000 * 1000:
        raise BackendUnavailable(
            f"the NVIDIA driver supports CUDA {driver // 1000}.{driver % 1000 // 10}, but this CuPy needs "
            f"CUDA {runtime // 1000}: update the driver or install the CuPy for CUDA {driver // 1000}.")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:   # cudaErrorNoDevice and the like
        raise BackendUnavailable(f"CuPy imports and a CUDA driver is present, but no CUDA GPU found "
                                 f"({type(exc).__name__}: {exc}).") from exc
    if count < 1:
        raise BackendUnavailable("CuPy imports and a CUDA driver is present, but no CUDA GPU found.")


def _smoke_test(cupy) -> str:
    """An element-wise kernel, one of dcnn's own (NVRTC), a matmul (cuBLAS) and uniform
    draws (cuRAND, as dropout makes); returns the device's name."""
    _check_driver(cupy)
    try:
        from . import cupy_kernels
        a = cupy.arange(16, dtype=cupy.float32).reshape(4, 4)
        b = (a * 2 + 1) @ a
        host = np.arange(16, dtype=np.float32).reshape(4, 4)
        if not np.allclose(cupy.asnumpy(b), (host * 2 + 1) @ host):
            raise BackendUnavailable("the CUDA smoke test computed a wrong matmul.")
        y, m = cupy_kernels.elementwise("relu")(a - 7, cupy.float32(math.inf))
        if not (np.array_equal(cupy.asnumpy(y), np.maximum(host - 7, 0)) and int(m.sum()) == 8):
            raise BackendUnavailable("the CUDA smoke test computed a wrong ReLU.")
        u = cupy.asnumpy(cupy.random.default_rng(0).random((4096,), dtype=cupy.float32))
        if not (0 <= u.min() and u.max() < 1 and 0.4 < u.mean() < 0.6):
            raise BackendUnavailable("the CUDA smoke test drew bad uniform numbers (cuRAND).")
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except BackendUnavailable:
        raise
    except Exception as exc:
        raise BackendUnavailable(f"CuPy imports but the CUDA smoke test failed ({type(exc).__name__}: {exc}).") from exc


def _tf32_mode(value) -> str:
    mode = str(value).strip().lower() if value is not None else os.environ.get(TF32_ENV, "off").strip().lower()
    if mode in ("0", "false", "no", ""):
        mode = "off"
    if mode in ("1", "true", "yes"):
        mode = "all"
    if mode not in TF32_MODES:
        raise ValueError(f"{TF32_ENV} / tf32 must be one of {', '.join(TF32_MODES)}; got {value!r}")
    return mode


class CupyConvSaved(NamedTuple):
    cols: object            # (N*OH*OW, C*K*K [+ 1]) patches, columns (c, kh, kw), ones last
    input_shape: tuple
    output_hw: tuple
    stride: int
    padding: int
    has_bias: bool


class CupyPoolSaved(NamedTuple):
    arg: object             # (N, C, OH, OW) int32: each window's arg-max within its H*W plane
    input_shape: tuple
    k: int
    stride: int


class CupyNormSaved(NamedTuple):
    x: object
    y: object
    mean: object            # (C,) the statistics used (batch or running)
    inv_std: object
    weight: object
    training: bool
    relu_cap: float | None


def _launches_conv_backward(args, kwargs):
    return 1 + kwargs.get("weight_grad", True) + 2 * kwargs.get("input_grad", True)


# Kernel launches per call of each override (for scripts/count_launches.py): (args, kwargs) -> count.
# The counts include cuBLAS GEMMs (1 each) and CuPy's cuRAND draw (1); they exclude copies
# made only when an input arrives non-contiguous.
LAUNCHES = {
    "conv2d": lambda a, k: 3 + (a[2] is not None),        # im2col, [weight|bias] concat, GEMM, to NCHW
    "conv2d_backward": _launches_conv_backward,            # dy to rows, dW GEMM, [dcols GEMM, col2im]
    "max_pool2d": lambda a, k: 1,
    "max_pool2d_backward": lambda a, k: 1,
    "batch_norm": lambda a, k: 2 if k.get("training") else 3,
    "batch_norm_backward": lambda a, k: 1 + k.get("input_grad", True),
    "relu": lambda a, k: 1,
    "relu_backward": lambda a, k: 1,
    "dropout": lambda a, k: 2,                             # cuRAND draw, mask and product
    "dropout_backward": lambda a, k: 1,
    "softmax_cross_entropy": lambda a, k: 1 + (a[1].ndim == 1 and a[1].dtype != np.int64),
    "sgd_update": lambda a, k: 1,
    "adam_update": lambda a, k: 1,
    **FAMILY_LAUNCHES,
}


class CupyBackend(CupyFamily, Backend):
    name = "cupy"

    def __init__(self, reason: str = "chosen explicitly", tf32=None):
        cupy = _import_cupy()
        self.device_name = _smoke_test(cupy)
        import array_api_compat.cupy as xp_cupy
        self._cupy = cupy
        super().__init__(xp_cupy, device=cupy.cuda.Device(), reason=reason)
        self.tf32 = tf32

    # --- precision ------------------------------------------------------------
    @property
    def tf32(self) -> str:
        return self._tf32

    @tf32.setter
    def tf32(self, value) -> None:
        mode, before = _tf32_mode(value), self._tf32
        if mode == "all":
            self._set_compute_type(tf32=True)
        elif before == "all":
            self._set_compute_type(tf32=None)      # back to CuPy's default
        self._tf32 = mode

    _tf32 = "off"

    def _set_compute_type(self, tf32):
        """Set float32 GEMMs' compute type (True: TF32, False: FP32, None: CuPy's
        default); returns the previous one.  A host-side setting: no launch, no wait."""
        core = self._cupy._core
        from cupy._core import _routines_linalg as linalg
        before = core.get_compute_type(self._cupy.float32)
        kind = {True: linalg.COMPUTE_TYPE_TF32, False: linalg.COMPUTE_TYPE_FP32, None: linalg.COMPUTE_TYPE_DEFAULT}
        core.set_compute_type(self._cupy.float32, kind[tf32])
        return before

    @contextmanager
    def _conv_gemm(self, dtype):
        """TF32 for a convolution's GEMMs in ``conv`` mode (a host-side switch, no launch)."""
        if self._tf32 != "conv" or dtype != np.float32:
            yield
            return
        before = self._set_compute_type(tf32=True)
        try:
            yield
        finally:
            self._cupy._core.set_compute_type(self._cupy.float32, before)

    def describe(self) -> str:
        tf32 = "" if self._tf32 == "off" else f", TF32 {self._tf32}"
        return f"cupy {self._cupy.__version__} ({self.device_name}{tf32})"

    # --- moving data ------------------------------------------------------------
    def owns(self, array) -> bool:
        return isinstance(array, self._cupy.ndarray)

    def from_numpy(self, array, dtype=None):
        array = np.asarray(array)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return self._cupy.asarray(array)

    def to_numpy(self, array) -> np.ndarray:
        return self._cupy.asnumpy(array)

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    def random_generator(self, seed):
        return _CupyGenerator(self._cupy, seed)

    # --- fused kernels ------------------------------------------------------------
    def _kernel(self, name):
        from . import cupy_kernels
        return cupy_kernels.elementwise(name)

    def _raw(self, name, dtype):
        from . import cupy_kernels
        return cupy_kernels.raw(name, np.dtype(dtype).name)

    def relu(self, x, cap: float = math.inf):
        y, mask = self._kernel("relu")(x, x.dtype.type(cap))
        return y, mask

    def relu_backward(self, dy, saved):
        return self._kernel("masked")(dy, saved)

    def dropout(self, x, rate: float, generator):
        u = generator.random(tuple(x.shape), x.dtype)
        y, mask = self._kernel("dropout")(x, u, x.dtype.type(rate), x.dtype.type(1.0 / (1.0 - rate)))
        return y, mask

    def max_pool2d(self, x, k: int, stride: int):
        cp = self._cupy
        x = cp.ascontiguousarray(x)
        n, c, h, w = x.shape
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        y = cp.empty((n, c, oh, ow), dtype=x.dtype)
        arg = cp.empty((n, c, oh, ow), dtype=cp.int32)
        self._kernel("max_pool")(x, h, w, oh, ow, k, stride, y, arg)
        return y, CupyPoolSaved(arg, (n, c, h, w), k, stride)

    def max_pool2d_backward(self, dy, saved: CupyPoolSaved):
        cp = self._cupy
        dy = cp.ascontiguousarray(dy)
        n, c, h, w = saved.input_shape
        _, _, oh, ow = saved.arg.shape
        dx = cp.empty((n, c, h, w), dtype=dy.dtype)
        self._kernel("max_pool_backward")(dy, saved.arg, h, w, oh, ow, saved.k, saved.stride, dx)
        return dx

    def batch_norm(self, x, weight, bias, running_mean, running_var, *, training: bool, momentum: float,
                   eps: float, relu_cap: float | None = None):
        cp = self._cupy
        x = cp.ascontiguousarray(x)
        n, c, h, w = x.shape
        if training:
            mean = cp.empty((c,), dtype=x.dtype)
            inv_std = cp.empty((c,), dtype=x.dtype)
            from .cupy_kernels import BLOCK
            self._raw("bn_stats", x.dtype)(
                (c,), (BLOCK,), (x, np.int32(n), np.int32(c), np.int32(h * w), np.float64(momentum),
                                 np.float64(eps), running_mean, running_var, mean, inv_std))
        else:
            mean = running_mean.copy()
            inv_std = self._kernel("inv_std")(running_var, x.dtype.type(eps))
        relu = relu_cap is not None
        cap = x.dtype.type(relu_cap if relu else math.inf)
        y = self._kernel("bn_apply")(x, mean, inv_std, weight, bias, h * w, c, cap, int(relu))
        return y, CupyNormSaved(x, y, mean, inv_std, weight, training, relu_cap)

    def batch_norm_backward(self, dy, saved: CupyNormSaved, *, input_grad: bool = True):
        cp = self._cupy
        from .cupy_kernels import BLOCK
        dy = cp.ascontiguousarray(dy)
        n, c, h, w = saved.x.shape
        relu = saved.relu_cap is not None
        cap = saved.relu_cap if relu else math.inf
        dweight = cp.empty((c,), dtype=dy.dtype)
        dbias = cp.empty((c,), dtype=dy.dtype)
        self._raw("bn_backward_reduce", dy.dtype)(
            (c,), (BLOCK,), (dy, saved.x, saved.y, saved.mean, saved.inv_std, np.int32(n), np.int32(c),
                             np.int32(h * w), np.int32(relu), np.float64(cap), dweight, dbias))
        if not input_grad:
            return None, dweight, dbias
        dx = self._kernel("bn_backward")(dy, saved.x, saved.y, saved.mean, saved.inv_std, saved.weight, dweight,
                                         dbias, h * w, c, dy.dtype.type(n * h * w), dy.dtype.type(cap),
                                         int(relu), int(saved.training))
        return dx, dweight, dbias

    def softmax_cross_entropy(self, logits, targets, label_smoothing: float = 0.0):
        if label_smoothing:   # the fused kernel has no smoothing: the generic version has
            return super().softmax_cross_entropy(logits, targets, label_smoothing)
        cp = self._cupy
        from .cupy_kernels import BLOCK
        logits = cp.ascontiguousarray(logits)
        n, k = logits.shape
        loss = cp.empty((), dtype=logits.dtype)
        grad = cp.empty((n, k), dtype=logits.dtype)
        correct = cp.empty((), dtype=cp.int64)
        if targets.ndim == 1:
            labels = cp.ascontiguousarray(targets.astype(cp.int64, copy=False))
            self._raw("sce_labels", logits.dtype)(
                (1,), (BLOCK,), (logits, labels, np.int32(n), np.int32(k), loss, grad, correct))
        else:
            targets = cp.ascontiguousarray(targets.astype(logits.dtype, copy=False))
            self._raw("sce_targets", logits.dtype)(
                (1,), (BLOCK,), (logits, targets, np.int32(n), np.int32(k), loss, grad, correct))
        return loss, grad, correct

    def sgd_update(self, param, grad, momentum_buffer, *, lr: float, momentum: float, nesterov: bool,
                   weight_decay: float) -> None:
        t = param.dtype.type
        if momentum:
            self._kernel("sgd_momentum")(grad, t(lr), t(weight_decay), t(momentum), int(nesterov),
                                         param, momentum_buffer)
        else:
            self._kernel("sgd")(grad, t(lr), t(weight_decay), param)

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, *, lr: float, beta1: float, beta2: float, eps: float,
                    weight_decay: float, decoupled: bool, step: int) -> None:
        t = param.dtype.type
        decay = 1 - lr * weight_decay if decoupled else 1.0
        l2 = 0.0 if decoupled else weight_decay
        self._kernel("adam")(grad, t(decay), t(l2), t(beta1), t(beta2), t((1 - beta2 ** step) ** 0.5),
                             t(lr / (1 - beta1 ** step)), t(eps), param, exp_avg, exp_avg_sq)

    def conv2d(self, x, weight, bias, stride: int, padding: int):
        cp = self._cupy
        x = cp.ascontiguousarray(x)
        n, c, h, w = x.shape
        f, _, k, _ = weight.shape
        oh, ow = conv_output_size(h, k, stride, padding), conv_output_size(w, k, stride, padding)
        ckk = c * k * k
        width = ckk + (bias is not None)
        cols = cp.empty((n * oh * ow, width), dtype=x.dtype)
        self._kernel("im2col")(x, c, h, w, k, stride, padding, oh, ow, width, cols)
        wmat = cp.reshape(weight, (f, ckk))
        if bias is not None:
            wmat = cp.concatenate([wmat, cp.reshape(bias, (f, 1))], axis=1)
        with self._conv_gemm(x.dtype):
            rows = cols @ wmat.T                                  # (N*OH*OW, F): channels last
        y = cp.ascontiguousarray(cp.reshape(rows, (n, oh, ow, f)).transpose(0, 3, 1, 2))
        return y, CupyConvSaved(cols, (n, c, h, w), (oh, ow), stride, padding, bias is not None)

    def conv2d_backward(self, dy, saved: CupyConvSaved, weight, *, input_grad: bool = True,
                        weight_grad: bool = True):
        cp = self._cupy
        n, c, h, w = saved.input_shape
        oh, ow = saved.output_hw
        f, _, k, _ = weight.shape
        ckk = c * k * k
        rows = cp.ascontiguousarray(cp.reshape(dy, (n, f, oh * ow)).transpose(0, 2, 1)).reshape(n * oh * ow, f)
        dw = db = dx = None
        with self._conv_gemm(dy.dtype):
            if weight_grad:
                dwmat = rows.T @ saved.cols                       # (F, C*K*K [+ 1]): the bias's last
                dw = cp.reshape(dwmat[:, :ckk], (f, c, k, k))
                db = dwmat[:, ckk] if saved.has_bias else None
            if input_grad:
                dcols = rows @ cp.reshape(weight, (f, ckk))       # (N*OH*OW, C*K*K)
        if input_grad:
            dx = cp.empty((n, c, h, w), dtype=dy.dtype)
            self._kernel("col2im")(dcols, c, h, w, k, saved.stride, saved.padding, oh, ow, dx)
        return dx, dw, db


class _CupyGenerator:
    def __init__(self, cupy, seed):
        self._rng = cupy.random.default_rng(seed)

    def random(self, shape, dtype):
        return self._rng.random(shape, dtype=dtype)

    @property
    def state(self):
        return None  # CuPy's generator state is not serialisable; resume is exact on the CPU only.

    @state.setter
    def state(self, value):
        pass
