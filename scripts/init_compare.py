"""dcnn's default initialisation against PyTorch's, same networks and recipes, several seeds.

    python scripts/init_compare.py                   # digits (if scikit-learn is installed) and Fashion-MNIST
    python scripts/init_compare.py --train 10000 --seeds 3

"dcnn" is the library default (He-normal convolutions, Glorot-uniform dense layers, zero
biases); "torch" is PyTorch's default for Conv2d and Linear (kaiming_uniform(a=sqrt(5)):
weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))).  Each (network, dataset, seed)
trains twice from the same batch order, once per initialisation; the table gives the mean,
minimum and maximum test accuracy.  Networks: ``plain`` (conv 16, pool, conv 32, pool,
dense 128; no normalisation, where initialisation matters most) and the ``convnet`` preset
(BatchNorm), each with its recipe: Adam, one-cycle.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcnn import Conv2D, DCNNetwork, Dense, Flatten, MaxPool2D, ReLU
from dcnn.data import datasets
from dcnn.model import presets  # noqa: E402
from dcnn.train.job import LRSchedule  # noqa: E402


def plain(input_shape, classes):
    return [Conv2D(16, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(32, 3, padding=1), ReLU(), MaxPool2D(2),
            Flatten(), Dense(128), ReLU(), Dense(classes)]


NETWORKS = {"plain": (plain, 2e-3), "convnet": (presets.get_preset("convnet").layers, 3e-3)}


def digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], d.target[order].astype(np.int64)
    return x[:-360], y[:-360], x[-360:], y[-360:]


def fashion(train):
    data = datasets.load("fashion-mnist")
    return data.x_train[:train], data.y_train[:train], data.x_test, data.y_test


def run(layers_fn, lr, init, data, seed, epochs, batch):
    x, y, xt, yt = data
    layers = layers_fn(x.shape[1:], 10)
    if init == "torch":
        for layer in layers:
            if isinstance(layer, (Conv2D, Dense)):
                layer.init = "torch"
    net = DCNNetwork(layers, input_shape=x.shape[1:], seed=seed).compile("adam", lr=lr)
    net.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, callbacks=[LRSchedule(lr, "onecycle", epochs)])
    return net.evaluate(xt, yt)["accuracy"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=10000, help="Fashion-MNIST training images (default 10000)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--networks", default="plain,convnet")
    p.add_argument("--datasets", default="digits,fashion-mnist")
    p.add_argument("--epochs", type=int, default=3, help="Fashion-MNIST epochs (digits: 15)")
    args = p.parse_args(argv)
    sets = []
    if "digits" in args.datasets:
        d = digits()
        if d is None:
            print("scikit-learn is not installed: digits skipped")
        else:
            sets.append(("digits", d, 15, 32))
    if "fashion-mnist" in args.datasets:
        sets.append((f"fashion-mnist[:{args.train}]", fashion(args.train), args.epochs, 128))
    print(f"{'dataset':24s} {'network':8s} {'init':6s} {'mean':>7s} {'min':>7s} {'max':>7s}   seconds")
    for name, data, epochs, batch in sets:
        for net_name in args.networks.split(","):
            layers_fn, lr = NETWORKS[net_name]
            for init in ("dcnn", "torch"):
                t = time.perf_counter()
                acc = [run(layers_fn, lr, init, data, seed, epochs, batch) for seed in range(args.seeds)]
                print(f"{name:24s} {net_name:8s} {init:6s} {np.mean(acc):7.4f} {np.min(acc):7.4f} {np.max(acc):7.4f}"
                      f"   {time.perf_counter() - t:.0f}  {['%.4f' % a for a in acc]}", flush=True)


if __name__ == "__main__":
    main()
