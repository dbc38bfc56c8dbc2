"""Nested containers and residual blocks: one walk over the layer tree, and a small
ResNet checked against the equivalent torch.nn module both ways (forward, gradients,
three optimiser steps, weights in both directions)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the oracle; install it with pip install -e '.[test]'")

import backends  # noqa: E402
from dcnn import (AvgPool2D, BatchNorm2D, Conv2D, DCNNetwork, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D,
                  ReLU, Residual, Sequential)
from dcnn.layers import basic_block, projection  # noqa: E402
from dcnn.io.torch_model import load_into_torch, to_torch  # noqa: E402

torch.set_num_threads(2)
RTOL, ATOL = 1e-4, 1e-5


def close(ours, theirs, what, rtol=RTOL, atol=ATOL):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=rtol, atol=atol, err_msg=what)


def small_resnet(classes=5, first_residual=False):
    stem = ([Residual([Conv2D(3, 3, padding=1), BatchNorm2D(), ReLU(), Conv2D(3, 3, padding=1)])]
            if first_residual else [])
    return stem + [Conv2D(8, 3, padding=1, use_bias=False), BatchNorm2D(), ReLU(),
                   *basic_block(8, 1, in_filters=8),
                   *basic_block(16, 2, in_filters=8),
                   Dropout(0.0), GlobalAvgPool2D(), Dense(classes)]


def grads_by_key(net):
    return {f"{key}.{name}": g for key, layer in net.model.named_modules() for name, g in layer.grads.items()}


# --- the layer tree ---------------------------------------------------------------------

def test_nested_parameters_are_seen_everywhere():
    net = DCNNetwork(small_resnet(), input_shape=(3, 9, 9)).build()
    state = net.state_dict()
    assert "3.body.0.weight" in state and "5.body.0.weight" in state
    assert "5.shortcut.0.weight" in state and "5.shortcut.1.running_var" in state
    assert "3.shortcut.0.weight" not in state          # identity shortcut: no state
    expected = sum(v.size for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                                            "num_batches_tracked")))
    assert net.model.param_count() == expected
    refs, _ = net._trainable_refs()
    assert sorted(key for key, _, _ in refs) == sorted(
        k for k in state if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    text = net.summary(print_fn=None)
    assert "\n3.body.0 " in text and "\n5.shortcut.0 " in text
    assert f"(trainable: {expected:,}," in text          # buffers count as non-trainable, as in Keras
    net.model.train(False)
    assert all(not layer.training for _, layer in net.model.named_modules())


def test_frozen_container_freezes_what_it_holds():
    body = Sequential([Conv2D(2, 3, padding=1), ReLU()])
    body.trainable = False
    net = DCNNetwork([Residual(body), Flatten(), Dense(2)], input_shape=(2, 4, 4)).build()
    keys = [key for key, _, _ in net._trainable_refs()[0]]
    assert keys == ["2.weight", "2.bias"]


def test_named_modules_keys_match_torch():
    net = DCNNetwork(small_resnet(), input_shape=(3, 9, 9)).build()
    ours = [key for key, _ in net.model.named_modules()]
    theirs = [key for key, _ in to_torch(net.model).named_modules()]
    assert ours == theirs


def test_residual_shape_mismatch_is_a_clear_error():
    net = DCNNetwork([Residual([Conv2D(4, 3, padding=1)]), Flatten(), Dense(2)], input_shape=(2, 5, 5))
    with pytest.raises(ValueError, match="projection"):
        net.build()
    with pytest.raises(TypeError, match="Residual body"):
        Residual("conv")


def test_save_load_and_move_keep_nested_weights(tmp_path):
    x = np.random.default_rng(0).random((6, 3, 9, 9)).astype(np.float32)
    net = DCNNetwork(small_resnet(), input_shape=(3, 9, 9), seed=1).compile("adamw", lr=1e-2)
    net.fit(x, np.arange(6) % 5, epochs=2, batch_size=3, verbose=0)
    net.save_weights(tmp_path / "w.safetensors")
    other = DCNNetwork(small_resnet(), input_shape=(3, 9, 9), seed=2).build()
    other.load_weights(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(net.predict(x), other.predict(x))
    moved = other.to(backends.resolve("array_api_strict"))
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(moved.state_dict()[key], value, err_msg=key)


def test_no_layer_keeps_a_cache():
    """What forward keeps belongs to the step: after a training step or inference no layer holds any."""
    x = np.random.default_rng(0).random((8, 3, 9, 9)).astype(np.float32)
    net = DCNNetwork(small_resnet(), input_shape=(3, 9, 9)).compile("sgd", lr=0.01)
    net.fit(x, np.arange(8) % 5, epochs=1, batch_size=4, verbose=0)
    assert all(layer._saved is None for _, layer in net.model.named_modules())
    net.model.forward(net.backend.from_numpy(x))      # the one-call API does keep it, on the layers
    assert any(layer._saved is not None for _, layer in net.model.named_modules())
    net.model.release()
    net.predict(x)
    assert all(layer._saved is None for _, layer in net.model.named_modules())
    net.fit(x, np.arange(8) % 5, epochs=1, batch_size=4, verbose=0)
    net.evaluate(x, np.arange(8) % 5)
    assert all(layer._saved is None for _, layer in net.model.named_modules())


# --- against PyTorch ----------------------------------------------------------------------

@pytest.mark.parametrize("optimizer,options,first_residual", [
    ("sgd", {"momentum": 0.9, "weight_decay": 1e-3}, False),
    ("adamw", {"weight_decay": 0.05}, False),
    ("sgd", {"momentum": 0.9}, True),
])
def test_resnet_matches_torch_over_three_steps(optimizer, options, first_residual):
    rng = np.random.default_rng(3)
    net = DCNNetwork(small_resnet(first_residual=first_residual), input_shape=(3, 9, 9), seed=4)
    net.compile(optimizer, lr=0.05 if optimizer == "sgd" else 3e-3, label_smoothing=0.1, **options)
    net.build()
    module = to_torch(net.model)
    load_into_torch(module, net.state_dict())
    module.train()
    if optimizer == "sgd":
        topt = torch.optim.SGD(module.parameters(), lr=0.05, **options)
    else:
        topt = torch.optim.AdamW(module.parameters(), lr=3e-3, **options)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for step in range(3):
        x = rng.standard_normal((6, 3, 9, 9)).astype(np.float32)
        y = rng.integers(0, 5, 6)
        loss, _ = net.train_on_batch(net.backend.from_numpy(x), net.backend.from_numpy(y))
        topt.zero_grad()
        tloss = loss_fn(module(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        close(loss, tloss, f"loss at step {step}")
        ours = grads_by_key(net)
        for key, param in module.named_parameters():
            close(ours[key], param.grad, f"gradient of {key} at step {step}", atol=2e-5)
        topt.step()
        theirs = module.state_dict()
        for key, value in net.state_dict().items():
            close(value, theirs[key], f"{key} after step {step}", atol=2e-5)


def test_torch_weights_load_into_dcnn():
    net = DCNNetwork(small_resnet(), input_shape=(3, 9, 9)).build()
    torch.manual_seed(0)
    module = to_torch(net.model)
    module.train()
    module(torch.randn(8, 3, 9, 9))        # moves the running statistics off their defaults
    module.eval()
    net.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    x = np.random.default_rng(5).standard_normal((4, 3, 9, 9)).astype(np.float32)
    close(net.logits(net.backend.from_numpy(x)), module(torch.from_numpy(x)), "eval logits")


def test_residual_first_layer_input_gradient():
    """As a model's first layer the Residual skips dx; called alone it must give torch's."""
    be = backends.resolve("numpy")
    block = Residual([Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU(), Conv2D(4, 3, 2, 1)], projection(4, 2))
    block.build((2, 7, 7), np.random.default_rng(0), be)
    module = to_torch(block)
    load_into_torch(module, {k: be.to_numpy(v) for k, v in block.state().items()})
    x = np.random.default_rng(1).standard_normal((3, 2, 7, 7)).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    close(block.forward(be.from_numpy(x)), yt, "forward")
    dy = np.random.default_rng(2).standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    close(block.backward(be.from_numpy(dy)), xt.grad, "input gradient")
    block.forward(be.from_numpy(x))
    block.set_needs_input_grad(False)
    assert block.backward(be.from_numpy(dy)) is None
    for key, param in module.named_parameters():
        prefix, name = key.rsplit(".", 1)
        close(dict(block.named_modules())[prefix].grads[name], param.grad, key)


@pytest.mark.parametrize("k,stride,hw", [(2, 2, (8, 8)), (3, 2, (9, 8)), (3, 1, (5, 6)), (2, 1, (4, 7))])
def test_avg_pool_matches_torch(k, stride, hw):
    be = backends.resolve("numpy")
    layer, module = AvgPool2D(k, stride), torch.nn.AvgPool2d(k, stride)
    x = np.random.default_rng(0).standard_normal((2, 3) + hw).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    close(layer(be.from_numpy(x)), yt, "forward")
    dy = np.random.default_rng(1).standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    close(layer.backward(be.from_numpy(dy)), xt.grad, "input gradient")


def test_global_avg_pool_matches_torch():
    be = backends.resolve("numpy")
    layer = GlobalAvgPool2D()
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = xt.mean(dim=(2, 3))
    close(layer(be.from_numpy(x)), yt, "forward")
    dy = np.random.default_rng(1).standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    close(layer.backward(be.from_numpy(dy)), xt.grad, "input gradient")


def test_pooling_layers_run_on_every_backend(backend):
    x = backend.from_numpy(np.random.default_rng(0).random((2, 3, 6, 6)).astype(np.float32))
    for layer in (AvgPool2D(2), AvgPool2D(3, 2), GlobalAvgPool2D()):
        y = layer(x)
        assert tuple(layer.backward(y).shape) == (2, 3, 6, 6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("one_hot", [False, True])
def test_label_smoothing_matches_torch(smoothing, one_hot):
    from dcnn import SoftmaxCrossEntropy
    be = backends.resolve("numpy")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, 5)
    targets = np.eye(4, dtype=np.float32)[labels] if one_hot else labels
    loss_fn = SoftmaxCrossEntropy(label_smoothing=smoothing)
    loss = loss_fn.forward(be.from_numpy(logits), be.from_numpy(targets))
    lt = torch.from_numpy(logits.copy()).requires_grad_(True)
    tloss = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)(lt, torch.from_numpy(targets))
    tloss.backward()
    close(loss, tloss, "loss")
    close(loss_fn.backward(), lt.grad, "gradient")
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftmaxCrossEntropy(label_smoothing=1.5)


def test_huge_logit_gap_gives_torchs_loss_not_nan():
    from dcnn import SoftmaxCrossEntropy
    be = backends.resolve("numpy")
    logits = np.array([[3e38, -3e38], [-3e38, 3e38]], np.float32)
    loss_fn = SoftmaxCrossEntropy()
    with np.errstate(over="ignore", invalid="ignore"):   # -inf shifts and 0 * -inf, masked out: expected
        loss = loss_fn.forward(be.from_numpy(logits), be.from_numpy(np.array([0, 1])))
    tloss = torch.nn.CrossEntropyLoss()(torch.from_numpy(logits), torch.tensor([0, 1]))
    assert float(tloss) == 0.0 and float(loss) == 0.0
    assert np.isfinite(be.to_numpy(loss_fn.backward())).all()


def test_conv_output_larger_than_input_trains():
    """The issue's crash: stride 1 with p < k < 2p + 1 makes the output larger than the input."""
    net = DCNNetwork([Conv2D(4, 3), Conv2D(4, 2, padding=1), Flatten(), Dense(2)], input_shape=(1, 6, 6))
    net.compile("sgd", lr=0.1)
    history = net.fit(np.random.default_rng(0).random((8, 1, 6, 6)).astype("float32"), np.arange(8) % 2,
                      epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_stage_pictures_show_the_body_and_the_sum():
    pytest.importorskip("matplotlib")
    from dcnn.viz.stages import feature_maps
    net = DCNNetwork(small_resnet(), input_shape=(3, 9, 9)).build()
    _, stages = feature_maps(net, np.random.default_rng(0).random((3, 9, 9)).astype(np.float32))
    keys = [s.key for s in stages]
    assert keys[:3] == ["0.", "1.", "2."]
    assert keys[3:9] == ["3.body.0.", "3.body.1.", "3.body.2.", "3.body.3.", "3.body.4.", "3."]
    assert stages[8].slug.endswith("residual") and keys[9] == "4."
    module = to_torch(net.model).eval()
    load_into_torch(module, net.state_dict())
    # The sum stage equals the torch block's output for the same input.
    image = torch.from_numpy(np.random.default_rng(0).random((1, 3, 9, 9)).astype(np.float32))
    with torch.no_grad():
        h = module[2](module[1](module[0](image)))
        close(stages[8].maps, module[3](h)[0], "residual sum stage")
