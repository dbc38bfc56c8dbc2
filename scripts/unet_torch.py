"""A small U-Net in PyTorch on fashion-mosaic: the peer that dcnn's ``unet`` preset is measured against.

    python scripts/unet_torch.py                      # the recipe below; prints per-epoch test metrics
    python scripts/unet_torch.py --epochs 1 --limit 2000 --json out.json

The data are the files ``dcnn.data.mosaic`` writes (made on first use from Fashion-MNIST): 12,000
training and 2,000 test mosaics of 56x56, 11 classes (background and the 10 garments).

The network uses only what dcnn has or is getting (issues 19 and 20): 3x3 convolutions (padding 1,
no bias) each followed by BatchNorm and ReLU, 2x2 max-pooling, 2x2 stride-2 transposed convolutions
(or nearest 2x upsampling and a 3x3 convolution: ``--up upsample``), concatenated skips and a 1x1
convolution to the classes:

    56x56: block(1 -> c) ----------------------------------------- concat -> block(2c -> c) -> 1x1 -> 11
    28x28:    pool, block(c -> 2c) --------------------- concat -> block(4c -> 2c) -> up
    14x14:       pool, block(2c -> 4c) ------- concat -> block(8c -> 4c) -> up
     7x7:           pool, block(4c -> 8c) -> up

where block(a -> b) is two conv-BN-ReLU layers (a -> b, b -> b).  The recipe: Adam, batch 32,
dcnn's one-cycle schedule per step (``dcnn.train.callbacks.one_cycle``: warm-up over 15% of the
steps from lr/10, cosine decay to lr/100), cross-entropy, no augmentation, 2 threads.

Measured (torch 2.13 CPU, 2 threads, a shared 2-core Xeon VM at load 4-7, seed 0), after 4 epochs:
base 16 (482,619 parameters): test pixel accuracy 0.9525, mIoU 0.8091 (0.591, 0.746, 0.791, 0.809
by epoch); base 8 (121,123): 0.9330 and 0.7490.  Base 16's median step was 110 ms in its quietest
epoch, so its 1,500 steps take about 3 minutes on idle cores (33 minutes of wall time under that load).

Metrics are computed on the test mosaics after each epoch: pixel accuracy and mean IoU as
``dcnn.model.metrics`` defines them (torchmetrics' MulticlassAccuracy(micro) and
MulticlassJaccardIndex(macro), from a confusion matrix), and per-class IoU at the end.
Times: ``train_s`` is the wall time of the training steps alone.  On a shared machine other
processes stretch some steps many times over, so ``median_train_s`` (steps x the median step)
and ``quietest_train_s`` (steps x the lowest of the epochs' median steps) estimate the same run
on idle cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from dcnn.data import mosaic  # noqa: E402
from dcnn.train.callbacks import one_cycle  # noqa: E402
from dcnn.utils.files import load_arrays  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=int, default=16, help="channels at full resolution (c)")
    p.add_argument("--up", choices=("transpose", "upsample"), default="transpose")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's when > 0, else plain Adam")
    p.add_argument("--schedule", choices=("onecycle", "constant"), default="onecycle")
    p.add_argument("--limit", type=int, default=None, help="train on the first N mosaics only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write the summary here too")
    return p.parse_args(argv)


def block(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                         nn.Conv2d(b, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True))


def up(a: int, b: int, kind: str) -> nn.Module:
    if kind == "transpose":
        return nn.ConvTranspose2d(a, b, 2, stride=2)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1))


class UNet(nn.Module):
    def __init__(self, base: int = 16, classes: int = 11, depth: int = 3, kind: str = "transpose"):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([block(1, widths[0])] + [block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([up(widths[i + 1], widths[i], kind) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([block(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, layer in enumerate(self.down):
            x = layer(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for upsample, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)


def load(data_dir=None):
    arrays, _ = load_arrays(mosaic.ensure(data_dir))
    x = {s: torch.from_numpy(arrays[f"x_{s}"][:, None].astype(np.float32) / np.float32(255)) for s in ("train", "test")}
    y = {s: torch.from_numpy(arrays[f"y_{s}"]) for s in ("train", "test")}      # uint8; long per batch
    return x, y


def confusion(model, x, y, classes: int, batch: int = 250) -> np.ndarray:
    model.eval()
    counts = torch.zeros(classes * classes, dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, len(x), batch):
            pred = model(x[start:start + batch]).argmax(1).flatten()
            true = y[start:start + batch].long().flatten()
            counts += torch.bincount(true * classes + pred, minlength=classes * classes)
    model.train()
    return counts.reshape(classes, classes).numpy()


def scores(counts: np.ndarray) -> dict:
    counts = counts.astype(np.float64)
    tp = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - tp
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    present = counts.sum(0) + counts.sum(1) > 0
    return {"pixel_accuracy": float(tp.sum() / counts.sum()), "miou": float(iou[present].mean()),
            "iou": [round(float(v), 4) for v in iou]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = load(args.data_dir)
    xtr, ytr = x["train"][:args.limit], y["train"][:args.limit]
    model = UNet(args.base, len(mosaic.CLASSES), kind=args.up)
    params = sum(p.numel() for p in model.parameters())
    opt = (torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay) if args.weight_decay
           else torch.optim.Adam(model.parameters(), lr=args.lr))
    loss_fn = nn.CrossEntropyLoss()
    n = len(xtr)
    steps = -(-n // args.batch_size)
    total = steps * args.epochs
    order_rng = np.random.default_rng(args.seed)
    step_times, history, epoch_medians = [], [], []
    print(f"U-Net base {args.base} ({params:,} parameters, {args.up}), {n} training mosaics, batch {args.batch_size}, "
          f"lr {args.lr} {args.schedule}, {args.epochs} epochs, {args.threads} threads", flush=True)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.from_numpy(order_rng.permutation(n))
        loss_sum = 0.0
        for step in range(steps):
            t0 = time.perf_counter()
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            lr = one_cycle(args.lr, (epoch * steps + step) / total) if args.schedule == "onecycle" else args.lr
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx].long())
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            step_times.append(time.perf_counter() - t0)
        train_s = sum(step_times)
        epoch_medians.append(float(np.median(step_times[-steps:])))
        result = scores(confusion(model, x["test"], y["test"], len(mosaic.CLASSES)))
        history.append({"epoch": epoch + 1, "loss": loss_sum / n, "test_pixel_accuracy": result["pixel_accuracy"],
                        "test_miou": result["miou"], "train_s": train_s})
        print(f"epoch {epoch + 1}: loss {loss_sum / n:.4f}  test pixel accuracy {result['pixel_accuracy']:.4f}  "
              f"mIoU {result['miou']:.4f}  ({train_s:.0f} s training, median step "
              f"{epoch_medians[-1] * 1000:.0f} ms)", flush=True)
    summary = {"model": f"unet-{args.base}-{args.up}", "parameters": params, "args": vars(args),
               "train_mosaics": n, "steps": len(step_times), "train_s": sum(step_times),
               "median_train_s": float(np.median(step_times)) * len(step_times),
               "quietest_train_s": min(epoch_medians) * len(step_times),
               "epoch_median_step_ms": [round(m * 1000, 1) for m in epoch_medians],
               "total_s": time.perf_counter() - start, "test_pixel_accuracy": result["pixel_accuracy"],
               "test_miou": result["miou"], "test_iou": dict(zip(mosaic.CLASSES, result["iou"])), "history": history,
               "torch": torch.__version__}
    print(f"done: test pixel accuracy {summary['test_pixel_accuracy']:.4f}, mIoU {summary['test_miou']:.4f}; "
          f"training {summary['train_s']:.0f} s wall ({summary['median_train_s']:.0f} s at the median step, "
          f"{summary['quietest_train_s']:.0f} s at the quietest epoch's), "
          f"{summary['total_s']:.0f} s in all")
    print("per-class IoU: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["test_iou"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
