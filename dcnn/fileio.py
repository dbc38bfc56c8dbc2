"""Atomic file writes and safetensors reading with errors that name the file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import safetensors.numpy


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; give the mode a plain open() would
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_arrays(path, arrays: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Host arrays to a safetensors file; metadata values are JSON-encoded."""
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    # (np.ascontiguousarray would turn 0-d arrays such as num_batches_tracked into 1-d.)
    contiguous = {k: np.require(v, requirements="C") for k, v in arrays.items()}
    atomic_write_bytes(path, safetensors.numpy.save(contiguous, metadata=meta))


def load_arrays(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a safetensors file (never pickle); a corrupt file raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    data = path.read_bytes()
    try:
        arrays = safetensors.numpy.load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
    except Exception as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    raw_meta = header.get("__metadata__") or {}
    try:
        metadata = {k: json.loads(v) for k, v in raw_meta.items()}
    except (TypeError, ValueError):
        metadata = dict(raw_meta)
    return arrays, metadata
