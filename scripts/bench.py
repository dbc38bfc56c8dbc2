"""dcnn against PyTorch, side by side in one run: training steps and inference.

    python scripts/bench.py                      # CPU, 2 threads each, prints the table
    python scripts/bench.py --json bench.json    # the same, machine-readable too
    python scripts/bench.py --quick              # a tiny run (what the tests use)
    python scripts/bench.py --device cuda        # dcnn on CuPy against PyTorch on CUDA
    python scripts/bench.py --job epoch          # one epoch of the default preset against its PyTorch twin
    python scripts/bench.py --job train          # `dcnn train` end to end against its PyTorch twin

Models: "ref" (conv 1->32 3x3 pad 1, ReLU, max-pool 2, conv 32->64 3x3 pad 1, ReLU,
max-pool 2, flatten, dense 3136->128, ReLU, dense 128->10) and "ref-bn" (BatchNorm
after each conv), float32, 28x28x1 inputs, softmax cross-entropy, SGD with momentum.
Both frameworks start from the same weights and see the same batches.  Steps
alternate between the contenders (dcnn, torch, torch channels_last, then the
reverse order), so load from other processes falls on all of them alike.
GFLOP/s counts the convolutions' and dense layers' multiply-adds only.
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", choices=("steps", "epoch", "train"), default="steps",
                   help="steps: single training/inference steps (default); epoch: one epoch of the default "
                        "preset against its PyTorch twin; train: `dcnn train` end to end against its twin "
                        "(see scripts/bench_job.py)")
    p.add_argument("--epochs", type=int, default=4, help="--job train: epochs (default 4, the preset's)")
    p.add_argument("--rounds", type=int, default=1, help="--job train: runs per contender (the fastest counts)")
    p.add_argument("--limit", type=int, default=None, help="--job epoch/train: first N training images")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both frameworks (default 2)")
    p.add_argument("--quick", action="store_true", help="tiny batches and few steps: checks that it runs")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per contender and case")
    p.add_argument("--models", default="ref,ref-bn", help="comma-separated: ref, ref-bn")
    p.add_argument("--no-channels-last", action="store_true",
                   help="skip PyTorch with channels_last memory (CPU only)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--memory-probe", choices=("dcnn", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--memory-steps", type=int, default=30, help=argparse.SUPPRESS)
    p.add_argument("--memory-batch", type=int, default=128, help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.device == "cpu":
    # Thread pools read these when the libraries load, so set them before any import.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    os.environ["DCNN_BACKEND"] = "numpy"
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

torch = None   # imported by load_torch(), never in dcnn's memory probe


def load_torch():
    global torch
    if torch is None:
        try:
            import torch as module
        except ImportError:
            return None
        torch = module
    return torch

# --- the models ------------------------------------------------------------------


def dcnn_model(name: str, backend, seed: int = 0):
    from dcnn import BatchNorm2D, Conv2D, DCNNetwork, Dense, Flatten, MaxPool2D, ReLU
    bn = name == "ref-bn"
    layers = [Conv2D(32, 3, padding=1)] + [BatchNorm2D()] * bn + [ReLU(), MaxPool2D(2),
              Conv2D(64, 3, padding=1)] + [BatchNorm2D()] * bn + [ReLU(), MaxPool2D(2),
              Flatten(), Dense(128, init="he"), ReLU(), Dense(10)]
    net = DCNNetwork(layers, input_shape=(1, 28, 28), seed=seed, backend=backend).build()
    return net.compile("sgd", lr=0.01, momentum=0.9)


def torch_model(name: str, state: dict | None, device: str, channels_last: bool = False):
    nn = torch.nn
    bn = name == "ref-bn"
    layers = [nn.Conv2d(1, 32, 3, padding=1)] + [nn.BatchNorm2d(32)] * bn + [nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(32, 64, 3, padding=1)] + [nn.BatchNorm2d(64)] * bn + [nn.ReLU(), nn.MaxPool2d(2),
              nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)]
    model = nn.Sequential(*layers)
    if state is not None:   # dcnn's state dict has torch.nn.Sequential's keys and layouts
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def flops(name: str, batch: int, training: bool) -> float:
    """Multiply-adds x 2 of the convolutions and dense layers; training adds the
    weight gradients and the input gradients of every layer but the first."""
    layers = [(28 * 28, 1 * 9, 32), (14 * 14, 32 * 9, 64), (1, 3136, 128), (1, 128, 10)]  # (positions, in, out)
    forward = sum(2.0 * batch * pos * fan_in * out for pos, fan_in, out in layers)
    if not training:
        return forward
    first = 2.0 * batch * layers[0][0] * layers[0][1] * layers[0][2]
    return 3 * forward - first


# --- contenders: one step each, same data ----------------------------------------


class DcnnContender:
    def __init__(self, name, backend, x, y):
        self.label = "dcnn"
        self.backend = backend
        self.net = dcnn_model(name, backend)
        self.x, self.y = backend.from_numpy(x), backend.from_numpy(y)

    def state(self):
        return self.net.state_dict()

    def train_step(self):
        self.net.train_on_batch(self.x, self.y)    # returns device scalars: no host sync

    def infer_step(self):
        self.net.logits(self.x, training=False)

    def sync(self):
        self.backend.synchronize()


class TorchContender:
    def __init__(self, name, state, x, y, device, channels_last=False):
        self.label = "torch-cl" if channels_last else "torch"
        self.model, self.opt = torch_model(name, state, device, channels_last)
        self.device = device
        self.x = torch.from_numpy(x).to(device)
        if channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(y).to(device)

    def train_step(self):
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.opt.step()

    def infer_step(self):
        self.model.eval()
        with torch.inference_mode():
            self.model(self.x)

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()


def time_case(contenders, training: bool, warmup: int, repeats: int, steps_per_sample: int):
    """ms per step: one sample = ``steps_per_sample`` steps between two syncs; the
    contenders take turns sample by sample, in alternating order."""
    for c in contenders:
        for _ in range(warmup):
            (c.train_step if training else c.infer_step)()
        c.sync()
    times = {c.label: [] for c in contenders}
    enqueue = {c.label: [] for c in contenders}
    for r in range(repeats):
        for c in (contenders if r % 2 == 0 else contenders[::-1]):
            step = c.train_step if training else c.infer_step
            c.sync()
            t0 = time.perf_counter()
            for _ in range(steps_per_sample):
                step()
            t1 = time.perf_counter()
            c.sync()
            t2 = time.perf_counter()
            times[c.label].append((t2 - t0) / steps_per_sample * 1e3)
            enqueue[c.label].append((t1 - t0) / (t2 - t0))
    return times, enqueue


def sync_check(backend, contender) -> dict:
    """Does a training step wait for the device?  Queue about 0.2 s of matrix products,
    then time one step: a step with no host synchronisation returns long before the
    queued work is done; one that synchronises cannot."""
    xp = backend.xp
    a = backend.from_numpy(np.random.default_rng(0).random((4096, 4096), dtype=np.float32))
    contender.train_step()
    backend.synchronize()
    t0 = time.perf_counter()
    a @ a
    backend.synchronize()
    products = max(1, int(0.2 / max(time.perf_counter() - t0, 1e-6)))
    backend.synchronize()
    t0 = time.perf_counter()
    for _ in range(products):
        a = xp.tanh(a @ a)
    t1 = time.perf_counter()
    contender.train_step()
    t2 = time.perf_counter()
    backend.synchronize()
    t3 = time.perf_counter()
    # The host must get through the queueing and the step well before the device is done.
    return {"step_returned_ms": (t2 - t1) * 1e3, "host_done_ms": (t2 - t0) * 1e3, "device_done_ms": (t3 - t0) * 1e3,
            "no_host_sync": (t2 - t0) < 0.5 * (t3 - t0)}


def gemm_gflops(backend, repeats: int, n: int = 1024) -> float:
    """numpy's (or CuPy's) float32 matmul rate on n x n matrices, best of ``repeats``."""
    rng = np.random.default_rng(0)
    a = backend.from_numpy(rng.random((n, n), dtype=np.float32))
    b = backend.from_numpy(rng.random((n, n), dtype=np.float32))
    best = float("inf")
    for _ in range(repeats + 2):
        backend.synchronize()
        t0 = time.perf_counter()
        a @ b
        backend.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


# --- peak memory, in a fresh process per framework --------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident memory.  VmHWM belongs to the process's own
    address space; getrusage's maxrss also counts the parent's peak on Linux
    (it survives fork and exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def memory_probe(which: str, steps: int, batch: int) -> None:
    """Run ``steps`` training steps of "ref" and print the peak RSS in MiB."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    if which == "dcnn":
        import backends
        backend = backends.get_backend()
        after_import = peak_rss_mib()
        c = DcnnContender("ref", backend, x, y)
    else:
        load_torch()
        after_import = peak_rss_mib()
        c = TorchContender("ref", None, x, y, "cpu")
    for _ in range(steps):
        c.train_step()
    c.sync()
    print(json.dumps({"import_mib": after_import, "peak_mib": peak_rss_mib()}))


