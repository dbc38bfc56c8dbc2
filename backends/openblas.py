"""The OpenBLAS that NumPy loaded, reached through ctypes, and the kernels it picks.

Three things of it are used: which CPU's kernels it runs (``corename``; OpenBLAS picks
them as it loads, or ``OPENBLAS_CORETYPE`` does), its thread count (``thread_control``) and its
single-precision GEMM (``sgemm``), which the Numba kernels call on slices of a
product from inside their own thread pool (backends/numba_kernels.py), each
call single-threaded.  NumPy's wheels ship OpenBLAS with prefixed, 64-bit-integer
symbols (``scipy_cblas_sgemm64_``); a NumPy built against a system OpenBLAS
has the plain ones.  Anything else (MKL, Accelerate) gives None, and the
callers keep BLAS's own threads.
"""
from __future__ import annotations

import ctypes
import functools

# (symbol prefix, symbol suffix, BLAS integer type)
_VARIANTS = (("scipy_", "64_", ctypes.c_int64), ("", "64_", ctypes.c_int64), ("scipy_", "", ctypes.c_int),
             ("", "", ctypes.c_int))


@functools.cache
def _libraries() -> tuple:
    """The OpenBLAS shared objects mapped into this process (NumPy's, once NumPy is imported)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return ()
    libraries = []
    for path in paths:
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            continue
    return tuple(libraries)


def _functions(*stems: str):
    """The OpenBLAS functions ``stems`` from the first library that has them all, in any of its
    symbol spellings (``scipy_openblas_<stem>64_`` in NumPy's wheels ... ``openblas_<stem>``), or None."""
    for lib in _libraries():
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                found = [getattr(lib, f"{prefix}_{stem}{suffix}", None) for stem in stems]
                if all(fn is not None for fn in found):
                    return found
    return None


@functools.cache
def corename() -> str | None:
    """The kernels NumPy's OpenBLAS runs ("Haswell", "SkylakeX", ...), or None (no OpenBLAS)."""
    found = _functions("get_corename")
    if found is None:
        return None
    found[0].restype = ctypes.c_char_p
    return found[0]().decode("ascii", "replace").strip() or None


@functools.cache
def thread_control():
    """(set_num_threads, get_num_threads) of NumPy's OpenBLAS, or None."""
    found = _functions("set_num_threads", "get_num_threads")
    if found is None:
        return None
    setter, getter = found
    setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
    return setter, getter


@functools.cache
def sgemm():
    """``cblas_sgemm`` of NumPy's OpenBLAS as a ctypes function, or None.

    Its pointer arguments are declared as 64-bit integers so that a Numba kernel can
    pass an array's address plus an offset (a slice of rows) without a pointer type.
    """
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    for lib in _libraries():
        for prefix, suffix, blas_int in _VARIANTS:
            fn = getattr(lib, f"{prefix}cblas_sgemm{suffix}", None)
            if fn is None:
                continue
            enum, address, real = ctypes.c_int, ctypes.c_int64, ctypes.c_float
            fn.argtypes = [enum, enum, enum, blas_int, blas_int, blas_int, real, address, blas_int,
                           address, blas_int, real, address, blas_int]
            fn.restype = None
            return fn
    return None
