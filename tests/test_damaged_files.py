"""Issue 13: damaged or hostile checkpoints and weights files are refused with the file and the field named."""
import json

import numpy as np
import pytest
import safetensors.numpy

from dcnn import Conv2D, DCNNetwork, Dense, Flatten
from dcnn.io import checkpoint
from dcnn.io.checkpoint import CheckpointError
from dcnn.cli import main
from dcnn.io.loading import load_trained
from dcnn.utils.files import load_arrays, read_metadata, save_arrays
from dcnn.train.job import TrainConfig, train

from test_training import run, tiny_dataset


pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    run(out, tiny_dataset(), epochs=1)
    return out


def damaged_copy(good_run, tmp_path, change_meta=None, change_arrays=None):
    out = tmp_path / "r"
    out.mkdir()
    arrays, meta = load_arrays(good_run / checkpoint.CHECKPOINT)
    if change_meta:
        change_meta(meta)
    if change_arrays:
        change_arrays(arrays)
    save_arrays(out / checkpoint.CHECKPOINT, arrays, meta)
    return out


def resume(out):
    return train(TrainConfig(epochs=2), out, resume=True, dataset=tiny_dataset(), progress=False,
                 echo=lambda *a: None)


def set_path(meta, dotted, value):
    *parents, last = dotted.split(".")
    for key in parents:
        meta = meta[key]
    meta[last] = value


@pytest.mark.parametrize("field,value,message", [
    ("epoch", -3, r"'epoch' must be an integer >= 0, not -3"),
    ("epoch", "4", r"'epoch' must be an integer >= 0, not '4'"),
    ("optimizer", [1, 2], r"'optimizer' must be an object, not list"),
    ("optimizer.steps", "12abc", r"'optimizer.steps' must be an integer >= 0"),
    ("optimizer.name", None, r"'optimizer.name' must be a name"),
    ("rng", "garbage", r"'rng.shuffle' must hold"),
    ("rng.shuffle", {"bit_generator": "nonsense", "state": 1}, r"'rng' holds a generator state that cannot be"),
    ("history", {"loss": ["x"]}, r"'history.loss' must be a list of finite numbers"),
    ("history", {"loss": [0.5, 0.4, 0.3]}, r"'history.loss' has 3 entries for 1 epochs"),
    ("config", 7, r"'config' must be an object, not int"),
    ("input_shape", [1, 100000, 100000], r"'input_shape' is wrong .*too large"),
    ("interrupted", {"epoch": "x"}, r"'interrupted' must be"),
    ("version", 99, r"is a version 99 checkpoint"),
])
def test_damaged_checkpoint_metadata_names_the_file_and_field(good_run, tmp_path, field, value, message):
    out = damaged_copy(good_run, tmp_path, change_meta=lambda m: set_path(m, field, value))
    with pytest.raises(CheckpointError, match=message) as err:
        resume(out)
    assert str(out / checkpoint.CHECKPOINT) in str(err.value)


def test_missing_optimizer_state_is_refused_not_silently_restarted(good_run, tmp_path):
    strip = lambda arrays: [arrays.pop(k) for k in [k for k in arrays if k.startswith("optimizer/")]]
    out = damaged_copy(good_run, tmp_path, change_arrays=strip)
    with pytest.raises(CheckpointError, match=r"the optimiser state is missing \(\d+ steps were taken"):
        resume(out)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop(next(k for k in a if k.endswith(".exp_avg_sq"))), r"lacks \['exp_avg_sq'\]"),
    (lambda a: a.update({k: a[k][..., :1] for k in [next(k for k in a if k.endswith(".exp_avg"))]}),
     r"has shape .* its parameter has"),
    (lambda a: a.update({"optimizer/99.weight.exp_avg": np.zeros(3, np.float32)}), "does not belong to this model"),
    (lambda a: a.update({k: np.full_like(a[k], np.nan) for k in [next(k for k in a if k.endswith(".exp_avg"))]}),
     "holds NaN, Inf"),
])
def test_damaged_optimizer_state_is_named(good_run, tmp_path, change, message):
    out = damaged_copy(good_run, tmp_path, change_arrays=change)
    with pytest.raises(CheckpointError, match=message):
        resume(out)


