"""The real job, dcnn against its PyTorch twin: one training epoch, or ``dcnn train`` end to end.

    python scripts/bench.py --job epoch [--threads 2] [--json out.json]
    python scripts/bench.py --job train [--epochs 4] [--threads 2] [--json out.json]

``epoch``: one epoch of the default preset (convnet, Fashion-MNIST, batch 128, Adam
with the one-cycle schedule, dropout) in one process, for dcnn, PyTorch and
PyTorch ``channels_last``: same data, same initial weights, same batch order,
same threads.  The contenders take turns every ``--chunk`` steps (rotating who
goes first), so load from other processes falls on all of them alike; each one's
time is the sum of its own chunks.  Also the same epoch's first 80 steps with
dcnn on 1 thread against 2 (the 2-thread speed-up).

``train``: ``dcnn train --no-progress`` against ``scripts/torch_twin.py`` (default
and ``channels_last``), each a fresh process, run one after the other, in turn
``--rounds`` times; wall time from start to end (data loading, the test pass
after each epoch and, for dcnn, checkpoints included) and the test accuracy each
reached.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What each field of the JSON output means (also written into it, under "fields").
FIELDS = {
    "job": "epoch or train",
    "threads": "threads per framework (BLAS, OpenMP, Numba, torch.set_num_threads)",
    "backend": "dcnn's backend as it describes itself",
    "load_average_start / load_average_end": "1-minute load average around the run (others' jobs)",
    "contenders.<name>.seconds": "epoch: the sum of the contender's chunk times; train: wall time of the process",
    "contenders.<name>.images_per_s": "epoch: training images per second over the epoch",
    "contenders.<name>.test_accuracy": "train: test accuracy the run reached",
    "ratio_torch / ratio_torch_cl": "dcnn seconds / PyTorch seconds (default / channels_last); < 1: dcnn faster",
    "thread_speedup": "epoch: dcnn's time for the first 80 steps on 1 thread / on 2 threads",
    "rounds": "train: the processes' results, round by round",
}


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    env["DCNN_BACKEND"] = "numpy"
    return env


def _load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --- one epoch, in process -------------------------------------------------------------------

def run_epoch(threads: int, chunk: int = 10, limit: int | None = None) -> dict:
    sys.path.insert(0, ROOT)
    import numpy as np
    import torch
    import backends
    from dcnn.data import datasets
    from dcnn.model import presets
    from dcnn.train.job import LRSchedule
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from torch_twin import twin

    torch.set_num_threads(threads)
    backend = backends.resolve("numpy")
    backend.warm_up()
    data = datasets.load("fashion-mnist", progress=False).limit(limit)
    preset = presets.get_preset("convnet")
    net = preset.build(data.input_shape, data.num_classes, seed=0, backend=backend)
    net.compile(preset.optimizer, lr=preset.lr, **preset.optimizer_options)
    n, batch = len(data.y_train), preset.batch_size
    steps = -(-n // batch)
    schedule = LRSchedule(preset.lr, preset.schedule, preset.epochs)
    schedule.total = steps * preset.epochs
    order = net.shuffle_rng.permutation(n)
    xd, yd = backend.from_numpy(data.x_train), backend.from_numpy(data.y_train)
    od = backend.from_numpy(order)
    xp = backend.xp

    def dcnn_steps(lo, hi):
        for s in range(lo, hi):
            net.optimizer.lr = schedule.lr_at(s)
            idx = od[s * batch:min((s + 1) * batch, n)]
            net.train_on_batch(xp.take(xd, idx, axis=0), xp.take(yd, idx, axis=0))

    def torch_contender(channels_last):
        model = twin(net, torch, channels_last)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=preset.lr)
        memory = torch.channels_last if channels_last else torch.contiguous_format
        xt, yt, ot = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train), torch.from_numpy(order)

        def run(lo, hi):
            for s in range(lo, hi):
                for group in opt.param_groups:
                    group["lr"] = schedule.lr_at(s)
                idx = ot[s * batch:min((s + 1) * batch, n)]
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(xt[idx].contiguous(memory_format=memory)), yt[idx]).backward()
                opt.step()
        return run

    contenders = {"torch": torch_contender(False), "torch-cl": torch_contender(True)}
    contenders = {"dcnn": dcnn_steps, **contenders}   # built first: dcnn's weights seed the twins
    names = list(contenders)
    spent = {name: 0.0 for name in names}
    start = _load_average()
    for i, lo in enumerate(range(0, steps, chunk)):
        hi = min(lo + chunk, steps)
        turn = names[i % len(names):] + names[:i % len(names)]
        for name in turn:
            t0 = time.perf_counter()
            contenders[name](lo, hi)
            spent[name] += time.perf_counter() - t0
    result = {"job": "epoch", "threads": threads, "backend": backend.describe(), "steps": steps, "batch": batch,
              "load_average_start": start, "load_average_end": _load_average(), "contenders": {}}
    for name in names:
        result["contenders"][name] = {"seconds": spent[name], "images_per_s": n / spent[name]}
    result["ratio_torch"] = spent["dcnn"] / spent["torch"]
    result["ratio_torch_cl"] = spent["dcnn"] / spent["torch-cl"]
    result["thread_speedup"] = _thread_speedup()
    return result


def _thread_speedup(steps: int = 80) -> float:
    """dcnn's first ``steps`` convnet steps on 1 thread / on 2, each in a fresh process, alternately twice."""
    code = ("import time,sys; sys.path.insert(0, %r); import backends, numpy as np; from dcnn import presets;"
            "b=backends.resolve('numpy'); b.warm_up(); net=presets.get_preset('convnet').build((1,28,28),10,"
            "backend=b).compile('adam', lr=1e-3); r=np.random.default_rng(0); x=r.random((128,1,28,28),"
            "dtype=np.float32); y=r.integers(0,10,128); net.train_on_batch(x,y); t=time.perf_counter();"
            "[net.train_on_batch(x,y) for _ in range(%d)]; print(time.perf_counter()-t)") % (ROOT, steps)
    times = {1: [], 2: []}
    for _ in range(2):
        for threads in (1, 2):
            out = subprocess.run([sys.executable, "-c", code], env=_env(threads), capture_output=True, text=True,
                                 check=True)
            times[threads].append(float(out.stdout.strip().splitlines()[-1]))
    return min(times[1]) / min(times[2])


