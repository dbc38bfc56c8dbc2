"""Issue 18, "defects to fix on the way": each test fails on the code before the fix (commit 91bcf52).

1. a failed run leaves every file of its run folder as after the last good epoch;
2. the learning rate that a divergence message suggests is one that works;
3. absurd shapes in a weights file's metadata are one ``dcnn: error:`` line, before any allocation;
4. the divergence guard judges the training loss, so overfitting (a rising test loss) is not stopped;
5. a run that fails before its first epoch leaves no run folder behind (or its folder is reused);
6. a model saved from Python is named in evaluate and visualize, never "None";
7. ``--image-size`` accepts exactly HxW or one number, and only with ``--data``.
"""
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dcnn
from dcnn import cli
from dcnn.data import datasets
from dcnn.data.dataset import Dataset
from dcnn.io import checkpoint
from dcnn.train.job import Diverged, TrainConfig, train

from test_cli import SYSTEM_FASHION, dcnn as run_cli, needs_fashion_mnist, tiny  # noqa: F401
from test_runaway import Inflate
from test_training import tiny_dataset

pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


def quiet(*a):
    pass


def folder_hashes(folder: Path) -> dict:
    """Every file under ``folder``, hidden ones included, by relative name: its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1 and 2: a diverged resume ---------------------------------------------------------------------

def diverged_resume(tmp_path, capsys):
    """The issue's case on the real Fashion-MNIST: one good epoch of lenet, then --resume at lr 1000,
    as a user runs it: in another process (so with another process id for .lock)."""
    out = tmp_path / "D"
    rc, _, err = run_cli(capsys, "train", "--model", "lenet", "--limit", 3000, "--epochs", 1, "--out", out,
                         "--data-dir", SYSTEM_FASHION, "--no-progress")
    assert rc == 0, err
    before = folder_hashes(out)
    proc = subprocess.run([sys.executable, "-m", "dcnn", "train", "--resume", "--epochs", "3", "--lr", "1000",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DCNN_BACKEND": "numpy"})
    err = proc.stderr
    assert proc.returncode == cli.EXIT_FAILED and "dcnn: error: training stopped:" in err, err
    assert "last good checkpoint (epoch 1)" in err and "Traceback" not in err
    return out, before, err.strip().splitlines()[-1]


@needs_fashion_mnist
def test_a_diverged_resume_leaves_every_file_as_after_the_last_good_epoch(tmp_path, capsys):
    out, before, _ = diverged_resume(tmp_path, capsys)
    assert folder_hashes(out) == before          # weights.safetensors included, and no new file


@needs_fashion_mnist
def test_the_suggested_command_after_a_divergence_works(tmp_path, capsys):
    out, _, err = diverged_resume(tmp_path, capsys)
    suggestion = re.search(r"dcnn train (.*)$", err.strip())
    assert suggestion, err
    argv = shlex.split(suggestion.group(1))
    lr = float(argv[argv.index("--lr") + 1])
    assert lr <= 1e-2, err                       # Adam: not above its usual range
    rc, _, err = run_cli(capsys, "train", *argv)
    assert rc == 0, err
    assert checkpoint.load(out)[2]["epoch"] == 3   # it trained on to the epochs asked for


def test_suggested_learning_rates():
    from dcnn.model import presets
    from dcnn.train.job import suggest_lr
    lenet, seed = presets.get_preset("lenet"), presets.get_preset("seed")
    assert suggest_lr("adam", 1000.0, lenet) == lenet.lr              # above the preset's: its default
    assert suggest_lr("adam", lenet.lr, lenet) == pytest.approx(lenet.lr / 10)   # it failed at the default
    assert suggest_lr("sgd", 50.0, lenet) == pytest.approx(0.1)       # not the preset's optimiser: capped
    assert suggest_lr("adamw", 0.5, lenet) == pytest.approx(0.01)
    assert suggest_lr("sgd", 3.0, seed) == seed.lr


def test_a_run_that_diverges_before_any_checkpoint_suggests_a_working_lr(tmp_path):
    ds = tiny_dataset(n=320)
    with pytest.raises(Diverged) as err:
        train(TrainConfig(epochs=2, batch_size=32, seed=3, lr=300.0), tmp_path / "r", dataset=ds, progress=False,
              log_every=1, echo=quiet)
    lr = float(re.search(r"--lr ([0-9.e+-]+[0-9])", str(err.value)).group(1))
    assert lr <= 3e-3, str(err.value)            # convnet's Adam default, not 300 / 3
    train(TrainConfig(epochs=2, batch_size=32, seed=3, lr=lr), tmp_path / "r", dataset=ds, progress=False,
          log_every=1, echo=quiet)


# --- 3: absurd shapes in a weights file -------------------------------------------------------------

# The commands run in a child process whose address space is capped, so that the code before the fix
# fails the test with a MemoryError traceback instead of taking the machine's memory.
_CAPPED_DCNN = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
                "from dcnn.cli import main; sys.exit(main(sys.argv[1:]))")


def _with_metadata(source: Path, target: Path, **changes) -> Path:
    from dcnn.utils.files import load_arrays, save_arrays
    arrays, meta = load_arrays(source)
    save_arrays(target, arrays, {**meta, **changes})
    return target


@pytest.mark.parametrize("model, shape, field", [
    ("dense", [3, 9000, 9000], "'input_shape'"),      # within the per-sample bound: 39 GiB of Dense weights
    ("dense", [3, 100000, 100000], "'input_shape'"),
    ("pooled", [3, 8000, 8000], "'input_shape'"),     # no shape-dependent weights: a 2 GiB feature map
])
def test_absurd_input_shape_in_a_weights_file_is_one_line_for_every_command(tmp_path, model, shape, field):
    Image = pytest.importorskip("PIL.Image")
    pytest.importorskip("matplotlib")
    tail = ([dcnn.Flatten(), dcnn.Dense(64), dcnn.ReLU(), dcnn.Dense(3)] if model == "dense"
            else [dcnn.GlobalAvgPool2D(), dcnn.Dense(3)])
    net = dcnn.DCNNetwork([dcnn.Conv2D(4, 3, padding=1), dcnn.ReLU(), dcnn.MaxPool2D(2), *tail],
                          input_shape=(3, 12, 12))
    good = net.save(tmp_path / "good.safetensors", classes=["a", "b", "c"])
    bad = _with_metadata(good, tmp_path / "bad.safetensors", input_shape=shape)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "one.png")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.random((6, 3, 12, 12)).astype(np.float32),
             y_train=np.arange(6) % 3, x_test=rng.random((3, 3, 12, 12)).astype(np.float32), y_test=np.arange(3))
    env = {**os.environ, "DCNN_BACKEND": "numpy"}
    for argv in (["evaluate", bad, "--dataset", tmp_path / "data.npz"], ["predict", bad, tmp_path / "one.png"],
                 ["visualize", bad, "--image", tmp_path / "one.png", "--out", tmp_path / "fig"]):
        proc = subprocess.run([sys.executable, "-c", _CAPPED_DCNN, *map(str, argv)], capture_output=True,
                              text=True, timeout=300, env=env)
        assert proc.returncode == cli.EXIT_FAILED, (argv[0], proc.stderr[-2000:])
        assert proc.stderr.startswith("dcnn: error: ") and proc.stderr.count("\n") == 1, (argv[0], proc.stderr)
        assert f"metadata {field}" in proc.stderr and str(bad) in proc.stderr, proc.stderr


def test_a_spec_whose_layers_do_not_fit_the_stored_weights_is_refused_before_building(tmp_path, monkeypatch):
    from dcnn.io.loading import load_trained
    net = dcnn.DCNNetwork([dcnn.Flatten(), dcnn.Dense(3)], input_shape=(1, 4, 4))
    good = net.save(tmp_path / "good.safetensors")
    from dcnn.layers.spec import model_spec
    spec = model_spec(net)
    spec["layers"][1]["args"]["units"] = 10 ** 9          # a billion outputs: 16 GB of weights to initialise
    bad = _with_metadata(good, tmp_path / "bad.safetensors", spec=spec)
    built = []
    monkeypatch.setattr(dcnn.DCNNetwork, "build", lambda self, *a: built.append(a) or pytest.fail("built"))
    with pytest.raises(ValueError, match=r"'1\.weight'.*\(3, 16\)"):
        load_trained(bad)
    assert not built


# --- 4: overfitting is not divergence ---------------------------------------------------------------

def test_a_rising_test_loss_with_a_falling_training_loss_is_not_stopped(tmp_path):
    """Test labels at random: the better the model fits, the higher its test loss (overfitting)."""
    ds = tiny_dataset(n=96, n_test=40)
    noisy = Dataset("fashion-mnist", ds.x_train, ds.y_train, ds.x_test,
                    np.random.default_rng(1).integers(0, 10, len(ds.y_test)), ds.classes)
    result = train(TrainConfig(model="lenet", epochs=8, batch_size=32, seed=3, lr=0.01), tmp_path / "r",
                   dataset=noisy, progress=False, echo=quiet)
    history = result["history"]
    assert len(history["loss"]) == 8 and history["loss"][-1] < history["loss"][0] / 2
    assert max(history["val_loss"]) > np.log(10)      # above the limit the old guard stopped at
    best = checkpoint.best_epoch(history)
    assert dcnn.io.checkpoint.read_epoch(tmp_path / "r") == 8
    from dcnn.utils.files import read_metadata
    assert read_metadata(tmp_path / "r" / checkpoint.BEST)["epoch"] == best   # the test set picks the best


def test_a_runaway_training_loss_still_stops_before_its_epoch_is_checkpointed(tmp_path):
    """One logging interval per epoch (3 steps, log every 10): the epoch's end judges its training loss."""
    ds, out = tiny_dataset(n=96), tmp_path / "r"
    with pytest.raises(Diverged, match=r"diverged in epoch 2: its mean training loss") as err:
        train(TrainConfig(model="lenet", epochs=4, batch_size=32, seed=3, lr=0.01), out, dataset=ds,
              progress=False, callbacks=[Inflate(1, 0)], echo=quiet)
    assert "last good checkpoint (epoch 1)" in str(err.value)
    assert checkpoint.read_epoch(out) == 1


