"""The generic (reference) versions of the hot operations, one module per kind.

Each is written against the backend's array-API namespace ``self.xp`` only, so it
runs on every backend; it is what the strict test namespace runs, and what every
device override is tested against (tests/test_fast_paths.py).  Backends override
a method where a fused kernel measures faster (NumPy/Numba on the CPU, CuPy
kernels on CUDA).  Arrays cross these methods in NCHW shape; their memory layout
is the backend's business.  ``saved`` values are opaque to the layers: whatever
the forward method keeps for its backward.
"""
from .activation import ActivationOps
from .conv import ConvOps
from .conv_general import GeneralConvOps
from .counts import CountOps
from .loss import LossOps
from .merge import MergeOps
from .norm import NormOps
from .optim import OptimOps
from .pool import PoolOps
from .resample import ResampleOps

__all__ = ["ActivationOps", "ConvOps", "CountOps", "GeneralConvOps", "LossOps", "MergeOps", "NormOps", "OptimOps", "PoolOps",
           "ResampleOps"]
