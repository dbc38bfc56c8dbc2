"""The training job: resume equals an uninterrupted run, Ctrl-C, a non-finite loss, seeds, schedule, augmentation.

Runs use a tiny synthetic dataset in memory so that each takes a second or two.
Tolerance of resume-equals-uninterrupted on the CPU: none; the weights, the
optimiser state and the history must be bit-identical.
"""
import os
import re
import signal

import numpy as np
import pytest

from dcnn.io import checkpoint
from dcnn.train.callbacks import Callback
from dcnn.data.datasets import Dataset
from dcnn.utils.files import load_arrays
from dcnn.train.job import Diverged, Interrupted, LRSchedule, RandomShiftFlip, TrainConfig, train


pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


def tiny_dataset(n=96, n_test=40, size=12, seed=0) -> Dataset:
    """A bright bar whose row is the label, on noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n + n_test)
    x = (rng.random((n + n_test, 1, size, size)) * 0.3).astype(np.float32)
    x[np.arange(n + n_test), 0, y + 1, 2:size - 2] += 0.7
    return Dataset("fashion-mnist", x[:n], y[:n], x[n:], y[n:], tuple(str(i) for i in range(10)))


class SimulatedCrash(Exception):
    pass


class CrashAfterEpoch(Callback):
    """Dies right after epoch ``k``'s checkpoint is written, like a kill -9 at that moment."""

    def __init__(self, k):
        self.k = k

    def on_epoch_end(self, epoch, logs):
        if epoch + 1 == self.k:
            raise SimulatedCrash


def run(out, ds, callbacks=(), resume=False, **config):
    config = TrainConfig(**{"epochs": 3, "batch_size": 32, "seed": 3, **config})
    return train(config, out, resume=resume, dataset=ds, progress=False, callbacks=callbacks, echo=lambda *a: None)


def weights(out):
    return load_arrays(out / checkpoint.WEIGHTS)[0]


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)   # exact: tolerance 0
    _, opt_a, meta_a = checkpoint.load(a)
    _, opt_b, meta_b = checkpoint.load(b)
    assert opt_a.keys() == opt_b.keys()
    for key in opt_a:
        np.testing.assert_array_equal(opt_a[key], opt_b[key], err_msg=key)
    assert meta_a["optimizer"]["steps"] == meta_b["optimizer"]["steps"]
    assert meta_a["rng"] == meta_b["rng"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert meta_a["history"][key] == meta_b["history"][key], key


@pytest.mark.parametrize("model, options", [
    ("convnet", {"augment": True}),          # BatchNorm, two Dropouts, Adam, augmentation RNG
    ("seed", {}),                             # frozen edge filters, FeatureMapNorm, SGD with momentum
    ("resnet", {}),                           # nested residual blocks, AdamW, label smoothing
])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, model, options):
    ds = tiny_dataset()
    whole = run(tmp_path / "whole", ds, model=model, **options)
    with pytest.raises(SimulatedCrash):
        run(tmp_path / "crashed", ds, callbacks=[CrashAfterEpoch(1)], model=model, **options)
    assert checkpoint.load(tmp_path / "crashed")[2]["epoch"] == 1
    resumed = run(tmp_path / "crashed", ds, resume=True, model=model, **options)
    assert resumed["epochs"] == whole["epochs"] == 3
    assert_same_run(tmp_path / "whole", tmp_path / "crashed")
    assert resumed["test_accuracy"] == whole["test_accuracy"]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    ds = tiny_dataset()
    run(tmp_path / "a", ds, epochs=1)
    run(tmp_path / "b", ds, epochs=1)
    run(tmp_path / "c", ds, epochs=1, seed=4)
    assert_same_run(tmp_path / "a", tmp_path / "b")
    assert not np.array_equal(weights(tmp_path / "a")["0.weight"], weights(tmp_path / "c")["0.weight"])


def test_training_learns_and_reports(tmp_path):
    result = run(tmp_path / "r", tiny_dataset(n=320), epochs=4, lr=0.01)
    assert result["test_accuracy"] > 0.5
    for key in ("dataset", "model", "backend", "epochs", "seconds", "train_loss", "test_accuracy",
                "images_per_second"):
        assert result[key] is not None, key
    assert len(result["history"]["val_accuracy"]) == 4
    for name in (checkpoint.CHECKPOINT, checkpoint.WEIGHTS, checkpoint.CONFIG, checkpoint.HISTORY):
        assert (tmp_path / "r" / name).is_file()


class AtStep(Callback):
    """Runs ``act(last layer's weight)`` once, after a given (epoch, step)."""

    def __init__(self, epoch, step):
        self.at = (epoch, step)

    def on_train_begin(self, net, epochs, steps):
        self.net = net

    def on_epoch_begin(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, step, logs):
        if (self.epoch, step) == self.at:
            self.act(self.net.layers[-1].params["weight"])


class Poison(AtStep):
    """Puts a NaN into the last layer's weights after a given (epoch, step)."""

    def act(self, weight):
        weight[0, 0] = np.nan


