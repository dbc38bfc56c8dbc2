"""A graph model saved from Python, with a layer of the user's own, through the command line:
evaluate, predict, visualize and export, each in a fresh process (as a user runs them), and
--custom-layers to make the user's class known."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dcnn
from dcnn import Concatenate, Conv2D, DCNNetwork, Dense, GlobalAvgPool2D, Input, MaxPool2D, ReLU

Image = pytest.importorskip("PIL.Image", reason="predict reads pictures with Pillow")
ROOT = Path(__file__).resolve().parents[1]

LAYER_FILE = '''
import dcnn


class Scale(dcnn.Layer):
    """y = factor * x: a layer of the user's own."""

    def __init__(self, factor=2.0):
        super().__init__()
        self.factor = float(factor)

    def apply(self, x):
        return x * self.factor, ()

    def backprop(self, dy, saved):
        return dy * self.factor
'''


def run(*argv):
    env = {**os.environ, "DCNN_BACKEND": "numpy", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "dcnn", *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph_cli")
    (tmp / "my_layers.py").write_text(LAYER_FILE)
    namespace = {}
    exec(compile(LAYER_FILE, str(tmp / "my_layers.py"), "exec"), namespace)
    rng = np.random.default_rng(0)
    x_train = rng.random((60, 1, 12, 12), dtype=np.float32)
    y_train = (x_train[:, 0, :6].mean(axis=(1, 2)) > x_train[:, 0, 6:].mean(axis=(1, 2))).astype(np.int64)
    np.savez(tmp / "halves.npz", x_train=x_train[:40], y_train=y_train[:40], x_test=x_train[40:],
             y_test=y_train[40:], classes=np.array(["bottom", "top"]))
    x = Input((1, 12, 12))
    a = ReLU()(Conv2D(4, 3, padding=1, name="stem")(x))
    b = namespace["Scale"](0.5, name="half")(Conv2D(4, 1)(a))
    y = Dense(2, name="head")(GlobalAvgPool2D()(MaxPool2D(2)(Concatenate()([a, b]))))
    net = DCNNetwork(inputs=x, outputs=y, seed=0).compile("adam", lr=1e-2)
    net.fit(x_train[:40], y_train[:40], epochs=3, batch_size=10, verbose=0)
    path = net.save(tmp / "graph.safetensors", classes=["bottom", "top"])
    Image.fromarray((x_train[40, 0] * 255).astype(np.uint8)).save(tmp / "one.png")
    return tmp, path, net, x_train[40:], y_train[40:]


def test_without_custom_layers_the_command_says_what_to_pass(saved):
    tmp, path, *_ = saved
    out = run("evaluate", path, "--dataset", tmp / "halves.npz")
    assert out.returncode == 1 and "unknown layer class 'Scale'" in out.stderr
    assert "--custom-layers FILE.py" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_and_predict_a_graph_model_with_custom_layers(saved):
    tmp, path, net, x_test, y_test = saved
    out = run("evaluate", path, "--dataset", tmp / "halves.npz", "--custom-layers", tmp / "my_layers.py", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accuracy"] == pytest.approx(net.evaluate(x_test, y_test)["accuracy"])
    out = run("predict", path, tmp / "one.png", "--custom-layers", tmp / "my_layers.py", "--json")
    assert out.returncode == 0, out.stderr
    top = json.loads(out.stdout)["predictions"][0]["top"][0]
    from dcnn.data.images import model_image
    probs = net.predict(model_image(tmp / "one.png", (1, 12, 12))[None])[0]
    assert top["class"] == ["bottom", "top"][int(np.argmax(probs))]


def test_visualize_draws_a_stage_for_every_call_with_maps(saved):
    pytest.importorskip("matplotlib")
    tmp, path, *_ = saved
    out = run("visualize", path, "--dataset", tmp / "halves.npz", "--custom-layers", tmp / "my_layers.py",
              "--out", tmp / "figures")
    assert out.returncode == 0, out.stderr
    pictures = sorted(p.name for p in (tmp / "figures").glob("stage*.png"))
    # stem, relu, conv2d, half, concatenate, max_pool2d: every call whose output is still maps
    assert len(pictures) == 6, pictures


def test_export_a_graph_model_to_onnx(saved):
    ort = pytest.importorskip("onnxruntime")
    tmp, path, net, x_test, _ = saved
    out = run("export", path, tmp / "graph.onnx", "--custom-layers", tmp / "my_layers.py")
    assert out.returncode == 1 and "Scale has no ONNX mapping" in out.stderr        # a user layer has none
    x = Input((1, 12, 12))
    plain = DCNNetwork(inputs=x, outputs=Dense(2)(GlobalAvgPool2D()(Concatenate()([
        ReLU()(Conv2D(3, 3, padding=1)(x)), Conv2D(2, 1)(x)]))), seed=1).build()
    plain.save(tmp / "plain.safetensors", classes=["bottom", "top"])
    out = run("export", tmp / "plain.safetensors", tmp / "plain.onnx")
    assert out.returncode == 0, out.stderr
    session = ort.InferenceSession(str(tmp / "plain.onnx"))
    np.testing.assert_allclose(session.run(None, {"input": x_test})[0], plain.predict(x_test), rtol=1e-5, atol=1e-6)


def test_custom_layers_that_are_not_there_or_define_nothing_are_clear_errors(saved, tmp_path):
    _, path, *_ = saved
    out = run("evaluate", path, "--custom-layers", tmp_path / "missing.py")
    assert out.returncode == 1 and "missing.py: no such file" in out.stderr
    (tmp_path / "empty.py").write_text("x = 1\n")
    out = run("evaluate", path, "--custom-layers", tmp_path / "empty.py")
    assert out.returncode == 1 and "defines no dcnn Layer subclass" in out.stderr
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    out = run("evaluate", path, "--custom-layers", tmp_path / "broken.py")
    assert out.returncode == 1 and "failed to import: RuntimeError: boom" in out.stderr


def test_a_library_user_imports_the_layer_and_loads_the_model(saved):
    tmp, path, net, x_test, _ = saved
    code = (f"import sys; sys.path.insert(0, {str(tmp)!r}); import my_layers, dcnn, numpy as np; "
            f"m = dcnn.load({str(path)!r}); print(m.model.children()[2][0], m.predict(np.load({str(tmp / 'x.npy')!r})).argmax(1).tolist())")
    np.save(tmp / "x.npy", x_test)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "DCNN_BACKEND": "numpy", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    name, predicted = out.stdout.split(" ", 1)
    assert name == "conv2d" and json.loads(predicted) == net.predict(x_test).argmax(1).tolist()
    assert dcnn.layers.base.LAYER_CLASSES.get("Scale") is not None   # (this process ran the file too)
