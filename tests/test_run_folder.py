"""Issue 13, disks and processes: the run folder is checked, locked and tidied before training; a failed
write is a named error that keeps the last checkpoint; a closed stdout does not crash evaluate or train."""
import errno
import json
import os
import subprocess
import sys

import pytest

from dcnn.io import checkpoint
from dcnn import cli
from dcnn.utils import files as fileio
from dcnn.io.runfolder import LOCK, RunFolderError, open_run_folder
from dcnn.train.job import TrainConfig, train

from test_cli import _UNVERIFIED_DCNN, _spawn_training, _wait_for_checkpoint, dcnn, tiny, train_tiny  # noqa: F401
from test_training import tiny_dataset


pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


class Untouched:
    """A dataset stand-in that fails the test if training ever reads it."""

    def limit(self, count):
        raise AssertionError("training started before the output was checked")


def start(out, dataset=None, resume=False, epochs=1, **kwargs):
    return train(TrainConfig(epochs=epochs, batch_size=32, seed=3), out, resume=resume,
                 dataset=dataset or Untouched(), progress=False, echo=lambda *a: None, **kwargs)


def test_out_that_is_a_regular_file_is_refused_before_training(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match=r"f is a regular file, not a folder; choose another --out"):
        start(tmp_path / "f")
    with pytest.raises(RunFolderError, match=r"cannot use .*f/run as the run folder: .*f is a regular file"):
        start(tmp_path / "f" / "run")


def test_cli_out_under_a_regular_file_is_one_line(tiny, capsys):
    (tiny / "f").write_text("x")
    rc, out, err = dcnn(capsys, "train", "--data-dir", tiny / "data", "--model", "lenet", "--epochs", 1,
                        "--out", tiny / "f" / "run", "--no-progress")
    assert rc == 1 and err.startswith("dcnn: error: cannot use") and err.count("\n") == 1


@pytest.mark.parametrize("code,reason", [(errno.EROFS, "the filesystem is read-only"),
                                         (errno.ENOSPC, "the disk is full"),
                                         (errno.EACCES, "permission denied")])
def test_unwritable_output_is_found_before_training(tmp_path, monkeypatch, code, reason):
    """Test doubles for a read-only filesystem, a full disk and a folder without write permission
    (the tests run as root, for whom chmod does not stop writes)."""
    def refuse(path, data):
        raise OSError(code, os.strerror(code), str(path))
    monkeypatch.setattr("dcnn.io.runfolder.atomic_write_bytes", refuse)
    with pytest.raises(RunFolderError, match=f"cannot write into the run folder .*: {reason}"):
        start(tmp_path / "r")


class FullDisk:
    """fileio.atomic_write_bytes that fails with ENOSPC after ``allowed`` writes, as a disk filling up."""

    def __init__(self, allowed):
        self.allowed, self.real = allowed, fileio.atomic_write_bytes

    def __call__(self, path, data):
        if self.allowed <= 0:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        self.allowed -= 1
        self.real(path, data)


def test_disk_full_after_epoch_1_is_named_and_keeps_that_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "r"
    # Epoch 1 writes checkpoint, weights, best, config and history: 5 files.
    monkeypatch.setattr(fileio, "atomic_write_bytes", FullDisk(allowed=5))
    with pytest.raises(RunFolderError, match=r"could not write the checkpoint of epoch 2 into .*: the disk is full "
                                             r".* the checkpoint of epoch 1 is intact; continue with: dcnn train "
                                             r"--resume"):
        start(out, dataset=tiny_dataset(), epochs=3)
    assert checkpoint.load(out)[2]["epoch"] == 1
    assert not list(out.glob(".*.tmp"))


def test_own_leftover_temporary_files_are_removed_others_kept(tmp_path):
    out = tmp_path / "r"
    start(out, dataset=tiny_dataset())
    leftover = out / ".checkpoint.safetensors.k3j2_x.tmp"
    leftover.write_bytes(b"half a checkpoint")
    foreign = out / ".notes.txt.tmp"
    foreign.write_text("someone else's")
    lines = []
    train(TrainConfig(epochs=2), out, resume=True, dataset=tiny_dataset(), progress=False, echo=lines.append)
    assert not leftover.exists() and foreign.exists()
    assert any("removed 1 temporary file" in line and leftover.name in line for line in lines)


def test_a_second_writer_is_refused_while_the_folder_is_locked(tmp_path):
    out = tmp_path / "r"
    with open_run_folder(out):
        with pytest.raises(RunFolderError, match=rf"is in use by another dcnn train \(process {os.getpid()}\)"):
            start(out)
    start(out, dataset=tiny_dataset())                 # released: the folder can be used again
    assert (out / LOCK).exists()


def test_a_second_process_on_the_same_out_is_refused(tmp_path, capsys):
    proc = _spawn_training(tmp_path)
    try:
        _wait_for_checkpoint(proc, tmp_path / "run")
        rc, _, err = dcnn(capsys, "train", "--resume", "--out", tmp_path / "run", "--no-progress")
    finally:
        proc.kill()
        proc.communicate()
    assert rc == 1 and "is in use by another dcnn train (process" in err and err.count("\n") == 1


def _into_closed_pipe(args):
    """Runs dcnn with its stdout closed by the reader before anything is written (`dcnn ... | true`):
    every write then meets a closed pipe, whatever the pipe's buffer size."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-c", _UNVERIFIED_DCNN, *map(str, args)], stdout=write_end,
                              stderr=subprocess.PIPE, env={**os.environ, "DCNN_BACKEND": "numpy"}, timeout=300)
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr.decode()


def test_evaluate_into_a_closed_pipe_exits_quietly(tiny, capsys):
    assert train_tiny(capsys, tiny)[0] == 0
    rc, err = _into_closed_pipe(["evaluate", tiny / "run"])
    assert rc == cli.EXIT_BROKEN_PIPE and err == ""


def test_train_into_a_closed_pipe_keeps_training_to_its_checkpoints(tiny):
    rc, err = _into_closed_pipe(["train", "--data-dir", tiny / "data", "--model", "lenet", "--epochs", 3,
                                 "--batch-size", 16, "--out", tiny / "run", "--no-progress"])
    assert rc == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert checkpoint.load(tiny / "run")[2]["epoch"] == 3
    assert json.loads((tiny / "run" / checkpoint.HISTORY).read_text())["epochs_done"] == 3


def test_a_fresh_run_never_overwrites_a_finished_one(tmp_path):
    """The CLI checks before it starts; train() checks again holding the lock (two fresh runs racing)."""
    out = tmp_path / "r"
    start(out, dataset=tiny_dataset())
    before = (out / checkpoint.CHECKPOINT).read_bytes()
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        start(out, dataset=tiny_dataset())
    assert (out / checkpoint.CHECKPOINT).read_bytes() == before
