"""Kernel launches of one training step: estimated on the CPU, measured on a GPU.

    python scripts/count_launches.py                  # estimate, default preset (convnet)
    python scripts/count_launches.py --model lenet --json launches.json
    python scripts/count_launches.py --model mobilenet                # depthwise, inverted residuals
    python scripts/count_launches.py --device cuda --batch 128,512   # measure (GPU + PyTorch CUDA)

On the CPU (no GPU needed): one training step runs on NumPy arrays wrapped so that
every array operation is counted: each ufunc call (an element-wise operation, a
reduction, a matmul), each namespace call that makes a new array (concat, take,
argmax, a copying reshape...), each slice assignment.  On CuPy each of these is
about one kernel launch, so their sum estimates the launches of the *generic*
path (backends/ops).  The *CuPy-override* path is then estimated as the
operations outside the backend's hot methods plus, per call of each hot method,
the launches its fused CuPy version makes (``backends.cupy_backend.LAUNCHES``).
Host->device uploads and device->host reads inside the step are counted too
(each read is a wait for the device).

On a GPU (``--device cuda``): the step runs on CuPy under PyTorch's profiler
(CUPTI sees every kernel of the process, CuPy's included) and the kernels and
memsets/copies of one step are counted, for dcnn and for the same network in
PyTorch; then both are timed.  ``DCNN_TF32`` (off|conv|all) sets dcnn's matmul
precision; PyTorch is set to match (off: no TF32 anywhere; conv or all: PyTorch's
defaults, TF32 in cuDNN convolutions only, or everywhere).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Namespace calls that never launch (views, metadata) or only allocate.
NO_LAUNCH = {"empty", "empty_like", "permute_dims", "matrix_transpose", "broadcast_to", "expand_dims",
             "squeeze", "asarray", "isdtype", "result_type", "can_cast", "finfo", "iinfo"}


class Tally:
    def __init__(self):
        self.ops = Counter()           # (where, op) -> launches
        self.calls = Counter()         # hot method -> calls
        self.fused = Counter()         # hot method -> launches of its CuPy version
        self.where = "outside"
        self.ufuncs = 0
        self.uploads = 0
        self.reads = 0
        self.active = False

    def op(self, name):
        if self.active:
            self.ops[(self.where, name)] += 1


TALLY = Tally()


def _plain(value):
    if isinstance(value, Counted):
        return value.view(np.ndarray)
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


def _counted(value):
    if isinstance(value, np.ndarray) and not isinstance(value, Counted):
        return value.view(Counted)
    if isinstance(value, tuple):
        return tuple(_counted(v) for v in value)
    return value


class Counted(np.ndarray):
    """A NumPy array whose every ufunc call and slice assignment is counted."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        TALLY.ufuncs += 1
        TALLY.op(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        if "out" in kwargs:
            kwargs["out"] = _plain(kwargs["out"])
        return _counted(getattr(ufunc, method)(*_plain(inputs), **kwargs))

    def __setitem__(self, key, value):
        TALLY.op("setitem")
        np.ndarray.__setitem__(self.view(np.ndarray), key, _plain(value))

    def __float__(self):
        TALLY.reads += TALLY.active
        return float(self.view(np.ndarray))

    def __int__(self):
        TALLY.reads += TALLY.active
        return int(self.view(np.ndarray))

    def __bool__(self):
        TALLY.reads += TALLY.active
        return bool(self.view(np.ndarray))


class CountingNamespace:
    """The array namespace, counting each call that makes a new array without a ufunc."""

    def __init__(self, xp):
        self._xp = xp

    def __getattr__(self, name):
        value = getattr(self._xp, name)
        if not callable(value) or isinstance(value, type):
            return value

        def call(*args, **kwargs):
            before = TALLY.ufuncs
            result = value(*_plain(args), **_plain(kwargs))
            if TALLY.ufuncs == before and name not in NO_LAUNCH and isinstance(result, np.ndarray):
                inputs = [a for a in args if isinstance(a, np.ndarray)]
                if not any(np.may_share_memory(result, a) for a in inputs):
                    TALLY.op(name)
            return _counted(result)
        return call


def counting_backend():
    """A generic Backend on counted NumPy arrays, its hot methods tallied."""
    import array_api_compat.numpy as xp_numpy

    from backends.base import Backend
    from backends.cupy_backend import LAUNCHES

    class CountingBackend(Backend):
        name = "counting"

        def owns(self, array):
            return isinstance(array, Counted)

        def from_numpy(self, array, dtype=None):
            TALLY.uploads += TALLY.active
            array = np.array(array, dtype=dtype)
            return array.view(Counted)

        def to_numpy(self, array):
            TALLY.reads += TALLY.active
            return np.asarray(_plain(array))

        def random_generator(self, seed):
            return CountingGenerator(seed)

    def tallied(name):
        generic = getattr(Backend, name)

        def method(self, *args, **kwargs):
            outer = TALLY.where
            if outer == "outside" and TALLY.active:
                TALLY.calls[name] += 1
                TALLY.fused[name] += LAUNCHES[name](args, kwargs)
                TALLY.where = name
            try:
                return generic(self, *args, **kwargs)
            finally:
                TALLY.where = outer
        method.__name__ = name
        return method

    for name in LAUNCHES:
        setattr(CountingBackend, name, tallied(name))
    return CountingBackend(CountingNamespace(xp_numpy), device="cpu", reason="counting launches")


class CountingGenerator:
    """Uniform draws on the device: one cuRAND launch each."""

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def random(self, shape, dtype):
        TALLY.op("curand")
        return self._rng.random(shape, dtype=np.float32).astype(dtype).view(Counted)

    state = None


def build_network(model: str, backend, optimizer=None):
    from dcnn.model.presets import get_preset
    preset = get_preset(model)
    net = preset.build((1, 28, 28), 10, backend=backend)
    options = dict(preset.optimizer_options)
    return net.compile(optimizer or preset.optimizer, lr=preset.lr, **options), preset


def estimate(model: str = "convnet", batch: int = 8, optimizer=None) -> dict:
    """Counts of one training step (the second: the first lays out the optimiser's state)."""
    import backends
    backend = counting_backend()
    previous = backends.get_backend()
    backends.use(backend)
    try:
        net, preset = build_network(model, backend, optimizer)
        rng = np.random.default_rng(0)
        x = backend.from_numpy(rng.random((batch, 1, 28, 28), dtype=np.float32))
        y = backend.from_numpy(rng.integers(0, 10, batch))
        net.train_on_batch(x, y)
        TALLY.__init__()
        TALLY.active = True
        net.train_on_batch(x, y)
        TALLY.active = False
    finally:
        backends.use(previous)
    per_method = Counter()
    outside = Counter()
    for (where, op), n in TALLY.ops.items():
        (outside if where == "outside" else per_method)[op if where == "outside" else where] += n
    generic = sum(TALLY.ops.values())
    fused = sum(outside.values()) + sum(TALLY.fused.values())
    return {"model": model, "optimizer": optimizer or preset.optimizer, "batch": batch,
            "generic_launches": generic, "cupy_launches": fused,
            "methods": {name: {"calls": TALLY.calls[name], "generic_launches": per_method[name],
                               "cupy_launches": TALLY.fused[name]} for name in sorted(TALLY.calls)},
            "outside_methods": dict(sorted(outside.items(), key=lambda kv: -kv[1])),
            "outside_launches": sum(outside.values()),
            "uploads": TALLY.uploads, "reads": TALLY.reads}


def print_estimate(result: dict) -> None:
    print(f"one training step of {result['model']} ({result['optimizer']}), estimated CUDA kernel launches")
    print(f"{'hot method':24s} {'calls':>5s} {'generic':>8s} {'CuPy':>6s}")
    for name, m in result["methods"].items():
        print(f"{name:24s} {m['calls']:5d} {m['generic_launches']:8d} {m['cupy_launches']:6d}")
    out = result["outside_launches"]
    print(f"{'outside the methods':24s} {'':5s} {out:8d} {out:6d}   "
          + ", ".join(f"{k} {v}" for k, v in list(result["outside_methods"].items())[:8]))
    print(f"{'total':24s} {'':5s} {result['generic_launches']:8d} {result['cupy_launches']:6d}")
    print(f"generic path (backends/ops on CuPy): {result['generic_launches']} launches; "
          f"CuPy-override path: {result['cupy_launches']} launches; "
          f"host->device uploads: {result['uploads']}; device->host reads (waits): {result['reads']}")


# --- measured on a GPU -------------------------------------------------------------------------
def torch_twin(net, preset, torch, device="cuda"):
    """The same network in PyTorch (same weights: dcnn.io.torch_model.to_torch) on ``device``, and its optimiser."""
    from dcnn.io.torch_model import load_into_torch, to_torch
    model = to_torch(net.model)
    load_into_torch(model, {k: np.ascontiguousarray(v) for k, v in net.state_dict().items()})
    model = model.to(device)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[preset.optimizer]
    return model, opt_cls(model.parameters(), lr=preset.lr, **preset.optimizer_options)


def measure(model: str, batches, repeats: int = 20) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    import backends
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda needs PyTorch with CUDA (it counts the kernels through CUPTI)")
    backend = backends.use("cupy")
    mode = getattr(backend, "tf32", "off")
    torch.backends.cuda.matmul.allow_tf32 = mode == "all"
    torch.backends.cudnn.allow_tf32 = mode != "off"
    torch.backends.cudnn.benchmark = True
    out = {"model": model, "tf32": mode, "backend": backend.describe(), "torch": torch.__version__,
           "torch_matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
           "torch_cudnn_tf32": torch.backends.cudnn.allow_tf32, "cases": []}
    rng = np.random.default_rng(0)
    for batch in batches:
        net, preset = build_network(model, backend)
        twin, opt = torch_twin(net, preset, torch)
        xh = rng.random((batch, 1, 28, 28), dtype=np.float32)
        yh = rng.integers(0, 10, batch)
        x, y = backend.from_numpy(xh), backend.from_numpy(yh)
        tx, ty = torch.from_numpy(xh).cuda(), torch.from_numpy(yh).cuda()

        def torch_step():
            twin.train()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(twin(tx), ty).backward()
            opt.step()
        steps = {"dcnn": lambda: net.train_on_batch(x, y), "torch": torch_step}
        case = {"batch": batch}
        for label, step in steps.items():
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            backend.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                step()
                torch.cuda.synchronize()
                backend.synchronize()
            kinds = Counter()
            for event in prof.events():
                if str(event.device_type).endswith("CUDA"):
                    name = event.name.lower()
                    kinds["memcpy" if "memcpy" in name else "memset" if "memset" in name else "kernel"] += 1
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                backend.synchronize()
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) * 1e3)
            med = float(np.median(times))
            seen = sum(kinds.values()) > 0     # None: the profiler saw no GPU activity at all
            case[label] = {"kernels": kinds["kernel"] if seen else None, "memsets": kinds["memset"] if seen else None,
                           "memcpys": kinds["memcpy"] if seen else None, "median_ms": med,
                           "images_per_s": batch / med * 1e3}
        case["throughput_ratio"] = case["dcnn"]["images_per_s"] / case["torch"]["images_per_s"]
        out["cases"].append(case)
        print(f"{model} batch {batch:4d} TF32 {mode}: dcnn {case['dcnn']['kernels']} kernels "
              f"+ {case['dcnn']['memsets']} memsets + {case['dcnn']['memcpys']} copies, "
              f"{case['dcnn']['median_ms']:.3f} ms; torch {case['torch']['kernels']} kernels, "
              f"{case['torch']['median_ms']:.3f} ms; throughput dcnn/torch {case['throughput_ratio']:.2f}",
              flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="convnet", help="a preset: convnet (default), resnet, mobilenet, lenet, seed")
    p.add_argument("--optimizer", help="override the preset's optimiser (sgd, adam, adamw)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: estimate (default); cuda: measure on the GPU against PyTorch")
    p.add_argument("--batch", default="128,512", help="batch sizes measured on the GPU (comma-separated)")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per contender on the GPU")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.device == "cpu":
        result = estimate(args.model, optimizer=args.optimizer)
        print_estimate(result)
    else:
        result = measure(args.model, [int(b) for b in args.batch.split(",")], args.repeats)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
