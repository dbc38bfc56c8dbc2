"""Dense-prediction and gated models of the functional API against their PyTorch twins (``to_torch``):
the unet preset's U-Net (tiny widths), a convolutional autoencoder and EfficientNet's MBConv block with
squeeze-and-excitation.  For each: the outputs, the input gradient and every parameter gradient at
each of three Adam steps, then every weight and buffer, in float64 (tight) and float32.  The loss and
its gradient are dcnn's (dcnn.model.losses) against torch.nn.functional's, and the steps are driven
at the layer level (Graph.apply / backprop, dcnn.model.optimizers.Adam), not through fit."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the oracle; install it with pip install -e '.[test]'")

import backends  # noqa: E402
from dcnn.io.torch_model import load_into_torch, to_torch  # noqa: E402
from dcnn.layers import (Conv2D, Conv2DTranspose, Dense, GlobalAvgPool2D, Input, ReLU, Sigmoid,  # noqa: E402
                         UpSampling2D)
from dcnn.layers.blocks import mbconv  # noqa: E402
from dcnn.layers.graph import Graph  # noqa: E402
from dcnn.layers.merge import Add, Multiply  # noqa: E402
from dcnn.model import presets  # noqa: E402
from dcnn.model.losses import CrossEntropy, MeanSquaredError  # noqa: E402
from dcnn.model.optimizers import Adam  # noqa: E402
from dcnn.model.parameters import FlatParameters  # noqa: E402
from helpers import cast_params  # noqa: E402

torch.set_num_threads(2)
DTYPES = [np.float64, np.float32]
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
# As tests/torch_compare.py: atol scales with the largest magnitude of the compared values.
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-10)}
# Adam's eps, the same on both sides.  Adam's step lr * m / (sqrt(v) + eps) moves by up to lr / eps
# per unit of gradient where the gradient is near zero (mbconv's BatchNorm has one of 2e-8 beside
# others of 1e-2 at step 1), so a gradient's float32 rounding error (~1e-9 here) becomes a weight
# error of up to 1e-9 * lr / eps: 1e-3 with torch's eps of 1e-8.  In float32 an eps of 1e-4 bounds
# that gain at 100; float64 keeps torch's default.
ADAM_EPS = {np.float32: 1e-4, np.float64: 1e-8}


def close(ours, theirs, dtype, what):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    tol = dict(TOL[dtype])
    tol["atol"] *= max(1.0, float(np.abs(theirs).max(initial=0.0)))
    np.testing.assert_allclose(ours, theirs, err_msg=what, **tol)


def twins(inputs, outputs, dtype, seed=0):
    """The built graph in ``dtype`` (numpy backend) and its torch twin with the same weights."""
    be = backends.resolve("numpy")
    graph = Graph(inputs, outputs)
    graph.build(inputs.shape, np.random.default_rng(seed), be)
    cast_params(graph, be, dtype)
    graph.set_needs_input_grad(True)
    module = to_torch(graph).to(TORCH_DTYPE[dtype])
    load_into_torch(module, {k: be.to_numpy(v) for k, v in graph.state().items()})
    return be, graph, module


def compare_training(inputs, outputs, dtype, batches, loss, torch_loss, *, steps=3, lr=1e-2, what=""):
    """``steps`` Adam steps of the graph and of its torch twin on ``batches(rng, dtype)`` -> (x, targets)."""
    be, graph, module = twins(inputs, outputs, dtype)
    graph.train(True)
    module.train()
    refs = [(f"{key}.{name}", layer, name) for key, layer in graph.named_modules() for name in layer.params]
    params = FlatParameters(be, [(key, layer.params, name) for key, layer, name in refs])
    eps = ADAM_EPS[dtype]
    optimizer, torch_optimizer = Adam(lr=lr, eps=eps), torch.optim.Adam(module.parameters(), lr=lr, eps=eps)
    assert sorted(key for key, _, _ in refs) == sorted(k for k, _ in module.named_parameters())
    rng = np.random.default_rng(5)
    for step in range(steps):
        x, y = batches(rng, dtype)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        torch_optimizer.zero_grad()
        out_t = module(xt)
        loss_t = torch_loss(out_t, torch.from_numpy(y.copy()))
        loss_t.backward()
        grads_t = {k: p.grad.numpy().copy() for k, p in module.named_parameters()}
        torch_optimizer.step()

        out, saved = graph.apply(be.from_numpy(x))
        value = loss.forward(out, be.from_numpy(y))
        graph.zero_grad()
        dx = graph.backprop(loss.backward(), saved)
        grads = [layer.grads[name] for _, layer, name in refs]
        optimizer.step(params, params.gather(grads))
        at = f"step {step + 1} ({np.dtype(dtype).name}) of {what}"
        close(be.to_numpy(out), out_t, dtype, f"output at {at}")
        close(float(value), loss_t, dtype, f"loss at {at}")
        close(be.to_numpy(dx), xt.grad, dtype, f"dx at {at}")
        for (key, _, _), g in zip(refs, grads):
            close(be.to_numpy(g), grads_t[key], dtype, f"d{key} at {at}")
    theirs = module.state_dict()
    for key, value in graph.state().items():
        close(be.to_numpy(value), theirs[key], dtype, f"{key} after {steps} steps of {what}")
    return graph


def pixel_labels(shape, classes):
    """Batches of random images and per-pixel integer labels (N, H, W)."""
    def batches(rng, dtype):
        x = rng.standard_normal((4,) + tuple(shape)).astype(dtype)
        return x, rng.integers(0, classes, (4,) + tuple(shape[1:]))
    return batches


def image_labels(shape, classes):
    def batches(rng, dtype):
        return rng.standard_normal((4,) + tuple(shape)).astype(dtype), rng.integers(0, classes, 4)
    return batches


# --- the U-Net ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,up", [((1, 16, 16), "transpose"), ((2, 14, 10), "transpose"),
                                      ((1, 16, 16), "upsample")])
def test_unet_matches_its_torch_twin(shape, up, dtype):
    """The preset's builder at width 4: conv-BN-ReLU pairs, max-pools, transposed convolutions (an odd
    size given back by output_padding) or upsampling, concatenated skips, per-pixel cross-entropy."""
    inputs, outputs = presets.unet(shape, 3, width=4, up=up)
    assert outputs.shape == (3,) + shape[1:]
    compare_training(inputs, outputs, dtype, pixel_labels(shape, 3), CrossEntropy(),
                     torch.nn.functional.cross_entropy, what=f"unet {shape} {up}")


def test_unet_preset_at_full_size_matches_its_torch_twin():
    """The preset's own network (width 16, 56x56, 11 classes): one Adam step in float64."""
    shape = (1, 56, 56)
    inputs, outputs = presets.get_preset("unet").layers(shape, 11)
    graph = compare_training(inputs, outputs, np.float64, pixel_labels(shape, 11), CrossEntropy(),
                             torch.nn.functional.cross_entropy, steps=1, what="the unet preset")
    assert graph.param_count() == 482_619


