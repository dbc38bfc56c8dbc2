"""PyTorch as the oracle: forward values, input and parameter gradients, optimiser
steps and weight files must match torch to float32 tolerance."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the oracle; install it with pip install -e '.[test]'")
import torch.nn as nn  # noqa: E402

import backends  # noqa: E402
from dcnn import (BatchNorm2D, Conv2D, DCNNetwork, Dense, FeatureMapNorm, Flatten, MaxPool2D, ReLU, SGD, Adam,
                  SoftmaxCrossEntropy)

torch.set_num_threads(2)
RTOL, ATOL = 1e-4, 1e-5   # float32, accumulated over up to a few hundred terms


@pytest.fixture
def numpy_be():
    return backends.resolve("numpy")


def close(ours, theirs, what):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def compare_layer(be, layer, module, x, params=("weight", "bias"), training=True):
    x32 = x.astype(np.float32)
    if not layer.built:
        layer.build(x32.shape[1:], np.random.default_rng(0), be)
    for name in params:
        getattr(module, name).data = torch.from_numpy(be.to_numpy(layer.params[name]).copy())
    module.train(training)
    layer.train(training)
    y = layer.forward(be.from_numpy(x32))
    xt = torch.from_numpy(x32.copy()).requires_grad_(True)
    yt = module(xt)
    close(y, yt, "forward")
    dy = np.random.default_rng(7).standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    close(layer.backward(be.from_numpy(dy)), xt.grad, "input gradient")
    for name in params:
        close(layer.grads[name], getattr(module, name).grad, f"{name} gradient")


@pytest.mark.parametrize("cin,cout,k,stride,pad,hw", [
    (1, 4, 3, 1, 0, (8, 8)), (3, 5, 3, 1, 1, (9, 7)), (2, 3, 3, 2, 1, (10, 9)),
    (3, 2, 5, 2, 2, (11, 11)), (4, 6, 2, 2, 0, (8, 8)), (2, 2, 3, 3, 0, (10, 10)), (3, 8, 1, 1, 0, (5, 5))])
def test_conv2d(numpy_be, rng, cin, cout, k, stride, pad, hw):
    compare_layer(numpy_be, Conv2D(cout, k, stride, pad), nn.Conv2d(cin, cout, k, stride, pad),
                  rng.standard_normal((3, cin) + hw))


@pytest.mark.parametrize("k,stride,hw", [(2, 2, (8, 8)), (3, 2, (9, 8)), (3, 3, (10, 11)), (2, 1, (5, 6))])
def test_maxpool(numpy_be, rng, k, stride, hw):
    x = rng.permutation(2 * 3 * hw[0] * hw[1]).reshape((2, 3) + hw) / 10.0  # no ties
    compare_layer(numpy_be, MaxPool2D(k, stride), nn.MaxPool2d(k, stride), x, params=())


def test_maxpool_ties_go_to_first_maximum(numpy_be):
    x = np.zeros((1, 1, 4, 4), np.float32)   # every window is a tie, as after a ReLU
    compare_layer(numpy_be, MaxPool2D(2), nn.MaxPool2d(2), x, params=())


def test_dense(numpy_be, rng):
    compare_layer(numpy_be, Dense(7), nn.Linear(5, 7), rng.standard_normal((4, 5)))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(numpy_be, rng, training):
    layer, module = BatchNorm2D(), nn.BatchNorm2d(3)
    x = rng.standard_normal((6, 3, 4, 5)) * 2 + 1
    layer.build(x.shape[1:], np.random.default_rng(0), numpy_be)
    for _ in range(3):  # a few training batches move the running statistics
        xb = (rng.standard_normal((6, 3, 4, 5)) * 3 - 1).astype(np.float32)
        layer.train(True), module.train(True)
        layer.forward(numpy_be.from_numpy(xb)), module(torch.from_numpy(xb))
    layer.params["weight"][...] = rng.uniform(0.5, 1.5, 3).astype(np.float32)
    layer.params["bias"][...] = rng.standard_normal(3).astype(np.float32)
    compare_layer(numpy_be, layer, module, x, training=training)
    for name in ("running_mean", "running_var"):
        close(layer.buffers[name], getattr(module, name), name)
    assert int(layer.buffers["num_batches_tracked"]) == int(module.num_batches_tracked)


def test_feature_map_norm_is_instance_norm(numpy_be, rng):
    compare_layer(numpy_be, FeatureMapNorm(), nn.InstanceNorm2d(3), rng.standard_normal((2, 3, 5, 4)) * 4, params=())


def test_capped_relu_is_hardtanh(numpy_be, rng):
    x = rng.standard_normal((2, 3, 4, 4)) * 3
    compare_layer(numpy_be, ReLU(max_activation=2.0), nn.Hardtanh(0.0, 2.0), x, params=())


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_cross_entropy(numpy_be, rng, one_hot):
    logits = (rng.standard_normal((8, 5)) * 4).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    target = np.eye(5, dtype=np.float32)[labels] if one_hot else labels
    loss = SoftmaxCrossEntropy()
    value = loss.forward(numpy_be.from_numpy(logits), numpy_be.from_numpy(target))
    lt = torch.from_numpy(logits.copy()).requires_grad_(True)
    ref = nn.functional.cross_entropy(lt, torch.from_numpy(target))
    ref.backward()
    close(value, ref, "loss")
    close(loss.backward(), lt.grad, "logit gradient")


def test_cross_entropy_is_stable_for_huge_logits(numpy_be):
    logits = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(numpy_be.from_numpy(logits), numpy_be.from_numpy(np.array([2]))))
    assert value == pytest.approx(2000.0)
    assert np.isfinite(loss.backward()).all()


def seed_layers():
    """The notebook's network: two conv layers, flatten, dense 128, dense 10."""
    return [Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(8, 3), ReLU(), MaxPool2D(2),
            Flatten(), Dense(128, init="he"), ReLU(), Dense(10)]


