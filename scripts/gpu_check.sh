#!/usr/bin/env bash
# Every check that needs a GPU, in one run (device time is scarce):
#   1. the backend-agreement tests (CuPy against NumPy) and the CuPy smoke test,
#   2. the whole suite with DCNN_BACKEND=cupy,
#   3. the GPU benchmark, if present,
#   4. data-parallel training's NCCL path (dcnn.distributed), if mpi4py is installed.
# Usage on a CUDA machine with CuPy installed:  bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export DCNN_BACKEND=cupy
out="${OUT:-/tmp}"
status=0
python -c "import backends; b = backends.get_backend(); print('backend:', b.describe(), '-', b.reason)" || exit 1
timeout 120 python -m pytest -q -x tests/test_agreement.py tests/test_backends.py 2>&1 | tee "$out/agreement.txt" | tail -5 || status=1
timeout 240 python -m pytest -q 2>&1 | tee "$out/suite_cupy.txt" | tail -15 || status=1
if [ -f scripts/bench.py ]; then
    timeout 150 python scripts/bench.py --device cuda --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.txt" | tail -30 || status=1
fi
if python -c "import mpi4py" 2>/dev/null; then
    timeout 180 python -m pytest -q -rs tests/test_distributed.py -k "nccl or match_one_process" 2>&1 | tee "$out/distributed_nccl.txt" | tail -5 || status=1
fi
exit $status
