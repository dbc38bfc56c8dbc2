"""Issue 13: a runaway loss stops training with epoch and step named, the last good checkpoint and the
best weights are kept, and the run folder's files are derived from the checkpoint."""
import math

import numpy as np
import pytest

from dcnn.io import checkpoint
from dcnn.train.callbacks import Callback
from dcnn.utils.files import load_arrays, read_metadata
from dcnn.train.job import Diverged, Monitor, TrainConfig, train

from test_training import AtStep, run, tiny_dataset


pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


def quiet(*a):
    pass


class Inflate(AtStep):
    """Multiplies the last layer's weights by ``factor`` after (epoch, step): negative, so the right class
    becomes the least likely; the loss stays finite but huge."""

    def __init__(self, epoch, step, factor=-1e3):
        super().__init__(epoch, step)
        self.factor = factor

    def act(self, weight):
        weight[...] *= self.factor


class Snapshots(Callback):
    """The weights after each complete epoch (read after the Checkpointer wrote them)."""

    def __init__(self):
        self.states = {}

    def on_train_begin(self, net, epochs, steps):
        self.net = net

    def on_epoch_end(self, epoch, logs):
        self.states[epoch + 1] = {k: np.array(v, copy=True) for k, v in self.net.state_dict().items()}


def test_divergence_limit_follows_the_rule():
    m = Monitor(progress=False)
    m.uniform_loss = math.log(10)
    assert m.limit == pytest.approx(3 * math.log(10))        # nothing reached yet: ln C counts
    m.lowest = 0.2
    assert m.limit == pytest.approx(math.log(10))            # a trained model: worse than a guess
    m.lowest = 1.0
    assert m.limit == pytest.approx(3.0)
    m.lowest = 50.0                                           # blew up from the start: capped at ln C
    assert m.limit == pytest.approx(3 * math.log(10))


def test_a_finite_blow_up_on_resume_stops_and_keeps_the_good_model(tmp_path):
    """The issue's case: one good epoch, then --lr 1000 with Adam; the loss stays finite."""
    ds, out = tiny_dataset(n=320), tmp_path / "r"
    run(out, ds, epochs=1, lr=0.01)
    good = load_arrays(out / checkpoint.CHECKPOINT)[0]
    with pytest.raises(Diverged) as err:
        train(TrainConfig(epochs=4, lr=1000.0), out, resume=True, dataset=ds, progress=False, log_every=1,
              echo=quiet)
    message = str(err.value)
    assert "the loss diverged at epoch 2, step" in message
    assert "for 3 logging intervals in a row" in message and "ln(10)" in message
    assert "last good checkpoint (epoch 1)" in message and str(out / checkpoint.BEST) in message
    after = load_arrays(out / checkpoint.CHECKPOINT)[0]
    assert after.keys() == good.keys() and all(np.array_equal(after[k], good[k]) for k in good)
    assert read_metadata(out / checkpoint.WEIGHTS)["epoch"] == 1
    assert read_metadata(out / checkpoint.BEST)["epoch"] == 1


def test_a_blow_up_on_an_epochs_last_step_is_caught_by_the_next_epochs_training_loss(tmp_path):
    """Blown up on the epoch's last step: its training loss was still fine, so it is checkpointed (the
    test loss is not judged, issue 18); the next epoch's training loss stops the run, and
    best.safetensors keeps the epoch with the best test accuracy."""
    ds, out = tiny_dataset(n=96), tmp_path / "r"
    with pytest.raises(Diverged, match=r"diverged in epoch 3: its mean training loss was .* divergence limit") as err:
        run(out, ds, callbacks=[Inflate(1, 2)], epochs=4, lr=0.01)
    assert "last good checkpoint (epoch 2)" in str(err.value)
    history = checkpoint.load(out)[2]["history"]
    assert len(history["loss"]) == 2 and history["val_loss"][1] > 100     # what the old guard stopped on
    assert read_metadata(out / checkpoint.BEST)["epoch"] == 1


def test_a_run_that_blows_up_from_the_start_is_caught(tmp_path):
    ds = tiny_dataset(n=320)
    with pytest.raises(Diverged, match=r"diverged at epoch 1, step \d+.*no checkpoint was written"):
        train(TrainConfig(epochs=2, batch_size=32, seed=3, lr=0.01), tmp_path / "r", dataset=ds, progress=False,
              log_every=1, callbacks=[Inflate(0, 0)], echo=quiet)


def test_best_weights_are_kept_beside_the_last(tmp_path):
    ds, out, snaps = tiny_dataset(n=160), tmp_path / "r", Snapshots()
    result = run(out, ds, callbacks=[snaps], epochs=4, lr=0.02)
    best = checkpoint.best_epoch(result["history"])
    arrays, meta = load_arrays(out / checkpoint.BEST)
    assert meta["epoch"] == best and meta["val_accuracy"] == max(result["history"]["val_accuracy"])
    assert all(np.array_equal(arrays[k], snaps.states[best][k]) for k in arrays)
    last = load_arrays(out / checkpoint.WEIGHTS)[0]
    assert all(np.array_equal(last[k], snaps.states[4][k]) for k in last)


def test_best_epoch_is_the_earliest_highest_test_accuracy():
    assert checkpoint.best_epoch({"val_accuracy": [0.5, 0.9, 0.7, 0.9]}) == 2
    assert checkpoint.best_epoch({}) is None


def test_resume_repairs_files_left_behind_by_a_kill_during_the_last_save(tmp_path):
    """Killed after checkpoint.safetensors was replaced but before weights.safetensors was."""
    ds, out = tiny_dataset(), tmp_path / "r"
    run(out, ds, epochs=1)
    stale = (out / checkpoint.WEIGHTS).read_bytes()
    run(out, ds, epochs=2, resume=True)
    (out / checkpoint.WEIGHTS).write_bytes(stale)            # as if the kill came before this write
    (out / checkpoint.BEST).unlink(missing_ok=True)
    assert read_metadata(out / checkpoint.WEIGHTS)["epoch"] == 1
    run(out, ds, epochs=2, resume=True)                      # "nothing to do", but the folder is repaired
    model = checkpoint.load(out)[0]
    weights, meta = load_arrays(out / checkpoint.WEIGHTS)
    assert meta["epoch"] == 2 and all(np.array_equal(weights[k], model[k]) for k in model)
    history = checkpoint.load(out)[2]["history"]
    if checkpoint.best_epoch(history) == 2:
        assert read_metadata(out / checkpoint.BEST)["epoch"] == 2


def test_evaluate_of_a_run_folder_uses_the_checkpoint_when_the_weights_file_lags(tmp_path):
    from dcnn.io.loading import load_trained
    ds, out = tiny_dataset(), tmp_path / "r"
    run(out, ds, epochs=1)
    stale = (out / checkpoint.WEIGHTS).read_bytes()
    run(out, ds, epochs=2, resume=True)
    (out / checkpoint.WEIGHTS).write_bytes(stale)
    net, meta, _ = load_trained(out)
    assert meta["epoch"] == 2
    model = checkpoint.load(out)[0]
    assert all(np.array_equal(v, model[k]) for k, v in net.state_dict().items())