def seed_torch():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, 10))


def load_into_torch(net, module):
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in net.state_dict().items()})


@pytest.mark.parametrize("optimizer,torch_opt", [
    (lambda: SGD(lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (lambda: Adam(lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
])
def test_three_optimizer_steps_match_torch(numpy_be, rng, optimizer, torch_opt):
    net = DCNNetwork(seed_layers(), input_shape=(1, 16, 16), backend=numpy_be).build()
    net.compile(optimizer())
    module = seed_torch()
    load_into_torch(net, module)
    opt = torch_opt(module.parameters())
    for _ in range(3):
        x = rng.random((16, 1, 16, 16), dtype=np.float32)
        y = rng.integers(0, 10, 16)
        loss, _ = net.train_on_batch(numpy_be.from_numpy(x), numpy_be.from_numpy(y))
        opt.zero_grad()
        ref = nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y))
        ref.backward()
        opt.step()
        close(loss, ref, "loss")
    theirs = module.state_dict()
    for key, value in net.state_dict().items():
        close(value, theirs[key], key)


def bn_net(backend):
    return DCNNetwork([Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU(), MaxPool2D(2), Flatten(), Dense(10)],
                      input_shape=(1, 8, 8), backend=backend)


def bn_torch():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))


def test_weights_move_from_dcnn_to_torch(numpy_be, rng, tmp_path):
    from safetensors.torch import load_file
    net = bn_net(numpy_be).compile("sgd", lr=0.1)
    x = rng.random((32, 1, 8, 8), dtype=np.float32)
    net.fit(x, rng.integers(0, 10, 32), epochs=1, batch_size=8, verbose=0)  # non-trivial running stats
    net.save_weights(tmp_path / "w.safetensors")
    module = bn_torch()
    module.load_state_dict(load_file(tmp_path / "w.safetensors"))
    module.eval()
    close(net.predict(x), torch.softmax(module(torch.from_numpy(x)), 1), "probabilities")


def test_weights_move_from_torch_to_dcnn(numpy_be, rng, tmp_path):
    from safetensors.torch import save_file
    module = bn_torch()
    module.train()
    x = rng.random((16, 1, 8, 8), dtype=np.float32)
    module(torch.from_numpy(x))           # move running statistics
    module.eval()
    save_file(module.state_dict(), tmp_path / "t.safetensors")
    net = bn_net(numpy_be)
    net.load_weights(tmp_path / "t.safetensors")
    close(net.predict(x), torch.softmax(module(torch.from_numpy(x)), 1), "probabilities")
    assert net.state_dict()["1.num_batches_tracked"].dtype == np.int64
