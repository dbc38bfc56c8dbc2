"""The CUDA backend: CuPy.  The only module in the project that imports CuPy."""
import numpy as np

from .base import Backend


class BackendUnavailable(RuntimeError):
    """CuPy cannot be used on this machine; the message says why."""


def _import_cupy():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        raise BackendUnavailable(
            f"CuPy is not importable ({type(exc).__name__}: {exc}). "
            "Install it with `pip install 'dcnn[gpu]'` (CUDA 13) or `pip install cupy-cuda12x` (CUDA 12)."
        ) from exc
    return cupy


def _smoke_test(cupy) -> str:
    """Run a tiny elementwise kernel and a matmul; return the device's name."""
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            raise BackendUnavailable("CuPy imports but reports no CUDA device.")
        a = cupy.arange(16, dtype=cupy.float32).reshape(4, 4)
        b = (a * 2 + 1) @ a
        expected = (np.arange(16, dtype=np.float32).reshape(4, 4) * 2 + 1) @ np.arange(16, dtype=np.float32).reshape(4, 4)
        if not np.allclose(cupy.asnumpy(b), expected):
            raise BackendUnavailable("the CUDA smoke test computed a wrong matmul.")
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except BackendUnavailable:
        raise
    except Exception as exc:
        raise BackendUnavailable(f"CuPy imports but the CUDA smoke test failed ({type(exc).__name__}: {exc}).") from exc


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, reason: str = "chosen explicitly"):
        cupy = _import_cupy()
        self.device_name = _smoke_test(cupy)
        import array_api_compat.cupy as xp_cupy
        self._cupy = cupy
        super().__init__(xp_cupy, device=cupy.cuda.Device(), reason=reason)

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

    def describe(self) -> str:
        return f"cupy {self._cupy.__version__} ({self.device_name})"


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
