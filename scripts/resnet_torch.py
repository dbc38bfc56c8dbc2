"""The resnet preset in dcnn and in PyTorch, side by side: same network, same recipe.

    python scripts/resnet_torch.py --steps 40      # per-step time of both, interleaved (a ratio)
    python scripts/resnet_torch.py --train         # PyTorch trains the full recipe on Fashion-MNIST

The PyTorch network is ``dcnn.io.torch_model.to_torch`` of the preset's model, starting from
dcnn's initial weights; the recipe is the preset's: AdamW (lr, weight decay), the same
one-cycle schedule per step, label smoothing, batch size and epochs, 2 threads, and where the
preset augments, dcnn's own RandomShiftFlip on each batch (the same transform, on the CPU).
``--steps`` alternates steps between the two (dcnn, torch, torch, dcnn, ...) so load from
other processes falls on both alike; ``--train`` times PyTorch's whole run (data already
in memory, test accuracy after each epoch) to put beside ``dcnn train --model resnet``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from dcnn.data import datasets
from dcnn.model import presets  # noqa: E402
from dcnn.io.torch_model import load_into_torch, to_torch  # noqa: E402
from dcnn.train.job import LRSchedule, RandomShiftFlip  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=0, help="timed steps per framework, interleaved")
    p.add_argument("--train", action="store_true", help="train the full recipe in PyTorch")
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def torch_setup(net, preset):
    module = to_torch(net.model)
    load_into_torch(module, net.state_dict())
    opt = torch.optim.AdamW(module.parameters(), lr=preset.lr, **preset.optimizer_options)
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


def compare_steps(args, preset, data):
    net = preset.build(data.input_shape, data.num_classes, seed=args.seed)
    net.compile(preset.optimizer, lr=preset.lr, label_smoothing=preset.label_smoothing, **preset.optimizer_options)
    module, opt, loss_fn = torch_setup(net, preset)
    module.train()
    b = preset.batch_size
    rng = np.random.default_rng(args.seed)
    times = {"dcnn": [], "torch": []}
    for i in range(args.steps + 2):                 # the first two are warm-up
        idx = rng.choice(len(data.y_train), b, replace=False)
        x, y = data.x_train[idx], data.y_train[idx]
        order = ("dcnn", "torch") if i % 2 == 0 else ("torch", "dcnn")
        for who in order:
            t = time.perf_counter()
            if who == "dcnn":
                loss, _ = net.train_on_batch(net.backend.from_numpy(x), net.backend.from_numpy(y))
                float(loss)
            else:
                float(torch_step(module, opt, loss_fn, torch.from_numpy(x), torch.from_numpy(y), preset.lr).detach())
            if i >= 2:
                times[who].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{args.model}: batch {b}, {args.steps} steps each, median seconds per training step")
    print(f"  dcnn   {med['dcnn'] * 1000:8.1f} ms")
    print(f"  torch  {med['torch'] * 1000:8.1f} ms")
    print(f"  dcnn / torch = {med['dcnn'] / med['torch']:.2f}")
    steps_per_epoch = -(-len(data.y_train) // b)
    print(f"  one epoch ({steps_per_epoch} steps) at these speeds: dcnn {med['dcnn'] * steps_per_epoch:.0f} s, "
          f"torch {med['torch'] * steps_per_epoch:.0f} s")


def train_torch(args, preset, data):
    epochs = args.epochs or preset.epochs
    net = preset.build(data.input_shape, data.num_classes, seed=args.seed)
    module, opt, loss_fn = torch_setup(net, preset)
    n, b = len(data.y_train), preset.batch_size
    steps = -(-n // b)
    schedule = LRSchedule(preset.lr, preset.schedule, epochs)
    schedule.total = steps * epochs
    augment = RandomShiftFlip(net.backend, args.seed, pad=preset.augment_shift) if preset.augment else None
    y_train = torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    for epoch in range(epochs):
        module.train()
        order = torch.from_numpy(rng.permutation(n))
        for step in range(steps):
            idx = order[step * b:(step + 1) * b]
            xb = data.x_train[idx.numpy()]
            xb = torch.from_numpy(np.ascontiguousarray(augment(xb) if augment is not None else xb))
            torch_step(module, opt, loss_fn, xb, y_train[idx], schedule.lr_at(epoch * steps + step))
        module.eval()
        with torch.no_grad():
            correct = sum(int((module(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum())
                          for i in range(0, len(y_test), 1000))
        print(f"epoch {epoch + 1}/{epochs}: test accuracy {correct / len(y_test):.4f}, "
              f"{time.perf_counter() - started:.0f} s so far", flush=True)
    print(f"PyTorch {args.model}: {epochs} epochs in {time.perf_counter() - started:.0f} s")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    preset = presets.get_preset(args.model)
    if preset.optimizer != "adamw":
        raise SystemExit(f"this script mirrors AdamW recipes; {args.model} is not one")
    data = datasets.load("fashion-mnist")
    if args.steps:
        compare_steps(args, preset, data)
    if args.train:
        train_torch(args, preset, data)
    if not (args.steps or args.train):
        raise SystemExit("nothing to do: pass --steps N and/or --train")


if __name__ == "__main__":
    main()
