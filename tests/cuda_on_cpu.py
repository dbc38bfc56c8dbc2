"""backends/cupy_kernels.py's CUDA sources, compiled with g++ and run on the CPU.

No GPU is needed to test the fused CuPy path's logic: each ElementwiseKernel body
runs in a loop over ``i`` (as CuPy runs one thread per element), each RawKernel
runs its blocks one after another with one thread each (its block-wide sums
become the thread's own), and ``CupyOnCpu`` is ``CupyBackend`` with NumPy in
place of CuPy and these in place of the compiled kernels.  So the overrides'
Python side (shapes, argument order, outputs) and the kernels' index arithmetic
are tested against the generic methods here; what only a GPU can show (NVRTC,
warp shuffles, races, speed) is left to scripts/gpu_check.sh.
"""
from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from backends import cupy_kernels
from backends.base import Backend
from backends.cupy_backend import CupyBackend

C_TYPES = {"int32": "int", "int64": "long long", "bool": "bool", "float32": "float", "float64": "double"}
NP_TYPES = {"int32": np.int32, "int64": np.int64, "bool": np.bool_, "float32": np.float32, "float64": np.float64}

PRELUDE = r"""
#include <cmath>
#include <cstddef>
using std::sqrt; using std::exp; using std::log;
struct Dim3 { unsigned x, y, z; };
static Dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1};
extern "C" void dcnn_set_block(unsigned b) { blockIdx.x = b; }
#define __global__
#define __device__
"""


def _parse(spec: str):
    """[(raw, type name, name)] of a CuPy parameter spec."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        words = part.split()
        out.append((words[0] == "raw", words[-2], words[-1]))
    return out


def _ctype(type_name: str, t: str) -> str:
    return t if type_name == "T" else C_TYPES[type_name]


def _elementwise_source(name: str, t: str) -> str:
    in_params, out_params, body = cupy_kernels.ELEMENTWISE[name]
    params, binds = [], []
    for raw, type_name, pname in _parse(in_params):
        ct = _ctype(type_name, t)
        if raw:
            params.append(f"const {ct}* {pname}")
        else:
            params += [f"const {ct}* {pname}_p", f"long long {pname}_s"]
            binds.append(f"const {ct} {pname} = {pname}_p[i * {pname}_s];")
    for raw, type_name, pname in _parse(out_params):
        ct = _ctype(type_name, t)
        if raw:
            params.append(f"{ct}* {pname}")
        else:
            params.append(f"{ct}* {pname}_p")
            binds.append(f"{ct}& {pname} = {pname}_p[i];")
    return (f'extern "C" void ew_{name}_{t}(long long size, {", ".join(params)}) {{\n'
            f"    typedef {t} T;\n"
            f"    for (long long i_ = 0; i_ < size; ++i_) {{\n        const ptrdiff_t i = i_;\n"
            f"        {' '.join(binds)}\n        {{\n{body}\n        }}\n    }}\n}}\n")


def _raw_source(name: str, dtype_name: str) -> str:
    src = cupy_kernels.raw_source(name, dtype_name)
    src = src.replace(cupy_kernels._BLOCK_SUM, "\nstatic double block_sum(double v) { return v; }\n")
    src = src.replace(f'extern "C" __global__ void {name}(', f'extern "C" void {name}_{dtype_name}(')
    return f"namespace raw_{name}_{dtype_name} {{\n{src}\n}}\n"


def source() -> str:
    parts = [PRELUDE]
    for name in cupy_kernels.ELEMENTWISE:
        parts += [_elementwise_source(name, t) for t in ("float", "double")]
    for name in cupy_kernels.RAW:
        parts += [_raw_source(name, d) for d in cupy_kernels.C_TYPES]
    return "\n".join(parts)


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++")


_LIB = None


def library():
    """The compiled kernels (cached by source hash in the temp folder)."""
    global _LIB
    if _LIB is None:
        text = source()
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / "dcnn-cuda-on-cpu"
        folder.mkdir(exist_ok=True)
        lib_path = folder / f"kernels-{digest}.so"
        if not lib_path.exists():
            src = folder / f"kernels-{digest}.cpp"
            src.write_text(text)
            tmp = folder / f"kernels-{digest}.{id(text)}.so"
            run = subprocess.run([compiler(), "-O1", "-shared", "-fPIC", "-std=c++17", str(src), "-o", str(tmp)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError("the CUDA kernel sources do not compile as C++:\n" + run.stderr[-4000:])
            tmp.replace(lib_path)
        _LIB = ctypes.CDLL(str(lib_path))
    return _LIB


def _pointer(array: np.ndarray):
    if not array.flags.c_contiguous:
        raise AssertionError("a kernel was handed a non-contiguous array where CuPy indexes it flat")
    return ctypes.c_void_p(array.ctypes.data)


class Elementwise:
    """An ElementwiseKernel's calling convention: inputs, then optional outputs;
    non-raw arguments broadcast; T is the first T-typed array's dtype."""

    def __init__(self, name: str):
        in_params, out_params, _ = cupy_kernels.ELEMENTWISE[name]
        self.name, self.ins, self.outs = name, _parse(in_params), _parse(out_params)

    def __call__(self, *args):
        if len(args) not in (len(self.ins), len(self.ins) + len(self.outs)):
            raise TypeError(f"{self.name}: wrong number of arguments ({len(args)})")
        specs = self.ins + self.outs
        t_dtype = next(np.asarray(a).dtype for a, (_, ty, _) in zip(args, specs)
                       if ty == "T" and isinstance(a, np.ndarray))
        dtype_of = lambda ty: t_dtype if ty == "T" else np.dtype(NP_TYPES[ty])
        shape = np.broadcast_shapes(*[a.shape for a, (raw, _, _) in zip(args, specs)
                                      if not raw and isinstance(a, np.ndarray)])
        outs = list(args[len(self.ins):]) or [np.empty(shape, dtype_of(ty)) for _, ty, _ in self.outs]
        keep = []                                  # temporaries alive until the call returns
        c_args = [ctypes.c_longlong(int(np.prod(shape)))]
        for a, (raw, ty, _) in zip(args[:len(self.ins)], self.ins):
            if raw:
                assert a.dtype == dtype_of(ty), (self.name, a.dtype, ty)
                c_args.append(_pointer(a))
            elif isinstance(a, np.ndarray) and a.ndim > 0:
                full = np.ascontiguousarray(np.broadcast_to(a.astype(dtype_of(ty), copy=False), shape))
                keep.append(full)
                c_args += [_pointer(full), ctypes.c_longlong(1)]
            else:
                one = np.array([a], dtype_of(ty))
                keep.append(one)
                c_args += [_pointer(one), ctypes.c_longlong(0)]
        for o, (raw, ty, _) in zip(outs, self.outs):
            assert o.dtype == dtype_of(ty) and (raw or o.shape == shape), (self.name, o.dtype, o.shape, shape)
            c_args.append(_pointer(o))
        fn = getattr(library(), f"ew_{self.name}_{'float' if t_dtype == np.float32 else 'double'}")
        fn.restype = None
        fn(*c_args)
        return outs[0] if len(outs) == 1 else tuple(outs)


