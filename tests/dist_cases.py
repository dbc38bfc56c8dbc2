"""Models and data shared by tests/test_distributed.py and the ranks it starts (tests/dist_worker.py)."""
import numpy as np

from dcnn import BatchNorm2D, Concatenate, Conv2D, DCNNetwork, Dense, Flatten, Input, MaxPool2D, ReLU

# 65 images at batch 16: shards of 8 and 8, and a last global batch of one image, which leaves
# rank 0 of 2 with nothing (its weight is 0).  BatchNorm needs two values per channel, so its
# case uses batch 12 (last batch 5: shards of 2 and 3).
CASES = {
    "sgd": {"optimizer": "sgd", "options": {"lr": 0.05, "momentum": 0.9}, "n": 65, "batch": 16, "epochs": 2,
            "bn": False},
    "adam": {"optimizer": "adam", "options": {"lr": 0.003}, "n": 65, "batch": 16, "epochs": 2, "bn": False},
    "bn": {"optimizer": "sgd", "options": {"lr": 0.05, "momentum": 0.9}, "n": 29, "batch": 12, "epochs": 2,
           "bn": True},
    # A graph model: a fan-out, a shared layer called twice and a concatenation.
    "graph": {"optimizer": "adam", "options": {"lr": 0.003}, "n": 65, "batch": 16, "epochs": 2, "bn": False,
              "graph": True},
}


def make_data(case, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((case["n"], 1, 10, 10), dtype=np.float32)
    y = rng.integers(0, 5, case["n"])
    xv = rng.random((23, 1, 10, 10), dtype=np.float32)
    yv = rng.integers(0, 5, 23)
    return x, y, xv, yv


def make_net(case, seed=3):
    if case.get("graph"):
        x = Input((1, 10, 10))
        a = ReLU()(Conv2D(4, 3, padding=1)(x))
        shared = Conv2D(4, 3, padding=1)
        b = shared(ReLU()(shared(a)))
        y = Dense(5)(Flatten()(MaxPool2D(2)(Concatenate()([a, b]))))
        net = DCNNetwork(inputs=x, outputs=y, seed=seed, backend="numpy").build()
        return net.compile(case["optimizer"], **case["options"])
    layers = [Conv2D(4, 3, padding=1)] + ([BatchNorm2D()] if case["bn"] else []) + [
        ReLU(), MaxPool2D(2), Flatten(), Dense(5)]
    net = DCNNetwork(layers, input_shape=(1, 10, 10), seed=seed, backend="numpy").build()
    net.compile(case["optimizer"], **case["options"])
    return net
