"""Compile every CUDA source of backends/cupy_kernels.py with nvcc, without a GPU.

CuPy compiles these kernels with NVRTC on first use, on the GPU machine; a typo
there would first show on scarce GPU time.  This script catches it on any machine
with a CUDA toolkit: each ElementwiseKernel body is wrapped as CuPy would run it
(a thread per element, ``i`` its index, raw arguments as pointers, the type T as
float and as double) and each RawKernel source is compiled for float and double.
Run: python scripts/check_kernels_nvcc.py [--arch sm_90] [--keep DIR]
Exit status 0 when all compile; the compiler's messages otherwise.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.cupy_kernels import C_TYPES, ELEMENTWISE, RAW, raw_source  # noqa: E402

TYPES = {"int32": "int", "int64": "long long", "bool": "bool", "float32": "float", "float64": "double",
         "T": "T"}


def _params(spec: str, output: bool):
    """(kernel parameter, line that binds the body's name) for each of a CuPy param spec."""
    for part in filter(None, (p.strip() for p in spec.split(","))):
        words = part.split()
        raw = words[0] == "raw"
        ctype, name = TYPES[words[-2]], words[-1]
        if raw:
            yield f"{'' if output else 'const '}{ctype}* {name}", None
        elif output:
            yield f"{ctype}* {name}_out", f"{ctype}& {name} = {name}_out[i];"
        else:
            yield f"const {ctype} {name}", None


def elementwise_wrapper(name: str) -> str:
    in_params, out_params, body = ELEMENTWISE[name]
    params = list(_params(in_params, False)) + list(_params(out_params, True))
    signature = ", ".join(p for p, _ in params)
    binds = "\n    ".join(b for _, b in params if b)
    kernel = (f"template <typename T>\n__global__ void dcnn_{name}({signature}, long long size) {{\n"
              f"    const ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x;\n"
              f"    if (i >= size) return;\n    {binds}\n{body}\n}}\n")
    inst = "".join(f"template __global__ void dcnn_{name}<{t}>({_inst(signature, t)}, long long);\n"
                   for t in ("float", "double"))
    return kernel + inst


def _inst(signature: str, ctype: str) -> str:
    """The signature with the template type spelled out (whole-word T only)."""
    return re.sub(r"\bT\b", ctype, signature)


def sources() -> dict[str, str]:
    """file name -> CUDA source to compile."""
    files = {"elementwise.cu": "#include <cstddef>\n" + "\n".join(elementwise_wrapper(n) for n in ELEMENTWISE)}
    for name in RAW:
        for dtype in C_TYPES:
            files[f"{name}_{dtype}.cu"] = raw_source(name, dtype)
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", help="GPU architecture to compile for (sm_90: H100/H200)")
    parser.add_argument("--keep", help="write the wrapped sources and PTX into this folder")
    args = parser.parse_args(argv)
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("FAIL nvcc not found: install a CUDA toolkit or put its bin/ on PATH")
        return 2
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dcnn-nvcc-"))
    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for file_name, text in sources().items():
        path = folder / file_name
        path.write_text(text)
        run = subprocess.run([nvcc, f"-arch={args.arch}", "--ptx", "-Werror=all-warnings", str(path),
                              "-o", str(path.with_suffix(".ptx"))], capture_output=True, text=True)
        ok = run.returncode == 0
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {file_name}")
        if not ok:
            print(run.stdout + run.stderr)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{len(sources()) - failed} of {len(sources())} CUDA sources compile with {nvcc} for {args.arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