class Raw:
    """A RawKernel's calling convention: kernel(grid, block, args); blocks run in turn."""

    def __init__(self, name: str, dtype_name: str):
        self.fn = getattr(library(), f"{name}_{dtype_name}")
        self.fn.restype = None

    def __call__(self, grid, block, args):
        c_args = []
        for a in args:
            if isinstance(a, np.ndarray):
                c_args.append(_pointer(a))
            elif isinstance(a, np.int32):
                c_args.append(ctypes.c_int(int(a)))
            elif isinstance(a, np.float64):
                c_args.append(ctypes.c_double(float(a)))
            else:
                raise TypeError(f"a RawKernel argument must be an array, np.int32 or np.float64; got {type(a)}")
        set_block = library().dcnn_set_block
        for b in range(grid[0]):
            set_block(ctypes.c_uint(b))
            self.fn(*c_args)


class _NumpyAsCupy:
    """What CupyBackend's methods use of the ``cupy`` module, from NumPy."""

    def __getattr__(self, name):
        return getattr(np, name)

    asnumpy = staticmethod(np.asarray)
    __version__ = "emulated"


class CupyOnCpu(CupyBackend):
    """CupyBackend's overrides with NumPy arrays and the kernels compiled for the CPU."""

    name = "cupy-on-cpu"

    def __init__(self):
        import array_api_compat.numpy as xp_numpy
        Backend.__init__(self, xp_numpy, device="cpu", reason="CUDA kernels run on the CPU (tests)")
        self._cupy = _NumpyAsCupy()
        self.device_name = "CPU emulation"
        library()

    def owns(self, array) -> bool:
        return isinstance(array, (np.ndarray, np.generic))

    def synchronize(self) -> None:
        pass

    def _kernel(self, name):
        return Elementwise(name)

    def _raw(self, name, dtype):
        return Raw(name, np.dtype(dtype).name)
