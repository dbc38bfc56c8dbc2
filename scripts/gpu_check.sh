#!/usr/bin/env bash
# Every check that needs a GPU, in one run of about eight minutes on one H200 (device time
# is scarce; the stages of issue 20's layers add about three).  One PASS/FAIL line per stage, each stage under its own time cap; logs and a
# JSON summary in $OUT (default /tmp/dcnn-gpu-check): gpu_check.json, gpu_check.log,
# bench.json, launches_fp32.json, launches_tf32.json, bench_families.json, launches_mobilenet.json.
#
#   header     driver, CUDA runtime, CuPy, PyTorch and its CUDA, the GPU
#   select     DCNN_BACKEND=auto picks CuPy; its smoke test (kernel, NVRTC, cuBLAS, cuRAND)
#   nvcc       every CUDA source of backends/cupy_kernels.py compiles with nvcc
#   tests      the CuPy-parametrised tests only: agreement with NumPy, gradients,
#              fused kernels against the generic methods (pytest -k cupy), issue 20's layers excluded
#   families   the same for issue 20's layers and kernels (activations, depthwise, grouped and
#              transposed convolution, upsampling, padding, global max pool, channel dropout,
#              LayerNorm/GroupNorm): agreement, gradients, each fused kernel against its generic method
#   no_wait    a training step under cupyx.allow_synchronize(False), and the timing check
#   train      dcnn train --backend cupy, default preset, Fashion-MNIST: test accuracy >= 0.92
#   resume     --resume one more epoch from its checkpoint
#   evaluate   dcnn evaluate on the run (accuracy as the run reported)
#   predict    dcnn predict on three test images written as PNG files
#   oracle     dcnn on CuPy against PyTorch on CUDA, values, on the oracle networks
#   launches   kernels per convnet step (dcnn vs PyTorch, through CUPTI) and throughput at
#              batch 128 and 512, full FP32 and with TF32 in the convolutions (PyTorch's default)
#   bench      scripts/bench.py --device cuda: ref and ref-bn against PyTorch+cuDNN
#   mobilenet  dcnn train --model mobilenet --backend cupy, one epoch on 10,000 images (runs end to end)
#   families_bench  scripts/bench_families.py --device cuda: each fused kernel against the generic path
#   mobilenet_launches  kernels per mobilenet step (dcnn vs PyTorch) and throughput at batch 128 and 512
#
# CuPy compiles kernels on first use; CUPY_CACHE_DIR (default .gpu/cupy-cache in the repo)
# keeps them for the later stages and later runs.  The GPU machine has no network: carry
# what scripts/gpu_check_prepare.sh puts in .gpu/ (small wheels, Fashion-MNIST).
# Usage:  bash scripts/gpu_check.sh            (PYTHON=python3 by default)
# A dry run of the plumbing on a CPU machine (the GPU stages then fail or skip):
#   DCNN_CHECK_BACKEND=numpy DCNN_CHECK_TRAIN_ARGS="--limit 2000 --epochs 1" DCNN_CHECK_MIN_ACCURACY=0.6 \
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT="${OUT:-/tmp/dcnn-gpu-check}"
WORK="$(mktemp -d /tmp/dcnn-gpu-work.XXXXXX)"
PY="${PYTHON:-python3}"
BACKEND="${DCNN_CHECK_BACKEND:-cupy}"
TRAIN_ARGS="${DCNN_CHECK_TRAIN_ARGS:-}"
MIN_ACC="${DCNN_CHECK_MIN_ACCURACY:-0.92}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DCNN_BACKEND="$BACKEND"
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-$ROOT/.gpu/cupy-cache}"
mkdir -p "$CUPY_CACHE_DIR"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        .gpu/whl/*.whl && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
[ -d .gpu/data ] && export DCNN_DATA="${DCNN_DATA:-$ROOT/.gpu/data}"
LOG="$OUT/gpu_check.log"
: > "$LOG"
: > "$WORK/stages.tsv"
START=$(date +%s)

# stage NAME SECONDS COMMAND...: run it under a time cap, log it, print PASS/FAIL.
stage() {
    local name=$1 cap=$2; shift 2
    local t0 rc secs
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$cap" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    secs=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')" 2>/dev/null || echo "?")
    { echo "===== $name (rc $rc, ${secs}s)"; cat "$WORK/$name.log"; } >> "$LOG"
    if [ $rc -eq 0 ]; then
        echo "PASS $name (${secs}s)"
    else
        [ $rc -eq 124 ] && why="timed out after ${cap}s" || why="exit status $rc"
        echo "FAIL $name ($why, ${secs}s); the end of its log:"
        tail -n 25 "$WORK/$name.log" | sed 's/^/    /'
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$cap" >> "$WORK/stages.tsv"
    return $rc
}

# check STAGE EXPRESSION: a condition on the JSON the stage printed last (the CLI's --json),
# reported and recorded as its own PASS/FAIL line, STAGE_check.
check() {
    local name=$1 expr=$2 rc
    "$PY" - "$WORK/$name.log" "$expr" > "$WORK/${name}_check.log" 2>&1 <<'EOF'
import json, sys
lines = [line for line in open(sys.argv[1]) if line.startswith("{")]
r = json.loads(lines[-1])
ok = bool(eval(sys.argv[2], {"r": r}))
print("check:", sys.argv[2], "->", ok)
sys.exit(0 if ok else 1)
EOF
    rc=$?
    cat "$WORK/${name}_check.log" >> "$LOG"
    if [ $rc -eq 0 ]; then
        echo "PASS ${name}_check: $expr"
    else
        echo "FAIL ${name}_check: $expr"
        tail -n 5 "$WORK/${name}_check.log" | sed 's/^/    /'
    fi
    printf '%s\t%s\t%s\t%s\n' "${name}_check" "$rc" "0" "0" >> "$WORK/stages.tsv"
}

header() {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PY" - <<'EOF'
import json, platform
info = {"python": platform.python_version()}
try:
    import cupy
    rt = cupy.cuda.runtime
    info.update(cupy=cupy.__version__, cuda_runtime=rt.runtimeGetVersion(), cuda_driver=rt.driverGetVersion(),
                gpu=rt.getDeviceProperties(0)["name"].decode())
except Exception as exc:
    info["cupy_error"] = f"{type(exc).__name__}: {exc}"
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, torch_cudnn=torch.backends.cudnn.version(),
                torch_sees_gpu=torch.cuda.is_available())
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
import numpy
info["numpy"] = numpy.__version__
print(json.dumps(info))
EOF
}

select_cupy() {
    DCNN_BACKEND=auto "$PY" -c "
import backends
b = backends.get_backend()
print('auto picked:', b.describe(), '-', b.reason)
assert b.name == '$BACKEND', 'auto did not pick $BACKEND'
"
}

export PY BACKEND
export -f header select_cupy       # stages run under timeout, which needs a program: bash -c NAME

cat > "$WORK/pngs.py" <<'EOF'
import sys
import numpy as np
from PIL import Image
from dcnn.datasets import load
data = load("fashion-mnist", download=False)
for i in range(3):
    img = np.asarray(data.x_test[i]).reshape(28, 28)
    if img.dtype != np.uint8:
        img = (img * 255).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(f"{sys.argv[1]}/test{i}.png")
print("labels:", [int(v) for v in np.asarray(data.y_test[:3])])
EOF

echo "dcnn GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), results in $OUT"
stage header 60 bash -c header; cat "$WORK/header.log"
stage select 90 bash -c select_cupy || { echo "CuPy cannot run here: the remaining stages need it"; SKIP_REST=1; }
if [ -z "${SKIP_REST:-}" ]; then
    if command -v nvcc >/dev/null; then stage nvcc 60 "$PY" scripts/check_kernels_nvcc.py; fi
    FAMILY_K="family or activation or depthwise or grouped or transpose or upsample or pad2d or global_max \
or dropout2d or row_norms or conv_family or resampling or layer_norm or group_norm or batch_norm_1d"
    stage tests 120 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_agreement.py tests/test_gradients.py \
        tests/test_backends.py tests/test_fast_paths.py tests/test_cupy_kernels.py \
        -k "cupy and not cupy-on-cpu and not ($FAMILY_K)"
    stage families 150 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_agreement.py tests/test_gradients.py \
        tests/test_cupy_kernels.py tests/test_backend_methods.py -k "cupy and not cupy-on-cpu and ($FAMILY_K)"
    stage no_wait 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_no_host_wait.py \
        tests/test_fast_paths.py -k "cupy or does_not_wait"
    RUN="$WORK/run"
    EPOCHS=$("$PY" -c "
import re, sys
from dcnn.presets import get_preset
m = re.search(r'--epochs[ =](\\d+)', '$TRAIN_ARGS')
print(m.group(1) if m else get_preset('convnet').epochs)")
    stage train 150 "$PY" -m dcnn train --backend "$BACKEND" --out "$RUN" --no-progress --json $TRAIN_ARGS \
        && check train "r['test_accuracy'] >= $MIN_ACC"
    stage resume 60 "$PY" -m dcnn train --backend "$BACKEND" --out "$RUN" --resume --epochs "$((EPOCHS + 1))" \
        --no-progress --json && check resume "len(r['history']['loss']) == $((EPOCHS + 1)) and r['test_accuracy'] >= $MIN_ACC - 0.02"
    stage evaluate 60 "$PY" -m dcnn evaluate "$RUN" --backend "$BACKEND" --json \
        && check evaluate "r['images'] == 10000 and r['accuracy'] >= $MIN_ACC - 0.02"
    stage pngs 60 "$PY" "$WORK/pngs.py" "$WORK" \
        && stage predict 60 "$PY" -m dcnn predict "$RUN" "$WORK/test0.png" "$WORK/test1.png" "$WORK/test2.png" \
            --backend "$BACKEND" --json \
        && check predict 'len(r["predictions"]) == 3 and all(p["top"] for p in r["predictions"])'
    stage oracle 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_torch_oracle_cuda.py
    stage launches 120 bash -c "DCNN_TF32=off '$PY' scripts/count_launches.py --device cuda --batch 128,512 \
        --json '$OUT/launches_fp32.json' && DCNN_TF32=conv '$PY' scripts/count_launches.py --device cuda \
        --batch 128,512 --json '$OUT/launches_tf32.json'"
    stage bench 150 env DCNN_TF32=conv "$PY" scripts/bench.py --device cuda --json "$OUT/bench.json"
    stage mobilenet 120 "$PY" -m dcnn train --model mobilenet --backend "$BACKEND" --out "$WORK/mobilenet" \
        --epochs 1 --limit 10000 --no-progress --json && check mobilenet "r['test_accuracy'] >= 0.6"
    stage families_bench 90 "$PY" scripts/bench_families.py --device cuda --json "$OUT/bench_families.json"
    stage mobilenet_launches 120 env DCNN_TF32=off "$PY" scripts/count_launches.py --device cuda --model mobilenet \
        --batch 128,512 --json "$OUT/launches_mobilenet.json"
fi

"$PY" - "$WORK/stages.tsv" "$WORK/header.log" "$OUT" "$START" <<'EOF'
import json, os, sys, time
stages_file, header_file, out, start = sys.argv[1:5]
stages = []
for line in open(stages_file):
    name, rc, secs, cap = line.rstrip("\n").split("\t")
    stages.append({"stage": name, "passed": rc == "0", "exit_status": int(rc), "seconds": secs, "cap_s": int(cap)})
header = {}
for line in open(header_file):
    if line.startswith("{"):
        header = json.loads(line)
summary = {"header": header, "stages": stages, "passed": all(s["passed"] for s in stages) and len(stages) > 2,
           "seconds": round(time.time() - int(start), 1)}
for name in ("launches_fp32", "launches_tf32", "bench", "bench_families", "launches_mobilenet"):
    path = os.path.join(out, f"{name}.json")
    if os.path.exists(path):
        summary[name] = json.load(open(path))
with open(os.path.join(out, "gpu_check.json"), "w") as fh:
    json.dump(summary, fh, indent=2)
failed = [s["stage"] for s in stages if not s["passed"]]
print(f"{'PASS' if summary['passed'] else 'FAIL'} all: {len(stages) - len(failed)} of {len(stages)} stages passed"
      + (f" (failed: {', '.join(failed)})" if failed else "") + f" in {summary['seconds']} s; summary: "
      + os.path.join(out, "gpu_check.json"))
sys.exit(0 if summary["passed"] else 1)
EOF
status=$?
rm -rf "$WORK"
exit $status
