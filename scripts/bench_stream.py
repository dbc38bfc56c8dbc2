"""End to end: `dcnn train` from an image folder streamed by worker processes, against the same
folder decoded into memory first, taking turns in one run.

    python scripts/make_image_folder.py /tmp/fm64 --count 8000 --test-count 1000 --jobs 2
    python scripts/bench_stream.py /tmp/fm64 --workers 1 --rounds 5

Each round runs both (the order alternates), one epoch of `lenet` at batch 64, and reads the
training seconds from `--json` (data loading before the first step is not in them: the in-memory
run decodes the folder first, the streamed one never does).  Prints each contender's median and
the ratio streamed / in memory; the goal is within 1.10.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(folder: str, workers: int | None, args) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "dcnn", "train", "--data", folder, "--model", args.model, "--epochs", "1",
               "--batch-size", str(args.batch_size), "--out", os.path.join(out, "run"), "--json", "--no-progress"]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600,
                              env={**os.environ, "DCNN_BACKEND": "numpy"})
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        return float(json.loads(done.stdout.strip().splitlines()[-1])["train_seconds"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model", default="lenet")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    times = {"memory": [], "streamed": []}
    for r in range(args.rounds):
        order = ["memory", "streamed"] if r % 2 == 0 else ["streamed", "memory"]
        for name in order:
            times[name].append(run(args.folder, None if name == "memory" else args.workers, args))
    result = {name: statistics.median(ts) for name, ts in times.items()}
    result["ratio"] = result["streamed"] / result["memory"]
    result["runs"] = times
    result["load_average"] = os.getloadavg()[0]
    print(f"in memory {result['memory']:.1f} s, streamed ({args.workers} workers) {result['streamed']:.1f} s "
          f"(medians of {args.rounds}): ratio {result['ratio']:.3f}; runs {times}; load {result['load_average']:.2f}")
    return result


if __name__ == "__main__":
    main()