@pytest.mark.parametrize("streak, val_loss, stopped", [
    (0, 1.0, False),     # a high start, recovered by the end: spared
    (1, 1.0, True),      # still running away in its last logging interval
    (0, 5.0, True),      # its weights are bad on the test set too
    (0, None, False),    # no test set: the last interval decides
])
def test_an_epoch_whose_mean_training_loss_ran_away_is_stopped_unless_it_recovered(streak, val_loss, stopped):
    from types import SimpleNamespace
    from dcnn.train.monitor import Monitor
    m = Monitor(progress=False)
    m.net, m.uniform_loss, m.lowest = SimpleNamespace(stop_training=False, num_classes=10), np.log(10), 0.4
    m.streak, m.last_step, m.epochs, m.bar = streak, 2, 3, None
    logs = {"loss": 3.0, "accuracy": 0.5, **({} if val_loss is None else {"val_loss": val_loss, "val_accuracy": 0.5})}
    m.on_epoch_end(0, logs)
    assert (m.failure is not None) == stopped and m.net.stop_training == stopped
    if stopped:
        assert "diverged in epoch 1: its mean training loss was 3" in m.describe_failure()


# --- 5: no empty run folder after a run that never finished an epoch ---------------------------------

def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(tmp_path, capsys, monkeypatch):
    Image = pytest.importorskip("PIL.Image")
    from test_userdata import write_folder
    root = write_folder(tmp_path / "pets", n_per_class=4)
    broken = root / "ring" / "broken.png"
    broken.write_bytes(b"not a picture")
    monkeypatch.chdir(tmp_path)
    args = ("train", "--data", root, "--model", "lenet", "--epochs", 1, "--no-progress", "--json")
    rc, out, err = run_cli(capsys, *args)
    assert rc == cli.EXIT_FAILED and "broken.png" in err, err
    assert not Path("runs/pets-lenet").exists()
    broken.unlink()
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0, err
    assert json.loads(out)["out"] == str(Path("runs") / "pets-lenet")


