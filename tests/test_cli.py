"""The dcnn command: train (JSON, resume), evaluate, predict, info, and one-line errors.

Most tests run ``dcnn.cli.main`` in-process on tiny IDX files; the last ones run
the command in a child process: the CI accuracy check on the real Fashion-MNIST
(skipped when it is not installed), a kill -9 at a random moment and Ctrl-C.
"""
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dcnn.io import checkpoint
from dcnn import cli
from dcnn.data import datasets
from test_datasets import write_idx_dataset

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not SYSTEM_FASHION.is_dir(),
    reason="the real Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A folder of tiny Fashion-MNIST-format files; checksums are skipped for them."""
    write_idx_dataset(tmp_path / "data", n_train=48, n_test=20)
    monkeypatch.setattr(datasets, "load", functools.partial(datasets.load, verify=False))
    monkeypatch.delenv("DCNN_DATA", raising=False)
    return tmp_path


def dcnn(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def train_tiny(capsys, tiny, *extra):
    return dcnn(capsys, "train", "--data-dir", tiny / "data", "--model", "lenet", "--epochs", 1, "--batch-size", 16,
                "--out", tiny / "run", "--no-progress", *extra)


def test_train_json_evaluate_predict(tiny, capsys):
    rc, out, err = train_tiny(capsys, tiny, "--json")
    assert rc == 0, err
    assert "after 1 epoch\n" in err and "1 epochs" not in err and "  1 epoch, batch 16" in err
    result = json.loads(out)                       # stdout is exactly one JSON object
    for key in ("dataset", "model", "backend", "epochs", "seconds", "train_loss", "test_accuracy",
                "images_per_second"):
        assert result[key] is not None, key
    assert result["dataset"] == "fashion-mnist" and result["model"] == "lenet" and result["epochs"] == 1
    assert "test_accuracy" in err                  # the human-readable lines went to stderr

    rc, out, err = dcnn(capsys, "evaluate", tiny / "run")
    assert rc == 0, err
    assert "accuracy:" in out and "confusion matrix" in out and "Ankle boot" in out
    rc, out, _ = dcnn(capsys, "evaluate", tiny / "run" / "weights.safetensors", "--json")
    report = json.loads(out)
    assert np.sum(report["confusion_matrix"]) == 20 and len(report["per_class_accuracy"]) == 10
    assert report["accuracy"] == pytest.approx(np.trace(report["confusion_matrix"]) / 20)

    from PIL import Image
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(tiny / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tiny / "b.jpg")
    rc, out, err = dcnn(capsys, "predict", tiny / "run", tiny / "a.png", tiny / "b.jpg", "--top", 2)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(tiny / "a.png")) and "%" in lines[1]
    rc, out, _ = dcnn(capsys, "predict", tiny / "run", tiny / "a.png", "--json")
    top = json.loads(out)["predictions"][0]["top"]
    probs = [t["probability"] for t in top]
    assert len(top) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6


def test_resume_from_the_command_line(tiny, capsys):
    assert train_tiny(capsys, tiny)[0] == 0
    rc, _, err = train_tiny(capsys, tiny)
    assert rc == 1 and "already holds a run" in err and "--resume" in err
    rc, out, err = dcnn(capsys, "train", "--out", tiny / "run", "--resume", "--epochs", 2, "--json",
                        "--no-progress", "--data-dir", tiny / "data")
    assert rc == 0, err
    assert json.loads(out)["epochs"] == 2 and "resuming" in err
    rc, _, err = dcnn(capsys, "train", "--out", tiny / "run", "--resume", "--batch-size", 8, "--data-dir",
                      tiny / "data")
    assert rc == 1 and "--batch-size 8 differs" in err


