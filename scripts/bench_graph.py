"""The functional API's cost, side by side in one run.

    python scripts/bench_graph.py            # CPU, 2 threads, prints the table
    python scripts/bench_graph.py --quick    # a tiny run (what the tests use)

1. ``convnet`` (the default preset) as a list of layers and written with the functional API:
   training-step time (the two take turns, 5 steps each, so load from other processes falls on
   both alike; median of the turns) and peak RSS (a fresh process each, same steps).
2. A DenseNet-style block (4 layers of BN -> ReLU -> conv 3x3, each reading the concatenation of
   the block input and every earlier layer's output; then a transition and a classifier) against
   its PyTorch twin (``dcnn.io.torch_model.to_torch`` of the same graph, the same weights):
   peak RSS of a training step, each framework in a fresh process, and step time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--probe", help=argparse.SUPPRESS)     # list | graph | dense-dcnn | dense-torch
    p.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--json", metavar="PATH")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    os.environ["DCNN_BACKEND"] = "numpy"
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402


def peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def convnet(functional: bool, seed: int = 0):
    import dcnn
    preset = dcnn.presets.get_preset("convnet")
    layers = preset.layers((1, 28, 28), 10)
    if not functional:
        net = dcnn.DCNNetwork(layers, input_shape=(1, 28, 28), seed=seed)
    else:
        x = h = dcnn.Input((1, 28, 28))
        for layer in layers:
            h = layer(h)
        net = dcnn.DCNNetwork(inputs=x, outputs=h, seed=seed)
    return net.compile("adam", lr=1e-3)


def dense_block(growth: int = 16, layers: int = 4, seed: int = 0):
    import dcnn
    from dcnn import AvgPool2D, BatchNorm2D, Concatenate, Conv2D, Dense, GlobalAvgPool2D, Input, ReLU
    x = Input((1, 28, 28))
    features = [Conv2D(2 * growth, 3, padding=1, use_bias=False)(x)]
    for _ in range(layers):
        joined = features[0] if len(features) == 1 else Concatenate()(features)
        features.append(Conv2D(growth, 3, padding=1, use_bias=False)(ReLU()(BatchNorm2D()(joined))))
    h = Conv2D(64, 1, use_bias=False)(ReLU()(BatchNorm2D()(Concatenate()(features))))
    y = Dense(10)(GlobalAvgPool2D()(AvgPool2D(2)(h)))
    return dcnn.DCNNetwork(inputs=x, outputs=y, seed=seed).compile("sgd", lr=0.05, momentum=0.9)


def batch(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def probe(which: str, steps: int, n: int) -> None:
    """A fresh process: build, run ``steps`` training steps, print the peak RSS (MiB)."""
    x, y = batch(n)
    if which == "dense-torch":
        import torch
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        from dcnn.io.torch_model import load_into_torch, to_torch
        net = dense_block().build()
        module = to_torch(net.model)
        load_into_torch(module, net.state_dict())
        del net
        opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        before = peak_rss_mib()
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(xt), yt).backward()
            opt.step()
    else:
        net = {"list": lambda: convnet(False), "graph": lambda: convnet(True), "dense-dcnn": dense_block}[which]()
        net.build()
        be = net.backend
        xd, yd = be.from_numpy(x), be.from_numpy(y)
        before = peak_rss_mib()
        for _ in range(steps):
            net.train_on_batch(xd, yd)
        be.synchronize()
    print(json.dumps({"before_mib": before, "peak_mib": peak_rss_mib()}))


def peak(which: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", which, "--threads", str(args.threads),
           "--steps", str(args.steps), "--batch", str(args.batch)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise RuntimeError(f"probe {which} failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def step_times(contenders: dict, turns: int, per_turn: int) -> dict:
    """Median ms per training step of each contender, taking turns (the order reversed every turn)."""
    times = {name: [] for name in contenders}
    order = list(contenders)
    for turn in range(turns):
        for name in (order if turn % 2 == 0 else order[::-1]):
            step = contenders[name]
            t0 = time.perf_counter()
            for _ in range(per_turn):
                step()
            times[name].append((time.perf_counter() - t0) * 1000 / per_turn)
    return {name: float(np.median(ms)) for name, ms in times.items()}


def main(args) -> dict:
    if args.probe:
        probe(args.probe, args.steps, args.batch)
        return {}
    if args.quick:
        args.batch, args.steps = 8, 2
    turns, per_turn = (2, 1) if args.quick else (12, 5)
    x, y = batch(args.batch)
    result = {"batch": args.batch, "threads": args.threads, "load_average": os.getloadavg()[0]}

    nets = {"list": convnet(False).build(), "functional": convnet(True).build()}
    be = nets["list"].backend
    xd, yd = be.from_numpy(x), be.from_numpy(y)

    def stepper(net):
        def step():
            net.train_on_batch(xd, yd)
            be.synchronize()
        return step

    for net in nets.values():      # compile the kernels, settle the allocator
        for _ in range(3):
            stepper(net)()
    result["convnet_ms"] = step_times({k: stepper(v) for k, v in nets.items()}, turns, per_turn)
    result["convnet_peak_mib"] = {"list": peak("list", args), "functional": peak("graph", args)}

    import torch
    torch.set_num_threads(args.threads)
    from dcnn.io.torch_model import load_into_torch, to_torch
    dense = dense_block().build()
    module = to_torch(dense.model)
    load_into_torch(module, dense.state_dict())
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()
        opt.step()

    for _ in range(3):
        stepper(dense)()
        torch_step()
    result["dense_block_ms"] = step_times({"dcnn": stepper(dense), "torch": torch_step}, turns, per_turn)
    result["dense_block_peak_mib"] = {"dcnn": peak("dense-dcnn", args), "torch": peak("dense-torch", args)}
    result["load_average_after"] = os.getloadavg()[0]
    return result


def report(r: dict) -> str:
    c, m = r["convnet_ms"], r["convnet_peak_mib"]
    d, dm = r["dense_block_ms"], r["dense_block_peak_mib"]
    return "\n".join([
        f"batch {r['batch']}, {r['threads']} threads, load average {r['load_average']:.2f} -> "
        f"{r['load_average_after']:.2f}",
        "| | step (median ms) | ratio | peak RSS (MiB) | ratio |",
        "|---|---|---|---|---|",
        f"| convnet, list of layers | {c['list']:.1f} | 1 | {m['list']['peak_mib']:.0f} | 1 |",
        f"| convnet, functional API | {c['functional']:.1f} | {c['functional'] / c['list']:.3f} | "
        f"{m['functional']['peak_mib']:.0f} | {m['functional']['peak_mib'] / m['list']['peak_mib']:.3f} |",
        f"| DenseNet-style block, PyTorch | {d['torch']:.1f} | 1 | {dm['torch']['peak_mib']:.0f} | 1 |",
        f"| DenseNet-style block, dcnn | {d['dcnn']:.1f} | {d['dcnn'] / d['torch']:.3f} | "
        f"{dm['dcnn']['peak_mib']:.0f} | {dm['dcnn']['peak_mib'] / dm['torch']['peak_mib']:.3f} |",
    ])


if __name__ == "__main__":
    out = main(ARGS)
    if out:
        print(report(out))
        if ARGS.json:
            with open(ARGS.json, "w") as fh:
                json.dump(out, fh, indent=2)