def test_a_folder_left_by_a_run_killed_before_its_first_epoch_is_reused(tmp_path, capsys, monkeypatch):
    pytest.importorskip("PIL.Image")
    from test_userdata import write_folder
    root = write_folder(tmp_path / "pets", n_per_class=4)
    monkeypatch.chdir(tmp_path)
    Path("runs/pets-lenet").mkdir(parents=True)
    Path("runs/pets-lenet/.lock").write_text("12345\n")          # a kill -9 during the data loading
    rc, out, err = run_cli(capsys, "train", "--data", root, "--model", "lenet", "--epochs", 1, "--no-progress",
                           "--json")
    assert rc == 0, err
    assert json.loads(out)["out"] == str(Path("runs") / "pets-lenet")


def test_a_failed_first_epoch_removes_only_a_folder_it_created(tmp_path):
    class Broken:
        def limit(self, count):
            raise datasets.DatasetError("a corrupt picture")

    created = tmp_path / "new" / "run"
    with pytest.raises(datasets.DatasetError):
        train(TrainConfig(epochs=1), created, dataset=Broken(), progress=False, echo=quiet)
    assert not created.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    with pytest.raises(datasets.DatasetError):
        train(TrainConfig(epochs=1), mine, dataset=Broken(), progress=False, echo=quiet)
    assert (mine / "notes.txt").read_text() == "kept"


