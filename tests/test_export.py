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