def test_non_finite_loss_stops_with_epoch_step_and_keeps_last_good_checkpoint(tmp_path):
    ds = tiny_dataset()
    config = TrainConfig(epochs=3, batch_size=16, seed=3)
    with pytest.raises(Diverged) as err:
        # The step after the poisoned one (epoch 2, step 3, 1-based) has a NaN loss; it is seen at
        # the next log interval (step 4) without a per-batch sync.
        train(config, tmp_path / "r", dataset=ds, progress=False, log_every=4, callbacks=[Poison(1, 1)],
              echo=lambda *a: None)
    message = str(err.value)
    assert "epoch 2, step 3" in message and "lower learning rate" in message and "epoch 1" in message and "--resume" in message
    model, _, meta = checkpoint.load(tmp_path / "r")
    assert meta["epoch"] == 1 and all(np.isfinite(v).all() for v in model.values())
    # and it resumes from there, with a lower learning rate
    result = train(TrainConfig(lr=1e-3), tmp_path / "r", resume=True, dataset=ds, progress=False,
                   echo=lambda *a: None)
    assert result["epochs"] == 3 and np.isfinite(result["train_loss"])


class CtrlC(Callback):
    def __init__(self, epoch, step):
        self.at = (epoch, step)

    def on_epoch_begin(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, step, logs):
        if (self.epoch, step) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_finishes_the_batch_writes_a_checkpoint_and_resumes(tmp_path):
    ds = tiny_dataset()
    with pytest.raises(Interrupted, match="epoch 2, step 2.*--resume"):
        run(tmp_path / "r", ds, callbacks=[CtrlC(1, 1)])
    _, _, meta = checkpoint.load(tmp_path / "r")
    assert meta["epoch"] == 1 and meta["interrupted"] == {"epoch": 2, "step": 2}
    assert len(meta["history"]["loss"]) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # handler restored
    result = run(tmp_path / "r", ds, resume=True)
    assert result["epochs"] == 3


def test_resume_refuses_a_different_run(tmp_path):
    ds = tiny_dataset()
    run(tmp_path / "r", ds, epochs=1)
    with pytest.raises(ValueError, match="--batch-size 16 differs from the checkpoint's 32"):
        train(TrainConfig(batch_size=16), tmp_path / "r", resume=True, requested={"batch_size": 16}, dataset=ds,
              progress=False, echo=lambda *a: None)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        train(TrainConfig(), tmp_path / "none", resume=True, dataset=ds, progress=False, echo=lambda *a: None)
    # more epochs is fine
    result = train(TrainConfig(epochs=2), tmp_path / "r", resume=True, requested={"epochs": 2}, dataset=ds,
                   progress=False, echo=lambda *a: None)
    assert result["epochs"] == 2


def test_one_cycle_schedule():
    s = LRSchedule(1.0, "onecycle", epochs=2)
    s.on_train_begin(None, 2, 50)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(15) == pytest.approx(1.0)
    assert s.lr_at(100) == pytest.approx(0.01)
    rates = [s.lr_at(i) for i in range(101)]
    assert max(rates) == pytest.approx(1.0) and rates.index(max(rates)) == 15
    assert LRSchedule(0.5, "constant", 2).lr_at(7) == 0.5


@pytest.mark.parametrize("pad", [1, 2])          # 1: the resnet preset's augment_shift
def test_random_shift_flip_moves_pixels_and_is_reproducible(backend, pad):
    b = backend                                     # every backend: the draws happen on the device
    host = np.zeros((64, 1, 9, 9), np.float32)
    host[:, 0, 4, 4] = 1.0
    x = b.from_numpy(host)
    out = b.to_numpy(RandomShiftFlip(b, seed=1, pad=pad, flip=True)(x))
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.all(out.sum(axis=(1, 2, 3)) == 1.0)                  # the dot moves but stays whole
    rows, cols = np.nonzero(out[:, 0].reshape(64, -1))[1] // 9, np.nonzero(out[:, 0].reshape(64, -1))[1] % 9
    assert set(rows) == set(range(4 - pad, 5 + pad)) and set(cols) == set(range(4 - pad, 5 + pad))
    again = b.to_numpy(RandomShiftFlip(b, seed=1, pad=pad, flip=True)(x))
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_preset_builds_for_every_dataset_shape(shape):
    from dcnn.model import presets
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    for name, preset in presets.PRESETS.items():
        net = preset.build(shape, 10)
        assert net.predict(x).shape == (2, 10), name
    with pytest.raises(ValueError, match="valid ones are: " + ", ".join(presets.PRESETS)):
        presets.get_preset("resnet50")


def test_progress_bar_shows_running_metrics(tmp_path, capsys):
    train(TrainConfig(epochs=1, batch_size=16, seed=3), tmp_path / "r", dataset=tiny_dataset(), progress=True,
          log_every=2, echo=lambda *a: None)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "img/s" in err and "test acc=" in err and "acc=" in err


def test_progress_bar_keeps_test_accuracy_in_80_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")         # an 80-column terminal, as the bar sees it
    train(TrainConfig(epochs=1, batch_size=16, seed=3), tmp_path / "r", dataset=tiny_dataset(), progress=True,
          log_every=2, echo=lambda *a: None)
    last = capsys.readouterr().err.rstrip("\n").split("\r")[-1]
    assert len(last) <= 80 and re.search(r"test acc=\d\.\d{4}", last), last