def test_unet_preset_is_the_torch_scripts_network_and_recipe():
    preset = presets.get_preset("unet")
    assert "unet" not in presets.PRESETS and preset is presets.DENSE_PRESETS["unet"]    # not a classifier
    assert (preset.optimizer, preset.lr, preset.batch_size, preset.epochs, preset.schedule) == \
        ("adam", 3e-3, 32, 4, "onecycle")
    assert (preset.loss, preset.metrics, preset.monitor, preset.dataset) == \
        ("cross_entropy", ("pixel_accuracy", "miou"), "val_miou", "fashion-mosaic")
    net = preset.build((1, 56, 56), 11)
    assert net.is_graph and net.model.output_shape((1, 56, 56)) == (11, 56, 56)
    assert net.model.param_count() == 482_619          # scripts/unet_torch.py's UNet(16): 482,619
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds.count("Conv2DTranspose") == 3 and kinds.count("Concatenate") == 3 and kinds.count("MaxPool2D") == 3
    for name, classifier in presets.PRESETS.items():    # the classifiers' recipes are as before
        assert not classifier.graph and classifier.metrics == ("accuracy",), name
        assert classifier.monitor == "val_accuracy" and classifier.loss == "cross_entropy", name
    with pytest.raises(ValueError, match="at least 8 pixels"):
        presets.unet((1, 6, 16), 3)


