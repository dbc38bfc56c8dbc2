"""dcnn on CuPy against PyTorch on CUDA: the oracle networks' values, on a GPU only.

tests/test_torch_oracle.py checks dcnn on NumPy against PyTorch on the CPU; this
file repeats its layer checks and optimiser runs with dcnn's fused CuPy kernels
against PyTorch's CUDA (cuDNN) kernels, both in full float32 (no TF32).  It skips,
with the reason, where there is no GPU, no CuPy or no CUDA build of PyTorch.
"""
import numpy as np
import pytest

import backends
from dcnn import BatchNorm2D, Conv2D, DCNNetwork, Dense, Flatten, MaxPool2D, ReLU
from dcnn.model.optimizers import SGD, Adam, AdamW

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def gpu():
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device here")
    try:
        backend = backends.resolve("cupy")
    except backends.BackendError as exc:
        pytest.skip(f"cupy backend unavailable here: {exc}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    backend.tf32 = "off"
    return backend, torch


def close(backend, ours, theirs, what):
    theirs = theirs.detach().cpu().numpy() if hasattr(theirs, "detach") else theirs
    np.testing.assert_allclose(backend.to_numpy(ours), theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def compare_layer(gpu, layer, module, x, params=("weight", "bias"), training=True):
    backend, torch = gpu
    x = x.astype(np.float32)
    layer.build(x.shape[1:], np.random.default_rng(0), backend)
    module = module.cuda()
    for name in params:
        getattr(module, name).data = torch.from_numpy(backend.to_numpy(layer.params[name]).copy()).cuda()
    module.train(training)
    layer.train(training)
    y = layer.forward(backend.from_numpy(x))
    xt = torch.from_numpy(x.copy()).cuda().requires_grad_(True)
    yt = module(xt)
    close(backend, y, yt, "forward")
    dy = np.random.default_rng(7).standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.from_numpy(dy).cuda())
    close(backend, layer.backward(backend.from_numpy(dy)), xt.grad, "input gradient")
    for name in params:
        close(backend, layer.grads[name], getattr(module, name).grad, f"{name} gradient")


@pytest.mark.parametrize("cin,cout,k,stride,pad,hw", [
    (1, 4, 3, 1, 0, (8, 8)), (3, 5, 3, 1, 1, (9, 7)), (2, 3, 3, 2, 1, (10, 9)), (3, 2, 5, 2, 2, (11, 11)),
    (4, 6, 2, 2, 0, (8, 8)), (3, 8, 1, 1, 0, (5, 5)), (32, 64, 3, 1, 1, (14, 14))])
def test_conv2d(gpu, rng, cin, cout, k, stride, pad, hw):
    nn = gpu[1].nn
    compare_layer(gpu, Conv2D(cout, k, stride, pad), nn.Conv2d(cin, cout, k, stride, pad),
                  rng.standard_normal((3, cin) + hw))


@pytest.mark.parametrize("k,stride,hw", [(2, 2, (8, 8)), (3, 2, (9, 8)), (3, 3, (10, 11)), (2, 1, (5, 6))])
def test_maxpool(gpu, rng, k, stride, hw):
    x = rng.permutation(2 * 3 * hw[0] * hw[1]).reshape((2, 3) + hw) / 10.0  # no ties
    compare_layer(gpu, MaxPool2D(k, stride), gpu[1].nn.MaxPool2d(k, stride), x, params=())


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(gpu, rng, training):
    layer, module = BatchNorm2D(), gpu[1].nn.BatchNorm2d(3)
    compare_layer(gpu, layer, module, rng.standard_normal((4, 3, 5, 5)) * 2 + 1, training=training)
    close(gpu[0], layer.buffers["running_mean"], module.running_mean, "running mean")
    close(gpu[0], layer.buffers["running_var"], module.running_var, "running variance")


def test_dense(gpu, rng):
    compare_layer(gpu, Dense(7), gpu[1].nn.Linear(12, 7), rng.standard_normal((5, 12)))


def convnet_layers():
    """The default preset's shape, small: conv, pool, BatchNorm + ReLU (fused), dense."""
    layers = []
    for width in (4, 8):
        layers += [Conv2D(width, 3, padding=1), MaxPool2D(2), BatchNorm2D(), ReLU()]
    return layers + [Flatten(), Dense(32), ReLU(), Dense(10)]


def convnet_torch(nn):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def seed_layers():
    return [Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(8, 3), ReLU(), MaxPool2D(2),
            Flatten(), Dense(128, init="he"), ReLU(), Dense(10)]


def seed_torch(nn):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, 10))


OPTIMIZERS = {
    "sgd": (lambda: SGD(lr=0.1, momentum=0.9), lambda t, p: t.optim.SGD(p, lr=0.1, momentum=0.9)),
    "nesterov": (lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                 lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    "adam": (lambda: Adam(lr=0.01), lambda t, p: t.optim.Adam(p, lr=0.01)),
    "adamw": (lambda: AdamW(lr=0.01, weight_decay=0.01), lambda t, p: t.optim.AdamW(p, lr=0.01, weight_decay=0.01)),
}


@pytest.mark.parametrize("network", ["seed", "convnet"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_three_optimizer_steps_match_torch(gpu, rng, network, optimizer):
    backend, torch = gpu
    if network == "convnet" and optimizer.startswith("adam"):
        pytest.skip("Adam turns the conv biases' rounding-level gradients (BatchNorm follows) into full steps")
    layers, module = (seed_layers(), seed_torch(torch.nn)) if network == "seed" else \
        (convnet_layers(), convnet_torch(torch.nn))
    size = 16
    net = DCNNetwork(layers, input_shape=(1, size, size), backend=backend).build()
    net.compile(OPTIMIZERS[optimizer][0]())
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in net.state_dict().items()})
    module = module.cuda().train()
    opt = OPTIMIZERS[optimizer][1](torch, module.parameters())
    for _ in range(3):
        x = rng.random((16, 1, size, size), dtype=np.float32)
        y = rng.integers(0, 10, 16)
        loss, _ = net.train_on_batch(backend.from_numpy(x), backend.from_numpy(y))
        opt.zero_grad()
        ref = torch.nn.functional.cross_entropy(module(torch.from_numpy(x).cuda()), torch.from_numpy(y).cuda())
        ref.backward()
        opt.step()
        close(backend, loss, ref, "loss")
    theirs = module.state_dict()
    for key, value in net.state_dict().items():
        close(backend, value, theirs[key], key)
