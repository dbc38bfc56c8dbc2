"""Keras-named callbacks: EarlyStopping, ModelCheckpoint, CSVLogger, learning-rate schedules, verbose levels."""
import csv
import math

import numpy as np
import pytest

import dcnn
from dcnn.train.callbacks import (CosineDecay, CSVLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint,
                                  OneCycleLR, StepDecay, one_cycle)
from dcnn.train.job import LRSchedule


pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 6, 6), np.float32)
    y = (x[:, 0, :3].mean(axis=(1, 2)) > x[:, 0, 3:].mean(axis=(1, 2))).astype(np.int64)
    return x, y


def small_net(lr=0.05):
    net = dcnn.DCNNetwork([dcnn.Conv2D(4, 3, padding=1), dcnn.ReLU(), dcnn.Flatten(), dcnn.Dense(2)],
                          input_shape=(1, 6, 6), seed=1)
    return net.compile("sgd", lr=lr, momentum=0.9)


class _Optimizer:
    lr = 1.0


class _Net:
    """Just what the callbacks touch."""
    def __init__(self):
        self.optimizer, self.stop_training, self.weights = _Optimizer(), False, {"w": np.zeros(1)}

    def state_dict(self):
        return {k: v.copy() for k, v in self.weights.items()}

    def load_state_dict(self, arrays, source=""):
        self.weights = dict(arrays)


def rates(schedule, epochs=4, steps=5):
    net = _Net()
    schedule.on_train_begin(net, epochs, steps)
    seen = []
    for epoch in range(epochs):
        schedule.on_epoch_begin(epoch)
        for step in range(steps):
            seen.append(net.optimizer.lr)
            schedule.on_batch_end(step, {})
    return seen


def test_schedules():
    assert rates(OneCycleLR(1.0)) == rates(LRSchedule(1.0, "onecycle", 4))     # one maths, dcnn train's
    assert rates(OneCycleLR(1.0))[0] == pytest.approx(0.1) and max(rates(OneCycleLR(1.0))) <= 1.0
    assert one_cycle(2.0, 1.0) == pytest.approx(0.02)
    cosine = rates(CosineDecay(1.0, alpha=0.1))
    assert cosine[0] == 1.0 and cosine[10] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))
    assert rates(StepDecay(1.0, step_size=2, gamma=0.5))[::5] == [1.0, 1.0, 0.5, 0.5]
    assert rates(LRSchedule(0.3, "constant", 4)) == [0.3] * 20


def test_learning_rate_scheduler_per_epoch():
    net = _Net()
    cb = LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)
    cb.on_train_begin(net, 3, 1)
    seen = []
    for epoch in range(3):
        cb.on_epoch_begin(epoch)
        seen.append(net.optimizer.lr)
    assert seen == [1.0, 0.5, 0.25]
    bad = LearningRateScheduler(lambda e, lr: -1.0)
    bad.on_train_begin(net, 1, 1)
    with pytest.raises(ValueError, match="positive"):
        bad.on_epoch_begin(0)


def test_early_stopping_waits_patience_epochs_and_restores_the_best():
    net = _Net()
    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    stop.on_train_begin(net, 10, 1)
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.55]):
        net.weights = {"w": np.array([float(epoch)])}
        stop.on_epoch_end(epoch, {"val_loss": loss})
        assert net.stop_training == (epoch == 3)
    stop.on_train_end()
    assert stop.stopped_epoch == 3 and stop.best_epoch == 1 and net.weights["w"][0] == 1.0
    acc = EarlyStopping(monitor="val_accuracy", min_delta=0.05, patience=1)
    acc.on_train_begin(net := _Net(), 10, 1)
    acc.on_epoch_end(0, {"val_accuracy": 0.5})
    acc.on_epoch_end(1, {"val_accuracy": 0.53})       # not better by min_delta: mode "max" from the name
    assert net.stop_training


def test_checkpoint_and_csv_logger_in_fit(tmp_path):
    x, y = data()
    net = small_net()
    history = net.fit(x, y, epochs=3, batch_size=16, validation_data=data(32, seed=1), verbose=0, callbacks=[
        ModelCheckpoint(tmp_path / "m-{epoch:02d}.safetensors"),
        ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy", save_best_only=True),
        CSVLogger(tmp_path / "log.csv")])
    assert sorted(p.name for p in tmp_path.glob("m-*")) == ["m-01.safetensors", "m-02.safetensors", "m-03.safetensors"]
    last = dcnn.load(tmp_path / "m-03.safetensors")
    np.testing.assert_allclose(last.predict(x), net.predict(x), rtol=1e-6)
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1
    assert dcnn.load(tmp_path / "best.safetensors").metadata["epoch"] == best_epoch
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    np.testing.assert_allclose([float(r["val_loss"]) for r in rows], history["val_loss"])


def test_early_stopping_in_fit_stops_training():
    x, y = data()
    net = small_net(lr=1e-9)     # learns nothing: val_loss never improves after the first epoch
    history = net.fit(x, y, epochs=20, batch_size=16, validation_data=data(32, seed=1), verbose=0,
                      callbacks=[EarlyStopping(patience=2, min_delta=1e-3)])
    assert len(history["loss"]) == 3


def test_verbose_levels(capsys):
    x, y = data(32)
    small_net().fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert capsys.readouterr() == ("", "")
    small_net().fit(x, y, epochs=2, batch_size=16, verbose=2)
    out, err = capsys.readouterr()
    assert out.count("\n") == 2 and out.startswith("epoch 1/2  loss=") and err == ""
    small_net().fit(x, y, epochs=2, batch_size=16, verbose=1)
    out, err = capsys.readouterr()
    assert "epoch 2/2" in err and "2/2 [" in err and "accuracy=" in err and out == ""
    with pytest.raises(ValueError, match="verbose must be"):
        small_net().fit(x, y, verbose=3)


def test_summary_prints_once_and_counts_trainable_and_frozen(capsys):
    net = dcnn.presets.get_preset("seed").build((1, 28, 28), 10)
    assert net.summary() is None
    out = capsys.readouterr().out
    assert out.count("total parameters") == 1
    trainable, frozen = net.parameter_counts()
    assert frozen == 2 * 9 + 2 and f"trainable: {trainable:,}" in out      # the frozen edge filters and biases
    assert net.summary(print_fn=None).count("non-trainable") == 1 and capsys.readouterr().out == ""
    text = repr(net)
    assert text.startswith("DCNNetwork(input_shape=(1, 28, 28)") and "(0): ConvBlock(" in text
