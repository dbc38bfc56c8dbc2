"""The run folder that ``dcnn train`` writes into: checked, locked and tidied before training starts.

- ``open_run_folder`` creates the folder, proves it can be written (a small file written
  atomically and removed: a read-only or full filesystem, a folder without write permission,
  an ``--out`` that is or lies under a regular file all fail here, before any epoch is spent);
- it takes an OS lock (``fcntl.flock`` on ``.lock``) for the whole run, so a second writer is
  refused instead of mixing two runs in one folder; the lock goes with the process, even on
  ``kill -9``;
- holding the lock, it removes temporary files that an earlier, killed writer of this folder
  left behind (``.<name>.*.tmp`` from ``fileio.atomic_write_bytes``).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from ..utils.files import atomic_write_bytes

LOCK = ".lock"
# Files we write into a run folder; their temporaries are .<name>.<random>.tmp.
OWN_FILES = ("checkpoint.safetensors", "weights.safetensors", "best.safetensors", "config.json", "history.json",
             "curves.png", ".write-test")


class RunFolderError(OSError):
    """The run folder cannot be used: the message says which folder, why, and what to do."""

    def __init__(self, code: int, message: str):
        super().__init__(code, message)

    def __str__(self):
        return self.strerror


def describe_os_error(exc: OSError) -> str:
    """A short reason for a failed write, with the usual remedy."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return "the disk is full (no space left on device); free some space"
    if exc.errno == errno.EROFS:
        return "the filesystem is read-only; choose another --out"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; choose a folder you can write to with --out"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a regular file stands where a folder should be; choose another --out"
    return exc.strerror or str(exc)


class RunFolder:
    """An open, locked run folder; ``close`` (or the with-block's end) releases the lock."""

    def __init__(self, path: Path, fd: int, removed: list[str]):
        self.path, self._fd, self.removed_leftovers = path, fd, removed

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)          # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_run_folder(out_dir) -> RunFolder:
    import fcntl  # POSIX only; imported here so that the rest of dcnn still imports elsewhere

    path = Path(out_dir)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise RunFolderError(errno.ENOTDIR, f"cannot use {path} as the run folder: {parent} is a regular file, "
                                                "not a folder; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunFolderError(exc.errno, f"cannot create the run folder {path}: {describe_os_error(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunFolderError(errno.EBUSY, f"{path} is in use by another dcnn train (process {holder}); wait for "
                                              "it to finish, or choose another --out") from None
        raise RunFolderError(exc.errno, f"cannot lock {path}: {describe_os_error(exc)}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        removed = _remove_leftovers(path)
        probe = path / ".write-test"
        atomic_write_bytes(probe, b"dcnn checks that this folder can be written before training\n")
        probe.unlink()
    except OSError as exc:
        os.close(fd)
        raise RunFolderError(exc.errno, f"cannot write into the run folder {path}: {describe_os_error(exc)}") \
            from None
    return RunFolder(path, fd, removed)


def _remove_leftovers(path: Path) -> list[str]:
    """Temporaries of our own files, left by a writer killed mid-write (we hold the lock: none is live)."""
    removed = []
    for name in OWN_FILES:
        for tmp in path.glob(f".{name}.*.tmp"):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp.name)
    return removed
