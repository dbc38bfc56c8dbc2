"""Data-parallel throughput on this machine: 2 ranks x 1 thread against 1 process x 2 threads and
1 process x 1 thread, on the ref and convnet training steps, and the all-reduce's share of a step.

    python scripts/bench_dist.py                       # prints the table
    python scripts/bench_dist.py --json dist.json      # and writes it as JSON
    python scripts/bench_dist.py --quick               # tiny: checks that it runs

Each configuration runs in fresh processes (thread pools are fixed when NumPy loads); the 2-rank
one under ``mpiexec -n 2`` (pip install -e '.[dist]').  Every configuration trains on the same
global batches (``--batch``, default 128); the 2 ranks take 64 each.  "all-reduce" is the time
inside the gradient all-reduce per step, which includes waiting for the slower rank; "transfer"
is the same all-reduce timed alone, back to back, after a barrier.  Rounds alternate between
the configurations and the best round counts, so load from other processes falls on all alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 ranks x 1 thread", 2, 1))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="ref,convnet", help="comma-separated: ref, convnet")
    p.add_argument("--batch", type=int, default=128, help="global batch (default 128)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per round (default 30)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="rounds over the configurations; the best counts")
    p.add_argument("--quick", action="store_true", help="batch 16, 3 steps, 1 round")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.warmup, args.rounds = 16, 3, 1, 1
    return args


# --- one configuration (a child process, or each rank of an MPI job) -------------------------------

def build(name, backend):
    from dcnn import Conv2D, DCNNetwork, Dense, Flatten, MaxPool2D, ReLU
    from dcnn.model import presets
    if name == "convnet":
        return presets.get_preset("convnet").build((1, 28, 28), 10, backend=backend).compile("adam", lr=1e-3)
    if name == "ref":   # scripts/bench.py's "ref"
        layers = [Conv2D(32, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(64, 3, padding=1), ReLU(), MaxPool2D(2),
                  Flatten(), Dense(128, init="he"), ReLU(), Dense(10)]
        return DCNNetwork(layers, input_shape=(1, 28, 28), backend=backend).build().compile("sgd", lr=0.01,
                                                                                            momentum=0.9)
    raise SystemExit(f"unknown model {name!r}; valid ones are: ref, convnet")


def worker(args):
    import numpy as np
    import backends
    from dcnn import distributed
    comm = distributed.init()
    backend = backends.use("numpy")
    distributed.set_threads(backend, args.threads)
    out = {"_backend": backend.describe()}
    rng = np.random.default_rng(0)
    x = backend.from_numpy(rng.random((4 * args.batch, 1, 28, 28), dtype=np.float32))
    y = backend.from_numpy(rng.integers(0, 10, 4 * args.batch))
    xp = backend.xp
    for name in args.models.split(","):
        net = build(name, backend)
        parallel = distributed.DataParallel(net, comm) if comm is not None else None

        def step(i):
            idx = backend.from_numpy(np.arange((i % 4) * args.batch, (i % 4 + 1) * args.batch))
            if parallel is not None:
                idx = parallel.shard(idx)
            net.train_on_batch(xp.take(x, idx, axis=0), xp.take(y, idx, axis=0))

        for i in range(args.warmup):
            step(i)
        if comm is not None:
            comm.barrier()
            before = net.optimizer.allreduce_seconds
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        seconds = time.perf_counter() - t0
        result = {"step_ms": 1e3 * seconds / args.steps, "images_per_s": args.steps * args.batch / seconds,
                  "params": net.model.param_count()}
        if comm is not None:
            result["allreduce_ms"] = 1e3 * (net.optimizer.allreduce_seconds - before) / args.steps
            flat = np.zeros(net.model.param_count() + 2, np.float32)
            comm.barrier()
            t0 = time.perf_counter()
            for _ in range(20):
                comm.allreduce_sum(flat)
            result["transfer_ms"] = 1e3 * (time.perf_counter() - t0) / 20
            worst = comm.comm.allreduce(seconds, op=comm.MPI.MAX)         # the slower rank sets the pace
            result["step_ms"] = 1e3 * worst / args.steps
            result["images_per_s"] = args.steps * args.batch / worst
        out[name] = result
    if comm is None or comm.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


# --- the table -------------------------------------------------------------------------------------

def run_config(args, ranks, threads):
    env = {**os.environ, "DCNN_BACKEND": "numpy", "PYTHONPATH": ROOT}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    argv = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads), "--models", args.models,
            "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if ranks > 1:
        sys.path.insert(0, ROOT)
        from dcnn.distributed import mpiexec_command
        prefix, mpi_env = mpiexec_command(ranks)
        argv, env = [*prefix, *argv], {**env, **mpi_env}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    best = {}
    for _ in range(args.rounds):
        for label, ranks, threads in CONFIGS:
            results = run_config(args, ranks, threads)
            backend = results.pop("_backend")
            for model, r in results.items():
                key = (label, model)
                if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
                    best[key] = r
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load:.2f}; "
          f"global batch {args.batch}, {args.steps} steps x best of {args.rounds} rounds; {backend}")
    print(f"{'model':<8} {'configuration':<22} {'ms/step':>8} {'img/s':>7} {'vs 1x1':>7} {'all-reduce':>11} "
          f"{'share':>6} {'transfer':>9}")
    rows = []
    for model in args.models.split(","):
        base = best[(CONFIGS[0][0], model)]["images_per_s"]
        for label, ranks, threads in CONFIGS:
            r = best[(label, model)]
            ar = r.get("allreduce_ms")
            row = {"model": model, "configuration": label, "ranks": ranks, "threads": threads, **r,
                   "speedup": r["images_per_s"] / base, "allreduce_share": ar / r["step_ms"] if ar else None}
            rows.append(row)
            print(f"{model:<8} {label:<22} {r['step_ms']:8.1f} {r['images_per_s']:7.0f} {row['speedup']:6.2f}x "
                  + (f"{ar:8.2f} ms {100 * row['allreduce_share']:5.1f}% {r['transfer_ms']:6.2f} ms" if ar else ""))
        print(f"{model:<8} {best[(CONFIGS[0][0], model)]['params']:,} parameters: "
              f"{4 * (best[(CONFIGS[0][0], model)]['params'] + 2) / 1e6:.2f} MB per all-reduce")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"backend": backend, "batch": args.batch, "steps": args.steps, "rounds": args.rounds, "load": load, "rows": rows},
                      fh, indent=2)


if __name__ == "__main__":
    if "--worker" in sys.argv:       # thread pools are sized when NumPy loads: the parent set the variables
        sys.path.insert(0, ROOT)
    main()
