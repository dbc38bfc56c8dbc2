"""The mobilenet preset in dcnn and in PyTorch, side by side: same network, data, recipe and threads.

    python scripts/mobilenet_torch.py --steps 40            # per-step time of both, interleaved (a ratio)
    python scripts/mobilenet_torch.py --torch-job            # PyTorch trains the whole recipe (one JSON line)
    python scripts/mobilenet_torch.py --jobs 1               # dcnn train, torch, torch channels_last, ...
                                                             # alternately as child processes: time, accuracy,
                                                             # peak RSS of each

The PyTorch network is ``dcnn.io.torch_model.to_torch`` of the preset's model with dcnn's initial
weights (seed 0); the recipe is the preset's: its optimiser (AdamW, lr, weight decay), the one-cycle
schedule set before every step, label smoothing, batch size, epochs, dropout, dcnn's batch order (its
shuffle stream), Fashion-MNIST as dcnn.data.datasets loads it, a test pass after every epoch, and
2 threads (``--threads``).  ``--channels-last`` runs PyTorch with channels_last tensors.
``--steps`` alternates steps between the two (dcnn, torch, torch, dcnn, ...), so load from other
processes falls on both alike.  ``--jobs N`` runs N rounds of whole jobs, each a child process
(dcnn: ``python -m dcnn train --model mobilenet``), and reports wall time and peak RSS (wait4).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mobilenet")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=0, help="timed steps per framework, interleaved")
    p.add_argument("--torch-job", action="store_true", help="train the whole recipe in PyTorch (one JSON line)")
    p.add_argument("--jobs", type=int, default=0, help="rounds of whole jobs: dcnn, torch, torch channels_last")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    p.add_argument("--limit", type=int, default=None, help="first N training images")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def torch_setup(net, preset, torch, channels_last=False):
    from dcnn.io.torch_model import load_into_torch, to_torch
    module = to_torch(net.model)
    load_into_torch(module, net.state_dict())
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[preset.optimizer]
    opt = opt_cls(module.parameters(), lr=preset.lr, **preset.optimizer_options)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing)
    return module, opt, loss_fn


def torch_step(module, opt, loss_fn, xb, yb, lr):
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(module(xb), yb)
    loss.backward()
    opt.step()
    return loss


def compare_steps(args):
    import numpy as np
    import torch
    from dcnn.data import datasets
    from dcnn.model import presets
    torch.set_num_threads(args.threads)
    preset = presets.get_preset(args.model)
    data = datasets.load("fashion-mnist", progress=False)
    net = preset.build(data.input_shape, data.num_classes, seed=args.seed)
    net.compile(preset.optimizer, lr=preset.lr, label_smoothing=preset.label_smoothing, **preset.optimizer_options)
    net.backend.warm_up()
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    module, opt, loss_fn = torch_setup(net, preset, torch, args.channels_last)
    module.train()
    b = preset.batch_size
    rng = np.random.default_rng(args.seed)
    times = {"dcnn": [], "torch": []}
    for i in range(args.steps + 3):                 # the first three are warm-up
        idx = rng.choice(len(data.y_train), b, replace=False)
        x, y = data.x_train[idx], data.y_train[idx]
        for who in (("dcnn", "torch") if i % 2 == 0 else ("torch", "dcnn")):
            t = time.perf_counter()
            if who == "dcnn":
                loss, _ = net.train_on_batch(net.backend.from_numpy(x), net.backend.from_numpy(y))
                float(loss)
            else:
                xb = torch.from_numpy(x).contiguous(memory_format=memory)
                float(torch_step(module, opt, loss_fn, xb, torch.from_numpy(y), preset.lr).detach())
            if i >= 3:
                times[who].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    label = "torch (channels_last)" if args.channels_last else "torch"
    print(f"{args.model}: batch {b}, {args.steps} steps each, {args.threads} threads, median per training step: "
          f"dcnn {med['dcnn'] * 1000:.1f} ms, {label} {med['torch'] * 1000:.1f} ms, "
          f"dcnn / torch = {med['dcnn'] / med['torch']:.2f}")
    return med


def torch_job(args):
    """The whole recipe in PyTorch: prints one JSON line (accuracy, loss, seconds), as dcnn train --json."""
    started = time.perf_counter()
    _threads(args.threads)
    sys.path.insert(0, ROOT)
    import torch
    from dcnn.data import datasets
    from dcnn.model import presets
    from dcnn.train.callbacks import one_cycle
    torch.set_num_threads(args.threads)
    preset = presets.get_preset(args.model)
    epochs = args.epochs or preset.epochs
    data = datasets.load("fashion-mnist", progress=False).limit(args.limit)
    net = preset.build(data.input_shape, data.num_classes, seed=args.seed, backend="numpy")
    module, opt, loss_fn = torch_setup(net, preset, torch, args.channels_last)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test = torch.from_numpy(data.x_test).contiguous(memory_format=memory)
    y_test = torch.from_numpy(data.y_test)
    n, b = len(y_train), preset.batch_size
    steps = -(-n // b)
    torch.manual_seed(args.seed)
    history = []
    for epoch in range(epochs):
        module.train()
        order = torch.from_numpy(net.shuffle_rng.permutation(n))     # dcnn's batch order
        for step, start in enumerate(range(0, n, b)):
            lr = one_cycle(preset.lr, (epoch * steps + step) / (steps * epochs)) if preset.schedule == "onecycle" \
                else preset.lr
            idx = order[start:start + b]
            torch_step(module, opt, loss_fn, x_train[idx].contiguous(memory_format=memory), y_train[idx], lr)
        module.eval()
        correct, loss_sum = 0, 0.0
        with torch.inference_mode():
            for start in range(0, len(y_test), 256):
                logits = module(x_test[start:start + 256])
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y_test[start:start + 256], reduction="sum"))
                correct += int((logits.argmax(1) == y_test[start:start + 256]).sum())
        history.append(correct / len(y_test))
    print(json.dumps({"framework": "torch-cl" if args.channels_last else "torch", "model": args.model,
                      "epochs": epochs, "test_accuracy": history[-1], "test_loss": loss_sum / len(y_test),
                      "history": history, "seconds": time.perf_counter() - started}))


def _child(command) -> dict:
    """Run ``command``; its last JSON line, wall seconds and peak RSS (MiB, from wait4)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": ROOT})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{text[-3000:]}")
    result = json.loads(lines[-1])
    result.update(wall_seconds=time.perf_counter() - started, peak_rss_mib=usage.ru_maxrss / 1024)
    return result