def measure_memory(args):
    steps, batch = (3, 16) if args.quick else (30, 128)
    out = {"steps": steps, "batch": batch}
    for which in ("dcnn", "torch"):
        if which == "torch" and torch is None:
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", which, "--threads", str(args.threads),
               "--memory-steps", str(steps), "--memory-batch", str(batch)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"memory probe for {which} failed:\n{run.stderr}")
        out[which] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


# --- the run ----------------------------------------------------------------------


def load_average():
    """1-minute load average: how busy the machine was (others' jobs share it)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def summarise(ms: list[float], batch: int, work: float, gemm: float) -> dict:
    med = float(np.median(ms))
    gflops = work / med / 1e6
    return {"median_ms": med, "min_ms": float(min(ms)), "max_ms": float(max(ms)),
            "images_per_s": batch / med * 1e3, "gflops": gflops, "gemm_fraction": gflops / gemm}


def cases_for(args):
    if args.quick:
        return [("train", 8), ("train", 16), ("infer", 16)]
    if args.device == "cuda":
        return [("train", 128), ("train", 512), ("train", 2048), ("infer", 2048)]
    return [("train", 32), ("train", 128), ("train", 512), ("infer", 512)]


def run(args) -> dict:
    import backends
    load_torch()
    backend = backends.resolve("cupy" if args.device == "cuda" else "numpy")
    if torch is not None and args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "cuda" else "cpu"
    if torch is not None and device == "cuda" and not torch.cuda.is_available():
        print("PyTorch has no CUDA here: timing dcnn alone", file=sys.stderr)
    use_torch = torch is not None and (device == "cpu" or torch.cuda.is_available())
    repeats = args.repeats or (3 if args.quick else 10 if device == "cuda" else 15)
    if use_torch and device == "cuda":
        torch.backends.cudnn.benchmark = True     # PyTorch at its best: cuDNN picks its fastest kernels
        # Same matmul precision on both sides (DCNN_TF32): off = no TF32 anywhere; conv = PyTorch's
        # defaults (TF32 in cuDNN convolutions only); all = TF32 in every float32 GEMM.
        torch.backends.cudnn.allow_tf32 = getattr(backend, "tf32", "off") != "off"
        torch.backends.cuda.matmul.allow_tf32 = getattr(backend, "tf32", "off") == "all"
    gemm = gemm_gflops(backend, 3 if args.quick else 10, 4096 if device == "cuda" else 1024)
    result = {"device": args.device, "threads": args.threads if device == "cpu" else None,
              "backend": backend.describe(), "torch": torch.__version__ if torch is not None else None,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
              "gemm_gflops": gemm, "gemm_size": 4096 if device == "cuda" else 1024, "load_average_start": load_average(), "cases": []}
    if device == "cuda" and use_torch:
        result["torch_device"] = torch.cuda.get_device_name()
        result["tf32"] = getattr(backend, "tf32", "off")
    print(header(result), flush=True)
    rng = np.random.default_rng(0)
    for name in args.models.split(","):
        for mode, batch in cases_for(args):
            training = mode == "train"
            x = rng.random((batch, 1, 28, 28), dtype=np.float32)
            y = rng.integers(0, 10, batch)
            contenders = [DcnnContender(name, backend, x, y)]
            if use_torch:
                state = contenders[0].state()
                contenders.append(TorchContender(name, state, x, y, device))
                if device == "cpu" and not args.no_channels_last:
                    contenders.append(TorchContender(name, state, x, y, device, channels_last=True))
            per_sample = 5 if device == "cuda" else 1
            warmup = 1 if args.quick else 3
            times, enqueue = time_case(contenders, training, warmup, repeats, per_sample)
            work = flops(name, batch, training)
            case = {"model": name, "mode": mode, "batch": batch, "gflop": work / 1e9}
            for c in contenders:
                case[c.label] = summarise(times[c.label], batch, work, gemm)
                if device == "cuda":
                    # Fraction of a sample's time spent before the host got control back:
                    # near 1 means the host waited for the device inside the steps.
                    case[c.label]["host_wait_fraction"] = float(np.median(enqueue[c.label]))
            for other in ("torch", "torch-cl"):
                if other in case:
                    case[f"ratio_{other}"] = case["dcnn"]["median_ms"] / case[other]["median_ms"]
                    # Ratio of the fastest steps: the least disturbed by other processes.
                    case[f"ratio_{other}_min"] = case["dcnn"]["min_ms"] / case[other]["min_ms"]
            result["cases"].append(case)
            print(format_case(case), flush=True)
    result["load_average_end"] = load_average()
    if device == "cuda":
        x = rng.random((512, 1, 28, 28), dtype=np.float32)
        result["sync_check"] = sync_check(backend, DcnnContender("ref", backend, x, rng.integers(0, 10, 512)))
    if device == "cpu" and not args.no_memory:
        result["memory"] = measure_memory(args)
    print(footer(result), flush=True)
    return result


def format_case(case: dict) -> str:
    def cell(c):
        return f"{c['median_ms']:8.1f} ({c['min_ms']:.1f}-{c['max_ms']:.1f})"
    d = case["dcnn"]
    parts = [f"{case['model']:7s} {case['mode']:5s} {case['batch']:5d}", cell(d), f"{d['images_per_s']:8.0f}",
             f"{d['gflops']:5.1f} ({d['gemm_fraction']:4.0%})"]
    for other in ("torch", "torch-cl"):
        if other in case:
            t = case[other]
            parts += [cell(t), f"{t['images_per_s']:8.0f}",
                      f"{case['ratio_' + other]:5.2f} ({case['ratio_' + other + '_min']:.2f})"]
    return "  ".join(parts)


def header(result: dict) -> str:
    lines = [f"dcnn {result['backend']}  vs  torch {result['torch']}  on {result['device']}"
             + (f", {result['threads']} threads" if result["threads"] else "")
             + f"  ({result['machine']}, python {result['python']})",
             f"float32 GEMM ({result['gemm_size']}^3) in this run: {result['gemm_gflops']:.1f} GFLOP/s; "
             f"load average at start: {result['load_average_start']}",
             "ms per step: median (min-max); img/s from the median; ratio = dcnn time / torch time "
             "(<1: dcnn faster), of the medians (of the minima)",
             "case                dcnn ms (min-max)        img/s  GFLOP/s (GEMM%)  torch ms (min-max)"
             "       img/s  ratio        torch-cl ms (min-max)    img/s  ratio"]
    return "\n".join(lines)


def footer(result: dict) -> str:
    lines = [f"load average at end: {result.get('load_average_end')}"]
    train = [c for c in result["cases"] if c["mode"] == "train" and c["model"] == "ref"]
    if len(train) > 1:
        per_image = [c["dcnn"]["median_ms"] / c["batch"] for c in train]
        lines.append("dcnn ref ms per image by batch: " + ", ".join(
            f"{c['batch']}: {p:.3f}" for c, p in zip(train, per_image))
            + f"  (spread {max(per_image) / min(per_image) - 1:.0%})")
    check = result.get("sync_check")
    if check:
        lines.append(f"dcnn training step queued behind {check['device_done_ms']:.0f} ms of device work: the host was "
                     f"done after {check['host_done_ms']:.1f} ms (the step itself {check['step_returned_ms']:.1f} ms): "
                     + ("no host synchronisation in the step" if check["no_host_sync"] else "IT WAITED FOR THE DEVICE"))
    mem = result.get("memory")
    if mem:
        parts = [f"{k}: peak {mem[k]['peak_mib']:.0f} MiB (after import {mem[k]['import_mib']:.0f} MiB)"
                 for k in ("dcnn", "torch") if k in mem]
        lines.append(f"peak RSS, {mem['steps']} training steps of ref at batch {mem['batch']}, a fresh process each: "
                     + "; ".join(parts))
    return "\n".join(lines)


def main():
    args = ARGS
    if args.memory_probe:
        if args.memory_probe == "torch":
            load_torch().set_num_threads(args.threads)
        memory_probe(args.memory_probe, args.memory_steps, args.memory_batch)
        return
    if args.job != "steps":
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
        import bench_job
        bench_job.main(args)
        return
    if args.device == "cuda":
        os.environ.setdefault("DCNN_BACKEND", "cupy")
    import backends
    if args.device == "cuda":
        try:
            backends.resolve("cupy")
        except backends.BackendError as exc:
            sys.exit(f"--device cuda needs the CuPy backend: {exc}")
    result = run(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