def test_unet_round_trips_through_its_json_spec():
    from dcnn.layers import spec as layer_spec  # noqa: F401  (the graph spec lives beside the layer spec)
    from dcnn.model import spec
    net = presets.get_preset("unet").build((1, 20, 12), 4, seed=1)
    again = spec.build_network(json.loads(json.dumps(spec.model_spec(net))), seed=2)
    again.load_state_dict(net.state_dict())
    x = net.backend.from_numpy(np.random.default_rng(0).random((2, 1, 20, 12), np.float32))
    np.testing.assert_array_equal(again.logits(x), net.logits(x))


# --- a convolutional autoencoder ------------------------------------------------------------------------
def autoencoder(shape=(1, 16, 16), interpolation="nearest"):
    x = Input(shape)
    h = ReLU()(Conv2D(6, 3, stride=2, padding=1)(x))                                 # 8x8
    h = ReLU()(Conv2D(10, 3, stride=2, padding=1)(h))                                # 4x4
    h = ReLU()(Conv2DTranspose(6, 3, stride=2, padding=1, output_padding=1)(h))      # 8x8
    y = Sigmoid()(Conv2D(shape[0], 3, padding=1)(UpSampling2D(2, interpolation)(h)))  # 16x16
    return x, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_autoencoder_matches_its_torch_twin(dtype, interpolation):
    """Strided convolutions down, a transposed convolution and an upsampling up, a sigmoid; mean squared
    error against the input itself."""
    inputs, outputs = autoencoder((2, 16, 16), interpolation)
    assert outputs.shape == inputs.shape

    def batches(rng, dtype):
        x = rng.random((4, 2, 16, 16)).astype(dtype)
        return x, x
    compare_training(inputs, outputs, dtype, batches, MeanSquaredError(), torch.nn.functional.mse_loss,
                     what=f"autoencoder ({interpolation})")


# --- EfficientNet's MBConv with squeeze-and-excitation ----------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cin,cout,stride,expansion,se_ratio", [(8, 8, 1, 4, 0.25), (8, 12, 2, 4, 0.25),
                                                               (6, 10, 1, 1, 0.25), (8, 8, 1, 6, 0.0)])
def test_mbconv_matches_its_torch_twin(dtype, cin, cout, stride, expansion, se_ratio):
    x = Input((cin, 9, 8))
    y = mbconv(x, cout, stride, expansion, se_ratio)
    layers = Graph(x, y).layers
    kinds = [type(layer).__name__ for layer in layers]
    assert ("Add" in kinds) == (stride == 1 and cin == cout)
    assert ("Multiply" in kinds) == bool(se_ratio) and kinds.count("SiLU") == (2 if expansion != 1 else 1) + \
        (1 if se_ratio else 0)
    logits = Dense(3)(GlobalAvgPool2D()(y))
    compare_training(x, logits, dtype, image_labels((cin, 9, 8), 3), CrossEntropy(),
                     torch.nn.functional.cross_entropy, what=f"mbconv({cin} -> {cout}, stride {stride})")


def test_squeeze_excite_gates_each_channel():
    """The gates are one number per sample and channel in (0, 1): the maps are only rescaled."""
    from dcnn.layers.blocks import squeeze_excite
    x = Input((5, 6, 6))
    be, graph, _ = twins(x, squeeze_excite(x, 2), np.float64)
    gate_layer = next(layer for layer in graph.layers if isinstance(layer, Multiply))
    assert isinstance(gate_layer, Multiply) and not any(isinstance(layer, Add) for layer in graph.layers)
    images = np.random.default_rng(0).random((2, 5, 6, 6)) + 0.5
    ratio = be.to_numpy(graph.apply(be.from_numpy(images))[0]) / images
    assert np.allclose(ratio, ratio[:, :, :1, :1]) and ((ratio > 0) & (ratio < 1)).all()


