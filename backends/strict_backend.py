"""A test backend on ``array_api_strict``'s non-default device.

It refuses NumPy-only idioms (methods such as ``.reshape``, ``np.`` calls on
its arrays, implicit conversion) and mixing with arrays on the default device,
so a layer that passes its tests here is device-generic without needing a GPU.
"""
import numpy as np

from .base import Backend


class StrictBackend(Backend):
    name = "array_api_strict"

    def __init__(self, reason: str = "test namespace"):
        try:
            import array_api_strict
        except ImportError as exc:
            from .cupy_backend import BackendUnavailable
            raise BackendUnavailable("array-api-strict is not installed: `pip install -e '.[test]'`.") from exc
        self._strict = array_api_strict
        super().__init__(array_api_strict, device=array_api_strict.Device("device1"), reason=reason)

    def owns(self, array) -> bool:
        return isinstance(array, self._strict._array_object.Array)

    def from_numpy(self, array, dtype=None):
        array = np.asarray(array)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return self._strict.asarray(array, device=self.device)

    def to_numpy(self, array) -> np.ndarray:
        # Host transfer is explicit here (as with CuPy's asnumpy): to the CPU device, then DLPack.
        return np.from_dlpack(array.to_device(self._strict.Device("CPU_DEVICE")))
