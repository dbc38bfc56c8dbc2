"""The run folder that ``dcnn train`` writes into: checked, locked and tidied before training starts.

- ``open_run_folder`` creates the folder, proves it can be written (a small file written
  atomically and removed: a read-only or full filesystem, a folder without write permission,
  an ``--out`` that is or lies under a regular file all fail here, before any epoch is spent);
- it takes an OS lock (``fcntl.flock`` on ``.lock``) for the whole run, so a second writer is
  refused instead of mixing two runs in one folder; the lock goes with the process, even on
  ``kill -9``;
- holding the lock, it removes temporary files that an earlier, killed writer of this folder
  left behind (``.<name>.*.tmp`` from ``fileio.atomic_write_bytes``);
- ``.lock`` holds the holder's process id while it is held and is emptied when released, so a
  finished or failed run leaves it as it found it;
- ``RunFolder.discard`` removes the folder again (with the parents it made) when a run fails
  before its first epoch, and ``is_unused`` tells a folder that a killed run left holding only
  ``.lock``: the next run takes either name again.
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
    """An open, locked run folder; ``close`` (or the with-block's end) releases the lock.

    ``created``: the folders that opening it made (the run folder first, then its new parents)."""

    def __init__(self, path: Path, fd: int, removed: list[str], created: list[Path] = ()):
        self.path, self._fd, self.removed_leftovers, self.created = path, fd, removed, list(created)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)   # no holder now: the folder's files are as the run left them
            except OSError:
                pass
            os.close(self._fd)          # closing the descriptor drops the flock
            self._fd = None

    def discard(self) -> None:
        """Remove the folders this run created, if they hold nothing but the lock and our temporaries;
        a folder that existed before, or holds anything else, is left (and the lock released)."""
        if not self.created:
            self.close()
            return
        for name in (LOCK, *(tmp.name for own in OWN_FILES for tmp in self.path.glob(f".{own}.*.tmp"))):
            try:
                (self.path / name).unlink()
            except OSError:
                pass
        self.close()
        for folder in self.created:      # innermost first; one that is not empty stops the walk
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def is_unused(out_dir) -> bool:
    """True for a folder that holds nothing but our ``.lock`` (and temporaries) and that no process holds:
    what a run killed before its first epoch leaves.  A new run may take it."""
    import fcntl
    path = Path(out_dir)
    try:
        names = [p.name for p in path.iterdir()]
    except OSError:
        return False
    if any(name != LOCK and not _is_own_temporary(name) for name in names):
        return False
    if LOCK not in names:
        return not names
    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False                    # a run holds it now (it is loading its data)
    finally:
        os.close(fd)


def _is_own_temporary(name: str) -> bool:
    return any(name.startswith(f".{own}.") and name.endswith(".tmp") for own in OWN_FILES)


def open_run_folder(out_dir) -> RunFolder:
    import fcntl  # POSIX only; imported here so that the rest of dcnn still imports elsewhere

    path = Path(out_dir)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise RunFolderError(errno.ENOTDIR, f"cannot use {path} as the run folder: {parent} is a regular file, "
                                                "not a folder; choose another --out")
    created = []                       # the folders that this call makes, innermost first
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        created.append(folder)
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
    return RunFolder(path, fd, removed, created)


def _remove_leftovers(path: Path) -> list[str]:
    """Temporaries of our own files, left by a writer killed mid-write (we hold the lock: none is live)."""
    removed = []
    for name in OWN_FILES:
        for tmp in path.glob(f".{name}.*.tmp"):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp.name)
    return removed
