"""The CPU backend: NumPy through its array-API namespace."""
import array_api_compat.numpy as xp_numpy
import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, reason: str = "chosen explicitly"):
        super().__init__(xp_numpy, device="cpu", reason=reason)

    def owns(self, array) -> bool:
        return isinstance(array, (np.ndarray, np.generic))

    def from_numpy(self, array, dtype=None):
        array = np.asarray(array)
        return array if dtype is None else array.astype(dtype, copy=False)

    def describe(self) -> str:
        return f"numpy {np.__version__} (CPU)"
