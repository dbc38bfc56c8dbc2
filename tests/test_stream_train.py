"""``dcnn train --data FOLDER --workers N``: the folder streamed through the Loader (issue 22, phase 2).

Tiny folders (16x16 pictures, a few dozen), lenet, the numpy backend: each test takes seconds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dcnn import cli, datasets
from dcnn.data.loader import SkippedImagesWarning
from dcnn.io import checkpoint
from dcnn.model.callbacks import Callback
from dcnn.train.job import TrainConfig, train
from test_loader import make_folder

pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pics(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("stream") / "pics", per_class=(20, 20, 20), size=16, test=4)


def dcnn(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _never_decode_all(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the folder was decoded into memory")
    monkeypatch.setattr(datasets, "load", refuse)


def test_a_folder_trains_streamed_and_is_never_decoded_whole(pics, tmp_path, capsys, monkeypatch):
    _never_decode_all(monkeypatch)
    rc, out, err = dcnn(capsys, "train", "--data", pics, "--workers", 0, "--model", "lenet", "--epochs", 1,
                        "--batch-size", 8, "--out", tmp_path / "run", "--json", "--log-every", 2)
    assert rc == 0, err
    result = json.loads(out)
    assert result["train_images"] == 60 and result["test_images"] == 12 and result["epochs"] == 1
    assert result["test_accuracy"] is not None
    # the progress bar shows each step's wait for data
    assert "ms/step" in err and " data " in err
    _, _, meta = checkpoint.load(tmp_path / "run")
    assert meta["config"]["stream"] is True and meta["epoch"] == 1


def test_streamed_images_are_shaped_by_image_size_and_channels(pics, tmp_path, capsys, monkeypatch):
    _never_decode_all(monkeypatch)
    rc, out, err = dcnn(capsys, "train", "--data", pics, "--workers", 0, "--model", "lenet", "--epochs", 1,
                        "--batch-size", 16, "--image-size", "12x12", "--channels", 1, "--out", tmp_path / "run",
                        "--json", "--no-progress", "--limit", 20)
    assert rc == 0, err
    assert json.loads(out)["train_images"] == 20
    _, _, meta = checkpoint.load(tmp_path / "run")
    assert meta["input_shape"] == [1, 12, 12]


def test_stream_options_without_a_folder_are_clear_errors(pics, tmp_path, capsys):
    rc, _, err = dcnn(capsys, "train", "--workers", 2, "--out", tmp_path / "a")
    assert rc == 2 and "dcnn: error: --workers streams an image folder" in err
    rc, _, err = dcnn(capsys, "train", "--data", pics, "--strict-data", "--out", tmp_path / "b")
    assert rc == 2 and "dcnn: error: --strict-data applies to a streamed image folder: add --workers N" in err
    rc, _, err = dcnn(capsys, "train", "--data", pics, "--workers", 0, "--val-split", 0.1, "--out", tmp_path / "c")
    assert rc == 2 and "dcnn: error: --val-split cannot be used with --workers" in err


def test_a_bad_file_is_skipped_with_a_warning_or_stops_with_strict_data(tmp_path, capsys):
    folder = make_folder(tmp_path / "pics", per_class=(8, 8), size=16, test=2)
    bad = folder / "train" / "class0" / "broken.jpg"
    bad.write_text("not a picture")
    with pytest.warns(SkippedImagesWarning, match=r"1 image of pics/train could not be read .*broken\.jpg"):
        rc, out, err = dcnn(capsys, "train", "--data", folder, "--workers", 0, "--model", "lenet", "--epochs", 1,
                            "--batch-size", 4, "--out", tmp_path / "lenient", "--json", "--no-progress")
    assert rc == 0, err
    rc, out, err = dcnn(capsys, "train", "--data", folder, "--workers", 0, "--strict-data", "--model", "lenet",
                        "--epochs", 1, "--batch-size", 4, "--out", tmp_path / "strict", "--no-progress")
    assert rc != 0 and "dcnn: error:" in err and "broken.jpg cannot be read" in err and "Traceback" not in err


class _Crash(Callback):
    """Raise at (epoch, step): a crash after a mid-epoch checkpoint."""

    def __init__(self, epoch, step):
        self.at = (epoch, step)

    def on_epoch_begin(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, step, logs):
        if (self.epoch, step) == self.at:
            raise RuntimeError("crash")


def _weights(out):
    model, _, meta = checkpoint.load(out)
    return model, meta


def test_a_mid_epoch_checkpoint_resumes_to_bit_identical_weights(pics, tmp_path):
    config = TrainConfig(dataset=str(pics), model="lenet", epochs=2, batch_size=4, stream=True, augment=True)
    opts = dict(progress=False, echo=lambda *a, **k: None, workers=0, checkpoint_every=4)
    whole = train(config, tmp_path / "whole", **opts)
    with pytest.raises(RuntimeError, match="crash"):
        train(config, tmp_path / "split", callbacks=[_Crash(1, 9)], **opts)
    _, meta = _weights(tmp_path / "split")
    assert meta["epoch"] == 1 and meta["mid_epoch"]["step"] == 8       # the checkpoint at step 8 of epoch 2
    rest = train(TrainConfig(), tmp_path / "split", resume=True, requested={}, **opts)
    a, meta_a = _weights(tmp_path / "whole")
    b, meta_b = _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert meta_a["history"]["loss"] == meta_b["history"]["loss"]
    assert meta_a["history"]["accuracy"] == meta_b["history"]["accuracy"]
    assert rest["test_accuracy"] == whole["test_accuracy"] and "mid_epoch" not in meta_b


_DCNN = "import sys; from dcnn.cli import main; sys.exit(main(sys.argv[1:]))"


def _run(*argv, popen=False):
    cmd = [sys.executable, "-c", _DCNN, *map(str, argv)]
    env = {**os.environ, "DCNN_BACKEND": "numpy", "PYTHONPATH": str(ROOT)}
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_kill_9_at_a_random_step_then_resume_gives_bit_identical_weights(pics, tmp_path):
    argv = ("train", "--data", pics, "--workers", 0, "--model", "lenet", "--epochs", 3, "--batch-size", 2,
            "--checkpoint-every", 3, "--augment", "--no-progress")
    whole = _run(*argv, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    proc = _run(*argv, "--out", out, popen=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / checkpoint.CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(float(np.random.default_rng().uniform(0, 0.5)))      # a random step, mid-write or not
    finally:
        proc.kill()
        proc.communicate()
    done = _run("train", "--resume", "--out", out, "--workers", 0, "--no-progress")
    assert done.returncode == 0, done.stderr
    a, meta_a = _weights(tmp_path / "whole")
    b, meta_b = _weights(out)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert meta_a["history"]["loss"] == meta_b["history"]["loss"] and meta_b["epoch"] == 3


def test_two_workers_train_the_same_weights_as_none(pics, tmp_path):
    pytest.importorskip("grain")
    argv = ("train", "--data", pics, "--model", "lenet", "--epochs", 1, "--batch-size", 8, "--augment",
            "--no-progress", "--json")
    runs = {n: _run(*argv, "--workers", n, "--out", tmp_path / f"w{n}") for n in (0, 2)}
    for run in runs.values():
        assert run.returncode == 0, run.stderr
    a, meta_a = _weights(tmp_path / "w0")
    b, meta_b = _weights(tmp_path / "w2")
    assert all(np.array_equal(a[k], b[k]) for k in a) and meta_a["history"]["loss"] == meta_b["history"]["loss"]


def test_a_source_pickled_from_several_threads_at_once_comes_back_whole():
    """grain pickles the source for each worker from its own thread: the spilled index must be written
    once, whole, before any of them maps it (a race once left a worker an empty file)."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    from dcnn.data.sources import ImageFiles
    paths = [f"/data/class{i % 7}/{i:07d}.jpg" for i in range(60_000)]
    for _ in range(3):
        source = ImageFiles(paths, np.arange(60_000) % 7, [f"class{c}" for c in range(7)])
        with ThreadPoolExecutor(8) as pool:
            blobs = list(pool.map(lambda _: pickle.dumps(source), range(8)))
        for blob in blobs:
            back = pickle.loads(blob)
            assert len(back) == 60_000 and back.describe(59_999) == paths[-1]


