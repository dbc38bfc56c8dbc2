"""The PyTorch twin of ``dcnn train`` (the convnet preset's recipe), for the benchmarks.

    python scripts/torch_twin.py --epochs 4 --threads 2 [--channels-last] [--limit N]

Same network, initial weights (dcnn's, seeded), data and scaling (dcnn.datasets),
batch order (dcnn's shuffle stream), optimiser (Adam, lr 3e-3), one-cycle schedule
(dcnn.train.LRSchedule, set before every step), dropout, and a test pass after
every epoch.  Prints one JSON line: test accuracy and loss, and the wall time of
the job from start to end (data loading included), as ``dcnn train`` reports it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="first N training images")
    p.add_argument("--model", default="convnet")
    return p.parse_args(argv)


def convnet(nn, classes=10):
    """torch.nn.Sequential with the convnet preset's layers and state-dict keys."""
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3136, 256), nn.ReLU(), nn.Dropout(0.25), nn.Linear(256, classes))


def twin(dcnn_net, torch, channels_last: bool = False):
    """A torch model holding ``dcnn_net``'s weights (its state-dict keys are torch's)."""
    import numpy as np
    model = convnet(torch.nn, dcnn_net.num_classes)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in dcnn_net.state_dict().items()})
    return model.to(memory_format=torch.channels_last) if channels_last else model


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import numpy as np
    import torch
    from dcnn.data import datasets
    from dcnn.model import presets
    from dcnn.train.job import LRSchedule
    torch.set_num_threads(args.threads)
    preset = presets.get_preset(args.model)
    data = datasets.load("fashion-mnist", progress=False).limit(args.limit)
    net = preset.build(data.input_shape, data.num_classes, seed=0, backend="numpy")
    model = twin(net, torch, args.channels_last)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    x_train = torch.from_numpy(data.x_train)
    y_train = torch.from_numpy(data.y_train)
    x_test = torch.from_numpy(data.x_test).contiguous(memory_format=memory)
    y_test = torch.from_numpy(data.y_test)
    opt = torch.optim.Adam(model.parameters(), lr=preset.lr)
    n, batch = len(y_train), preset.batch_size
    steps = -(-n // batch)
    schedule = LRSchedule(preset.lr, preset.schedule, args.epochs)
    schedule.total = steps * args.epochs
    torch.manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        order = torch.from_numpy(net.shuffle_rng.permutation(n))     # dcnn's batch order
        for step, start in enumerate(range(0, n, batch)):
            for group in opt.param_groups:
                group["lr"] = schedule.lr_at(epoch * steps + step)
            idx = order[start:start + batch]
            xb = x_train[idx].contiguous(memory_format=memory)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), y_train[idx]).backward()
            opt.step()
        model.eval()
        correct, loss_sum = 0, 0.0
        with torch.inference_mode():
            for start in range(0, len(y_test), 256):
                logits = model(x_test[start:start + 256])
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y_test[start:start + 256],
                                                                    reduction="sum"))
                correct += int((logits.argmax(1) == y_test[start:start + 256]).sum())
    print(json.dumps({"framework": "torch-cl" if args.channels_last else "torch", "epochs": args.epochs,
                      "test_accuracy": correct / len(y_test), "test_loss": loss_sum / len(y_test),
                      "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