# --- dcnn train end to end, in fresh processes -------------------------------------------------

def run_train(threads: int, epochs: int, rounds: int = 1, limit: int | None = None) -> dict:
    env = _env(threads)
    extra = ["--limit", str(limit)] if limit else []
    results = {"dcnn": [], "torch": [], "torch-cl": []}
    start = _load_average()
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "dcnn", "train", "--no-progress", "--json", "--epochs", str(epochs),
                   "--out", os.path.join(out, "run"), *extra]
            t0 = time.perf_counter()
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
            seconds = time.perf_counter() - t0
            if run.returncode != 0:
                raise RuntimeError(f"dcnn train failed:\n{run.stderr[-2000:]}")
            summary = json.loads(run.stdout.strip().splitlines()[-1])
            results["dcnn"].append({"seconds": seconds, "test_accuracy": summary["test_accuracy"]})
        for name, flag in (("torch", []), ("torch-cl", ["--channels-last"])):
            cmd = [sys.executable, os.path.join(ROOT, "scripts", "torch_twin.py"), "--epochs", str(epochs),
                   "--threads", str(threads), *flag, *extra]
            t0 = time.perf_counter()
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - t0
            twin = json.loads(run.stdout.strip().splitlines()[-1])
            results[name].append({"seconds": seconds, "test_accuracy": twin["test_accuracy"]})
    best = {name: min(runs, key=lambda r: r["seconds"]) for name, runs in results.items()}
    return {"job": "train", "threads": threads, "epochs": epochs, "limit": limit,
            "load_average_start": start, "load_average_end": _load_average(),
            "contenders": best, "rounds": results,
            "ratio_torch": best["dcnn"]["seconds"] / best["torch"]["seconds"],
            "ratio_torch_cl": best["dcnn"]["seconds"] / best["torch-cl"]["seconds"]}


def report(result: dict) -> str:
    lines = [f"{result['job']}: dcnn vs PyTorch, {result['threads']} threads; load average "
             f"{result['load_average_start']} -> {result['load_average_end']}"]
    for name, c in result["contenders"].items():
        extra = (f"  {c['images_per_s']:7.0f} img/s" if "images_per_s" in c
                 else f"  test accuracy {c['test_accuracy']:.4f}")
        lines.append(f"  {name:9s} {c['seconds']:8.1f} s{extra}")
    lines.append(f"  dcnn / torch {result['ratio_torch']:.2f}   dcnn / torch channels_last {result['ratio_torch_cl']:.2f}")
    if "thread_speedup" in result:
        lines.append(f"  dcnn 2 threads vs 1: {result['thread_speedup']:.2f}x faster (convnet step, batch 128)")
    return "\n".join(lines)


def main(args) -> dict:
    if args.job == "epoch":
        result = run_epoch(args.threads, limit=args.limit)
    else:
        result = run_train(args.threads, args.epochs, args.rounds, limit=args.limit)
    result["fields"] = FIELDS
    print(report(result), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result