def test_a_dead_worker_is_one_clear_error_line(pics, tmp_path, capsys, monkeypatch):
    from dcnn.data.loader import WorkerError
    from dcnn.train import job

    def dies(*args, **kwargs):
        raise WorkerError("a data loader worker process was killed by SIGKILL (signal 9)")
    monkeypatch.setattr(job.fitting, "fit_loader", dies)
    rc, _, err = dcnn(capsys, "train", "--data", pics, "--workers", 2, "--model", "lenet", "--epochs", 1,
                      "--out", tmp_path / "run", "--no-progress")
    assert rc == 1 and "Traceback" not in err
    assert "dcnn: error: a data loader worker process was killed by SIGKILL" in err
    assert "No checkpoint was written yet" in err and not (tmp_path / "run").exists()


def test_a_folder_too_big_for_memory_streams_without_being_asked(pics, tmp_path, capsys, monkeypatch):
    """``dcnn train --data FOLDER`` alone: a folder larger than memory allows is streamed, never decoded whole."""
    import dcnn.train.stream as stream
    _never_decode_all(monkeypatch)
    monkeypatch.setattr(stream, "memory_budget", lambda: 10_000)      # as if the machine had little memory
    rc, out, err = dcnn(capsys, "train", "--data", pics, "--model", "lenet", "--epochs", 1, "--batch-size", 8,
                        "--out", tmp_path / "run", "--no-progress")
    assert rc == 0, err
    assert "72 pictures" in out and "GiB once decoded" in out and "streaming them with" in out
    _, _, meta = checkpoint.load(tmp_path / "run")
    assert meta["config"]["stream"] is True
    monkeypatch.undo()
    monkeypatch.setattr(stream, "memory_budget", lambda: 1 << 40)     # it fits: loaded whole, as before
    rc, out, err = dcnn(capsys, "train", "--data", pics, "--model", "lenet", "--epochs", 1, "--batch-size", 8,
                        "--out", tmp_path / "small", "--no-progress", "--limit", 8)
    assert rc == 0, err
    assert "streaming" not in out and checkpoint.load(tmp_path / "small")[2]["config"]["stream"] is False