# --- 6: the name of a model saved from Python -------------------------------------------------------

def test_a_model_saved_from_python_is_named_in_evaluate_and_visualize(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.random((6, 1, 8, 8)).astype(np.float32),
             y_train=np.arange(6) % 3, x_test=rng.random((3, 1, 8, 8)).astype(np.float32), y_test=np.arange(3))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "one.png")
    net = dcnn.DCNNetwork([dcnn.Conv2D(2, 3, padding=1), dcnn.ReLU(), dcnn.Flatten(), dcnn.Dense(3)],
                          input_shape=(1, 8, 8))
    plain = net.save(tmp_path / "mine.safetensors")
    named = net.save(tmp_path / "other.safetensors", metadata={"name": "shape-finder"})
    captions = []
    from dcnn import viz
    real = viz.plot_stages
    monkeypatch.setattr(viz, "plot_stages", lambda *a, caption="", **k: captions.append(caption) or
                        real(*a, caption=caption, **k))
    for path, name in ((plain, "mine"), (named, "shape-finder")):
        rc, out, err = run_cli(capsys, "evaluate", path, "--dataset", tmp_path / "data.npz")
        assert rc == 0, err
        header = out.splitlines()[0]
        assert f": {name} on the" in header and "None" not in header, header
        rc, out, err = run_cli(capsys, "visualize", path, "--image", tmp_path / "one.png", "--out", tmp_path / "f")
        assert rc == 0, err
        assert name in captions[-1] and "None" not in captions[-1], captions[-1]


# --- 7: --image-size --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["64,64", "64 x 64", "64X64x3", "0x64", "64x", "x64", "-64", "1e2", "99999"])
def test_image_size_refuses_what_is_not_hxw_or_one_number(tmp_path, capsys, text):
    (tmp_path / "pets" / "a").mkdir(parents=True)
    rc, out, err = run_cli(capsys, "train", "--data", tmp_path / "pets", "--image-size", text)
    assert rc == cli.EXIT_USAGE and err.startswith("dcnn: error: argument --image-size") and err.count("\n") == 1
    assert "HxW" in err, err


@pytest.mark.parametrize("text, size", [("28x28", [28, 28]), ("64", [64, 64]), ("32x48", [32, 48])])
def test_image_size_accepts_the_documented_forms(text, size):
    from dcnn.cli.args import image_size
    assert image_size(text) == size


@pytest.mark.parametrize("option", [("--image-size", "32"), ("--channels", "3")])
def test_image_options_without_data_are_refused(tmp_path, capsys, option):
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", "--model", "lenet", "--limit", 32, "--epochs", 1,
                           "--no-progress", *option)
    assert rc == cli.EXIT_USAGE and err.count("\n") == 1, err
    assert f"{option[0]} has no effect without --data" in err, err
    assert not (tmp_path / "r").exists()