def test_deeply_nested_json_metadata_is_refused_without_recursion_error(good_run, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    arrays, _ = load_arrays(good_run / checkpoint.CHECKPOINT)
    nested = "[" * 200_000 + "]" * 200_000
    (out / checkpoint.CHECKPOINT).write_bytes(safetensors.numpy.save(arrays, metadata={"config": nested}))
    with pytest.raises(CheckpointError, match="metadata field 'config' is nested too deeply"):
        resume(out)


def test_cli_reports_a_damaged_checkpoint_in_one_line(good_run, tmp_path, capsys):
    out = damaged_copy(good_run, tmp_path, change_meta=lambda m: set_path(m, "optimizer.steps", "x"))
    code = main(["train", "--resume", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("dcnn: error: ") and err.count("\n") == 1 and "'optimizer.steps'" in err


def small_net():
    return DCNNetwork([Conv2D(2, 3), Flatten(), Dense(3)], input_shape=(1, 5, 5)).build()


def test_float64_weights_beyond_float32_range_are_refused_naming_the_key(tmp_path):
    net = small_net()
    arrays = {k: v.astype(np.float64) for k, v in net.state_dict().items()}
    arrays["2.weight"][0, 0] = 1e39                # finite in float64, inf in float32
    save_arrays(tmp_path / "w.safetensors", arrays)
    with pytest.raises(ValueError, match=r"'2.weight' contains NaN or Inf once cast to float32"):
        small_net().load_weights(tmp_path / "w.safetensors")


def test_a_huge_sparse_weights_file_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.truncate(16 << 30)                        # 16 GiB of (sparse) zeros: the header length reads 0
    with pytest.raises(ValueError, match=r"huge.safetensors is not a readable safetensors file \(its first 8 bytes"):
        load_arrays(path)
    good = small_net()
    save_arrays(tmp_path / "w.safetensors", good.state_dict())
    with open(tmp_path / "w.safetensors", "r+b") as f:
        f.truncate(8 << 30)                         # a valid header, then gigabytes it does not describe
    with pytest.raises(ValueError, match="w.safetensors is not a readable safetensors file"):
        load_arrays(tmp_path / "w.safetensors")


def test_weights_metadata_with_absurd_input_shape_or_classes_is_refused(good_run, tmp_path):
    arrays, meta = load_arrays(good_run / checkpoint.WEIGHTS)
    save_arrays(tmp_path / "a.safetensors", arrays, {**meta, "input_shape": [3, 120000, 120000]})
    with pytest.raises(ValueError, match=r"a.safetensors: metadata 'input_shape' .*too large"):
        load_trained(tmp_path / "a.safetensors")
    save_arrays(tmp_path / "b.safetensors", arrays, {**meta, "classes": "not a list"})
    with pytest.raises(ValueError, match=r"b.safetensors: metadata 'classes' must be a list of names"):
        load_trained(tmp_path / "b.safetensors")
    save_arrays(tmp_path / "c.safetensors", arrays, {**meta, "input_shape": "garbage"})
    with pytest.raises(TypeError, match=r"c.safetensors: metadata 'input_shape'"):
        load_trained(tmp_path / "c.safetensors")


def test_read_metadata_reads_only_the_header(good_run):
    assert read_metadata(good_run / checkpoint.CHECKPOINT)["epoch"] == 1
    assert json.loads(json.dumps(read_metadata(good_run / checkpoint.WEIGHTS)))["preset"] == "convnet"


def test_a_header_describing_gigabytes_of_tensors_is_refused_before_reading(tmp_path):
    """A valid header for an 8 GiB tensor over a sparse file of that size: refused from the header."""
    header = json.dumps({"0.weight": {"dtype": "F32", "shape": [2 ** 31], "data_offsets": [0, 2 ** 33]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + 2 ** 33)
    with pytest.raises(ValueError, match=r"big.safetensors: its header describes 8,589,934,592 bytes of tensors, "
                                         r"more than the limit of 4,294,967,296"):
        load_arrays(path)