def jobs(args):
    _threads(args.threads)
    extra = (["--epochs", str(args.epochs)] if args.epochs else []) + (["--limit", str(args.limit)] if args.limit else [])
    me = [sys.executable, os.path.abspath(__file__), "--torch-job", "--model", args.model,
          "--threads", str(args.threads)] + extra
    runs = {"dcnn": [sys.executable, "-m", "dcnn", "train", "--model", args.model, "--json", "--no-progress",
                     "--backend", "numpy", "--out", tempfile.mkdtemp(prefix="dcnn-mobilenet-")] + extra,
            "torch": me, "torch-cl": me + ["--channels-last"]}
    results = {k: [] for k in runs}
    for round_ in range(args.jobs):
        order = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
        for who in order:
            if who == "dcnn":
                runs["dcnn"][runs["dcnn"].index("--out") + 1] = tempfile.mkdtemp(prefix="dcnn-mobilenet-")
            r = _child(runs[who])
            seconds = r.get("seconds", r["wall_seconds"])
            results[who].append(r)
            print(f"round {round_ + 1} {who:8s}: test accuracy {r['test_accuracy']:.4f}, {seconds:6.1f} s "
                  f"(wall {r['wall_seconds']:.1f} s), peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    print(json.dumps({k: [{f: r.get(f) for f in ("test_accuracy", "seconds", "wall_seconds", "peak_rss_mib")}
                          for r in v] for k, v in results.items()}))


def main(argv=None):
    args = parse_args(argv)
    _threads(args.threads)
    sys.path.insert(0, ROOT)
    if args.torch_job:
        torch_job(args)
    if args.steps:
        compare_steps(args)
    if args.jobs:
        jobs(args)
    if not (args.steps or args.torch_job or args.jobs):
        raise SystemExit("nothing to do: pass --steps N, --torch-job or --jobs N")


if __name__ == "__main__":
    main()