# --- ONNX export of the U-Net -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 28, 20)])
def test_unet_exports_to_onnx(tmp_path, shape):
    """ONNX Runtime's per-pixel logits (N, K, H, W) and probabilities (softmax over the classes, axis 1)
    are dcnn's, with non-trivial BatchNorm statistics."""
    onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install -e '.[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime")
    from dcnn.io.export import export_onnx
    inputs, outputs = presets.unet(shape, 5, width=4)
    from dcnn.model.network import DCNNetwork
    net = DCNNetwork(inputs=inputs, outputs=outputs, seed=3, backend="numpy").build()
    rng = np.random.default_rng(4)
    state = {k: (np.abs(v + rng.normal(0, 0.3, v.shape)) + 0.1 if "running_var" in k
                 else v + rng.normal(0, 0.1, v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v
             for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    x = rng.random((3,) + shape, np.float32)
    logits = net.backend.to_numpy(net.logits(net.backend.from_numpy(x)))
    assert logits.shape == (3, 5) + shape[1:]
    for as_logits in (True, False):
        path = export_onnx(net, tmp_path / f"unet_{as_logits}.onnx", logits=as_logits)
        model = onnx.load(path)
        ops = {node.op_type for node in model.graph.node}
        assert {"ConvTranspose", "Concat", "MaxPool", "BatchNormalization"} <= ops
        dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
        assert dims == ["N", 5, *shape[1:]]
        (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
        want = logits if as_logits else np.exp(logits - logits.max(1, keepdims=True))
        if not as_logits:
            want /= want.sum(1, keepdims=True)
        # atol scales with the logits (up to ~20 here): float32 rounding through 15 convolutions and
        # BatchNorms puts dcnn and ONNX Runtime each ~2e-5 from the float64 result at that size.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_dcnn_export_writes_a_saved_unet(tmp_path, capsys):
    """``dcnn export --logits`` of a saved unet preset (width 16, 56x56): ONNX Runtime gives dcnn's logits."""
    pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install -e '.[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime")
    from dcnn import cli
    net = presets.get_preset("unet").build((1, 56, 56), 11, seed=1, backend="numpy")
    path = net.save(tmp_path / "unet.safetensors")
    assert cli.main(["export", str(path), str(tmp_path / "unet.onnx"), "--logits"]) == 0, capsys.readouterr().err
    x = np.random.default_rng(2).random((2, 1, 56, 56), np.float32)
    session = ort.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    want = net.backend.to_numpy(net.logits(net.backend.from_numpy(x)))
    assert got.shape == (2, 11, 56, 56)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_mbconv_model_saves_whole_and_exports_to_onnx(tmp_path):
    """An MBConv classifier goes through the JSON spec (dcnn.load) and ONNX (Mul with (N, C, 1, 1) gates)."""
    pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install -e '.[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime")
    import dcnn
    from dcnn.io.export import export_onnx
    from dcnn.model.network import DCNNetwork
    x = Input((3, 12, 12))
    y = mbconv(mbconv(Conv2D(8, 3, padding=1)(x), 8), 12, stride=2)
    net = DCNNetwork(inputs=x, outputs=Dense(4)(GlobalAvgPool2D()(y)), seed=2, backend="numpy").build()
    loaded = dcnn.load(net.save(tmp_path / "m.safetensors", classes=list("abcd")))
    images = np.random.default_rng(3).random((5, 3, 12, 12), np.float32)
    np.testing.assert_array_equal(loaded.predict(images), net.predict(images))
    path = export_onnx(net, tmp_path / "m.onnx", logits=True)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": images})
    want = net.backend.to_numpy(net.logits(net.backend.from_numpy(images)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))