@pytest.mark.parametrize("argv, expected", [
    (["train", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["train", "--model", "resnet50"], "unknown model preset 'resnet50'"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "--lr", "-1"], "--lr: must be a positive number"),
    (["train", "--backend", "tpu"], "unknown backend 'tpu'"),
    (["evaluate", "missing.safetensors"], "weights file not found: missing.safetensors"),
    (["predict", "missing", "x.png"], "weights file not found"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_line_and_no_traceback(capsys, argv, expected):
    rc, out, err = dcnn(capsys, *argv)
    assert rc != 0
    assert err.count("\n") == 1 and err.startswith("dcnn: error:") and expected in err, err
    assert "Traceback" not in err


def test_weights_that_do_not_fit_the_preset(tiny, capsys):
    assert train_tiny(capsys, tiny)[0] == 0
    rc, _, err = dcnn(capsys, "evaluate", tiny / "run", "--model", "convnet")
    assert rc == 1 and "do not fit the 'convnet' preset" in err and err.count("\n") == 1
    (tiny / "junk.safetensors").write_bytes(b"\x00" * 20)
    rc, _, err = dcnn(capsys, "predict", tiny / "junk.safetensors", tiny / "x.png")
    assert rc == 1 and "junk.safetensors" in err and "Traceback" not in err


def test_predict_without_pillow_says_how_to_get_it(tiny, capsys, monkeypatch):
    assert train_tiny(capsys, tiny)[0] == 0
    (tiny / "a.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL", None)
    rc, _, err = dcnn(capsys, "predict", tiny / "run", tiny / "a.png")
    assert rc == 1 and "pip install pillow" in err


def test_predict_rejects_a_file_that_is_not_an_image(tiny, capsys):
    assert train_tiny(capsys, tiny)[0] == 0
    (tiny / "notes.png").write_text("hello")
    rc, _, err = dcnn(capsys, "predict", tiny / "run", tiny / "notes.png")
    assert rc == 1 and "notes.png is not a readable image" in err


def test_info_says_which_backend_and_why(capsys):
    rc, out, _ = dcnn(capsys, "info")
    first = out.splitlines()[0]
    assert rc == 0 and first.startswith("backend:   numpy  (") and len(first) > 25   # ... and why
    assert "device:" in out and "versions:" in out and "numpy" in out
    rc, out, _ = dcnn(capsys, "info", "--json")
    info = json.loads(out)
    assert info["backend"] == "numpy" and info["reason"] and "numpy" in info["versions"]
    assert info["presets"][0] == "convnet"


def test_confusion_matrix():
    from dcnn.train.metrics import confusion_matrix
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


# --- the real thing, as a user runs it ------------------------------------------------------------

def run_dcnn(*argv, timeout=600):
    env = {**os.environ, "DCNN_BACKEND": "numpy"}
    return subprocess.run([sys.executable, "-m", "dcnn", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_python_dash_m_one_line_error():
    proc = run_dcnn("train", "--batch-size", "0", timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@needs_fashion_mnist
@pytest.mark.slow
def test_ci_real_fashion_mnist_10k_images_2_epochs(tmp_path):
    """The issue's bar: 10,000 real training images, 2 epochs, >= 0.85 on the 10,000 test images, ~2 min."""
    started = time.perf_counter()
    proc = run_dcnn("train", "--limit", 10000, "--epochs", 2, "--out", tmp_path / "run", "--json", "--no-progress")
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    print(f"\n{result['model']}: test accuracy {result['test_accuracy']:.4f} in {seconds:.1f}s "
          f"({result['images_per_second']:.0f} img/s)")
    assert result["train_images"] == 10000 and result["epochs"] == 2
    assert result["test_accuracy"] >= 0.85
    # The ~2-minute budget is reported above, not asserted: speed belongs in benchmarks, not tests.


def _wait_for_checkpoint(proc, out, timeout=120):
    deadline = time.monotonic() + timeout
    while not (out / checkpoint.CHECKPOINT).exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


# ``dcnn`` in a child process, with the checksums off for the tiny files (as the ``tiny`` fixture does).
_UNVERIFIED_DCNN = ("import functools, sys; import dcnn.datasets as d; "
                    "d.load = functools.partial(d.load, verify=False); "
                    "from dcnn.cli import main; sys.exit(main(sys.argv[1:]))")


def _spawn_training(tmp_path, *extra):
    write_idx_dataset(tmp_path / "data", n_train=400, n_test=20)
    args = ["train", "--model", "lenet", "--data-dir", tmp_path / "data", "--epochs", 100000, "--batch-size", 50,
            "--out", tmp_path / "run", "--no-progress", *extra]
    return subprocess.Popen([sys.executable, "-c", _UNVERIFIED_DCNN, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "DCNN_BACKEND": "numpy"})


def test_kill_9_at_a_random_moment_leaves_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _spawn_training(tmp_path)
    try:
        _wait_for_checkpoint(proc, out)
        time.sleep(float(np.random.default_rng().uniform(0, 2)))   # anywhere: mid-batch, mid-write...
    finally:
        proc.kill()
        proc.communicate()
    model, _, meta = checkpoint.load(out)                            # the last complete checkpoint
    assert meta["epoch"] >= 1 and len(meta["history"]["loss"]) == meta["epoch"]
    assert all(np.isfinite(v).all() for v in model.values())
    done = subprocess.run([sys.executable, "-c", _UNVERIFIED_DCNN, "train", "--resume", "--out", str(out),
                           "--epochs", str(meta["epoch"] + 1), "--json", "--no-progress"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "DCNN_BACKEND": "numpy"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs"] == meta["epoch"] + 1


def test_ctrl_c_exits_130_with_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _spawn_training(tmp_path)
    try:
        _wait_for_checkpoint(proc, out)
        time.sleep(float(np.random.default_rng().uniform(0, 0.5)))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at" in err and "--resume" in err and "Traceback" not in err
    _, _, meta = checkpoint.load(out)
    assert meta["epoch"] >= 1


def test_default_output_folders_are_numbered_and_resume_takes_the_latest(tiny, capsys, monkeypatch):
    monkeypatch.chdir(tiny)
    args = ("train", "--data-dir", tiny / "data", "--model", "lenet", "--epochs", 1, "--batch-size", 16,
            "--no-progress", "--json")
    assert json.loads(dcnn(capsys, *args)[1])["out"] == str(Path("runs") / "fashion-mnist-lenet")
    assert json.loads(dcnn(capsys, *args)[1])["out"] == str(Path("runs") / "fashion-mnist-lenet-2")
    rc, out, err = dcnn(capsys, "train", "--model", "lenet", "--resume", "--epochs", 2, "--json", "--no-progress")
    assert rc == 0, err
    assert json.loads(out)["out"] == str(Path("runs") / "fashion-mnist-lenet-2") and json.loads(out)["epochs"] == 2
