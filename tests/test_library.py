"""dcnn as a library: it never imports the command line; models save and load whole (dcnn.layers.spec, dcnn.model.spec)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dcnn
from dcnn import layers
from dcnn.model import presets
from dcnn.model import spec
from dcnn.utils.files import load_arrays, read_metadata, save_arrays

ROOT = Path(__file__).resolve().parents[1]

LIBRARY = ["dcnn", "dcnn.layers", "dcnn.model.network", "dcnn.io.loading", "dcnn.model.spec", "dcnn.datasets",
           "dcnn.data.userdata", "dcnn.data.images", "dcnn.train.metrics", "dcnn.train.callbacks", "dcnn.train",
           "dcnn.presets", "dcnn.io.checkpoint", "dcnn.viz", "dcnn.viz.results", "dcnn.viz.stages", "dcnn.io.export",
           "dcnn.distributed"]


def test_the_library_never_imports_the_command_line():
    code = ("import importlib, sys\n"
            f"for name in {LIBRARY!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ModuleNotFoundError as exc:\n"
            "        if exc.name != name: raise\n"
            "import dcnn, numpy as np\n"
            "net = dcnn.presets.get_preset('lenet').build((1, 28, 28), 10)\n"
            "net.predict(np.zeros((1, 1, 28, 28), np.float32))\n"
            "print('dcnn.cli' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "DCNN_BACKEND": "numpy", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_round_trips_through_its_json_spec(name):
    net = presets.get_preset(name).build((1, 28, 28), 10, seed=1)
    text = json.dumps(spec.model_spec(net))
    again = spec.build_network(json.loads(text), seed=2)
    assert [l.describe() for l in again.layers] == [l.describe() for l in net.layers]
    again.load_state_dict(net.state_dict())
    x = np.random.default_rng(0).random((3, 1, 28, 28), np.float32)
    np.testing.assert_array_equal(again.predict(x), net.predict(x))


def test_a_model_built_in_python_saves_and_loads_whole(tmp_path):
    net = dcnn.DCNNetwork([dcnn.Conv2D(4, 3, padding="same"), dcnn.BatchNorm2D(), dcnn.ReLU(0.9), dcnn.MaxPool2D(2),
                           dcnn.Sequential([dcnn.Flatten(), dcnn.Dense(7, use_bias=False)]), dcnn.Dropout(0.3),
                           dcnn.Dense(3)], input_shape=(2, 8, 8), seed=4)
    net.add_layer(dcnn.Softmax())
    path = net.save(tmp_path / "m.safetensors", classes=["a", "b", "c"])
    meta = read_metadata(path)
    assert meta["spec"]["layers"][0] == {"layer": "Conv2D", "args": {
        "filters": 4, "kernel_size": 3, "stride": 1, "padding": "same", "use_bias": True, "kernel": None,
        "trainable": True, "init": "he"}}
    loaded = dcnn.load(path)
    assert loaded.classes == ["a", "b", "c"] and loaded.input_shape == (2, 8, 8)
    x = np.random.default_rng(1).random((5, 2, 8, 8), np.float32)
    np.testing.assert_allclose(loaded.predict(x), net.predict(x), rtol=1e-6)
    assert "Dense(7" in repr(loaded)


def test_fixed_kernels_are_stored_in_the_spec(tmp_path):
    net = presets.get_preset("seed").build((1, 28, 28), 10)
    path = net.save(tmp_path / "seed.safetensors")
    loaded = dcnn.load(path)
    np.testing.assert_array_equal(loaded.layers[0].layers[0].fixed_kernel, net.layers[0].layers[0].fixed_kernel)
    assert loaded.layers[0].layers[0].trainable is False


def test_an_unknown_layer_class_is_refused_by_name(tmp_path):
    net = presets.get_preset("lenet").build((1, 28, 28), 10)
    path = net.save(tmp_path / "m.safetensors")
    arrays, meta = load_arrays(path)
    meta["spec"]["layers"][1] = {"layer": "os.system", "args": {"command": "echo hi"}}
    save_arrays(tmp_path / "bad.safetensors", arrays, meta)
    with pytest.raises(ValueError, match=r"unknown layer class 'os.system'"):
        dcnn.load(tmp_path / "bad.safetensors")
    meta["spec"]["layers"][1] = {"layer": "ReLU", "args": {"max_activation": None, "evil": 1}}
    save_arrays(tmp_path / "bad2.safetensors", arrays, meta)
    with pytest.raises(ValueError, match=r"ReLU takes no argument\(s\) evil"):
        dcnn.load(tmp_path / "bad2.safetensors")


def test_your_own_layer_class_round_trips_once_defined(tmp_path):
    class Scale(layers.Layer):
        def __init__(self, factor: float = 2.0):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    net = dcnn.DCNNetwork([Scale(3.0), dcnn.Flatten(), dcnn.Dense(2)], input_shape=(1, 2, 2))
    loaded = dcnn.load(net.save(tmp_path / "s.safetensors"))
    assert isinstance(loaded.layers[0], Scale) and loaded.layers[0].factor == 3.0


def test_an_older_file_without_a_spec_loads_by_its_preset_name(tmp_path):
    net = presets.get_preset("lenet").build((1, 28, 28), 10, seed=3)
    arrays = net.state_dict()
    classes = [f"c{i}" for i in range(10)]
    save_arrays(tmp_path / "old.safetensors", arrays, {"format": "dcnn", "input_shape": [1, 28, 28],
                                                       "preset": "lenet", "classes": classes})
    loaded = dcnn.load(tmp_path / "old.safetensors")
    assert loaded.classes == classes
    x = np.random.default_rng(2).random((2, 1, 28, 28), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    save_arrays(tmp_path / "older.safetensors", arrays, {"input_shape": [1, 28, 28], "classes": classes})
    with pytest.raises(ValueError, match="neither a model spec nor a preset name"):
        dcnn.load(tmp_path / "older.safetensors")
    assert dcnn.load(tmp_path / "older.safetensors", model="lenet").classes == classes


def test_unstorable_arguments_are_named():
    net = dcnn.DCNNetwork([dcnn.Flatten(), dcnn.Dense(2, init=object())], input_shape=(1, 2, 2))
    with pytest.raises(spec.SpecError, match=r"Dense.init: a object cannot be stored"):
        spec.model_spec(net)
