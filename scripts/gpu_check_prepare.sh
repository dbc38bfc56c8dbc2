#!/usr/bin/env bash
# Run here, before scripts/gpu_check.sh goes to a GPU machine that cannot reach the network:
# puts into .gpu/ (ignored by git; carry it) what that machine lacks, about 31 MB:
#   .gpu/whl/   wheels of dcnn's pure-Python needs missing from the GPU image (array-api-compat,
#               array-api-strict for the tests), for its Python 3.12
#   .gpu/data/  Fashion-MNIST (from $DCNN_DATA, or the system copy)
# Then, e.g. with the device tool: run(command="bash scripts/gpu_check.sh", carry=[".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/whl .gpu/data/fashion-mnist
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d .gpu/whl "array-api-compat==$(python3 -c 'import array_api_compat as m; print(m.__version__)')" \
    "array-api-strict==$(python3 -c 'import array_api_strict as m; print(m.__version__)')"
src="${DCNN_DATA:-/usr/share/datasets}/fashion-mnist"
[ -f "$src/train-images-idx3-ubyte.gz" ] || src="${DCNN_DATA:-/usr/share/datasets}"
cp "$src"/*-ubyte.gz .gpu/data/fashion-mnist/
du -sh .gpu
