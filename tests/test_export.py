"""dcnn export: ONNX Runtime gives what dcnn gives."""
import json

import numpy as np
import pytest

import dcnn
from dcnn import cli
from dcnn.model import presets

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install -e '.[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime (pip install -e '.[onnx]')")


pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


def trained_like(net, seed=0):
    """Non-trivial BatchNorm statistics, as after training."""
    rng = np.random.default_rng(seed)
    state = {k: (v + rng.normal(0, 0.1, v.shape).astype(v.dtype) if "running_var" not in k
                 else np.abs(v + rng.normal(0, 0.3, v.shape)).astype(v.dtype) + 0.1) if v.dtype.kind == "f" else v
             for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    return net


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_onnx_runtime_gives_the_same_probabilities(name, tmp_path, capsys):
    net = trained_like(presets.get_preset(name).build((1, 28, 28), 10, seed=2))
    path = net.save(tmp_path / "m.safetensors", classes=[f"c{i}" for i in range(10)])
    assert cli.main(["export", str(path), str(tmp_path / "m.onnx")]) == 0, capsys.readouterr().err
    x = np.random.default_rng(1).random((7, 1, 28, 28), np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    np.testing.assert_allclose(got, net.predict(x), rtol=1e-4, atol=1e-5)
    model = onnx.load(tmp_path / "m.onnx")
    assert json.loads({p.key: p.value for p in model.metadata_props}["classes"])[3] == "c3"


def test_logits_and_unknown_layers(tmp_path):
    net = dcnn.DCNNetwork([dcnn.Flatten(), dcnn.Dense(3)], input_shape=(2, 3, 3), seed=1).build()
    from dcnn.io.export import export_onnx, to_onnx
    export_onnx(net, tmp_path / "l.onnx", logits=True)
    x = np.random.default_rng(0).random((4, 2, 3, 3), np.float32)
    (got,) = ort.InferenceSession(str(tmp_path / "l.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    w, b = net.state_dict()["1.weight"], net.state_dict()["1.bias"]
    np.testing.assert_allclose(got, x.reshape(4, -1) @ w.T + b, rtol=1e-5, atol=1e-6)

    class Odd(dcnn.Layer):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"layers\[0\]: Odd has no ONNX mapping"):
        to_onnx(dcnn.DCNNetwork([Odd(), dcnn.Flatten(), dcnn.Dense(2)], input_shape=(1, 2, 2)))


def check_onnx(layers, input_shape, tmp_path, seed=0, batch=5, rtol=1e-4, atol=1e-5):
    """The layers (+ Flatten and Dense when they do not end flat), exported and run by ONNX Runtime."""
    from dcnn.layers.container import Sequential
    out = Sequential(list(layers)).output_shape(tuple(input_shape))
    head = ([] if len(out) == 1 else [dcnn.Flatten()]) + [dcnn.Dense(4)]
    net = trained_like(dcnn.DCNNetwork(list(layers) + head, input_shape=input_shape, seed=seed).build(), seed)
    from dcnn.io.export import export_onnx
    export_onnx(net, tmp_path / "m.onnx", logits=True)
    x = np.random.default_rng(seed + 1).standard_normal((batch, *input_shape)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    np.testing.assert_allclose(got, net.logits(net.backend.from_numpy(x)), rtol=rtol, atol=atol)


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_avg_pool(tmp_path, keepdims):
    from dcnn.layers.pooling import GlobalAvgPool2D
    check_onnx([dcnn.Conv2D(3, 3), GlobalAvgPool2D(keepdims=keepdims)], (2, 6, 5), tmp_path)


def _families():
    from dcnn.layers.activations import ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, ReLU6, Sigmoid, SiLU, Tanh
    from dcnn.layers.conv import DepthwiseConv2D
    from dcnn.layers.conv_variants import Conv2DTranspose, SeparableConv2D
    from dcnn.layers.normalization import BatchNorm1D, GroupNorm, LayerNorm
    C = dcnn.Conv2D
    return {
        "conv_grouped_dilated": ([C(4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)], (4, 9, 8)),
        "conv_same_even": ([C(3, (2, 4), padding="same")], (2, 6, 7)),
        "depthwise": ([DepthwiseConv2D((3, 5), 2, (1, 2), depth_multiplier=2, dilation=(1, 2))], (3, 9, 9)),
        "separable": ([SeparableConv2D(5, 3, padding=1, depth_multiplier=2)], (3, 6, 6)),
        "transpose": ([Conv2DTranspose(6, (3, 4), stride=(2, 3), padding=(2, 1), output_padding=(1, 2), groups=2,
                                       dilation=(2, 1))], (4, 5, 4)),
        "activations": ([C(4, 3, padding=1), LeakyReLU(0.1), ELU(0.7), ReLU6(), C(4, 1), Sigmoid(), C(4, 1), Tanh(),
                         C(4, 1), SiLU(), C(4, 1), GELU(), C(4, 1), GELU("tanh"), C(4, 1), HardSigmoid(), C(4, 1),
                         HardSwish()], (2, 5, 5)),
        "norms": ([C(6, 3), LayerNorm(), GroupNorm(3), dcnn.Flatten(), dcnn.Dense(5), BatchNorm1D()], (2, 6, 6)),
    }


@pytest.mark.parametrize("name", sorted(_families()))
def test_layer_families_export(tmp_path, name):
    layers, shape = _families()[name]
    check_onnx(layers, shape, tmp_path)


def _resampling():
    from dcnn.layers.pooling import AvgPool2D, GlobalMaxPool2D, MaxPool2D
    from dcnn.layers.resampling import Cropping2D, UpSampling2D, ZeroPadding2D
    from dcnn.layers.shape import Identity, Reshape
    from dcnn.layers.core import Dropout2D
    return {
        "pools": ([MaxPool2D(3, 2, 1), AvgPool2D(3, 1, 1), AvgPool2D(2), MaxPool2D(2, 1)], (2, 9, 8)),
        "global_max": ([dcnn.Conv2D(3, 3), GlobalMaxPool2D()], (2, 6, 5)),
        "global_max_keepdims": ([dcnn.Conv2D(3, 3), GlobalMaxPool2D(keepdims=True)], (2, 6, 5)),
        "upsample_nearest": ([UpSampling2D((2, 3))], (2, 3, 4)),
        "upsample_bilinear": ([UpSampling2D((3, 2), "bilinear")], (2, 4, 3)),
        "pad_crop": ([ZeroPadding2D(((1, 2), (0, 3))), Cropping2D(((0, 2), (1, 0))), Cropping2D(1)], (2, 5, 6)),
        "reshape_identity_dropout2d": ([Reshape((4, 3, -1)), Identity(), Dropout2D(0.5), dcnn.Conv2D(2, 1)],
                                       (2, 6, 5)),
    }


@pytest.mark.parametrize("name", sorted(_resampling()))
def test_resampling_export(tmp_path, name):
    layers, shape = _resampling()[name]
    check_onnx(layers, shape, tmp_path)
