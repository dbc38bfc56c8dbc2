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


# A safetensors header (JSON) larger than this is refused before it is parsed.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# Tensors larger than this in all are refused from the header, before any is read: far above any
# dcnn model (the default convnet holds 3.3 MB), far below a machine's memory.
MAX_TENSOR_BYTES = 4 << 30
_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


def _decode_metadata(path, raw_meta: dict) -> dict:
    """safetensors metadata values are strings; ours are JSON.  Foreign plain strings stay strings."""
    metadata = {}
    for key, value in raw_meta.items():
        try:
            metadata[key] = json.loads(value)
        except (TypeError, ValueError):
            metadata[key] = value
        except RecursionError:   # "[[[[...": nested beyond what the parser allows
            raise ValueError(f"{path}: metadata field {key!r} is nested too deeply to be real; "
                             "the file is damaged or hostile") from None
    return metadata


def _open_checked(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if not path.is_file():
        raise IsADirectoryError(f"{path} is not a file (a weights file or a run folder was expected)")
    with open(path, "rb") as f:
        head = f.read(8)
    size = path.stat().st_size
    header_len = int.from_bytes(head, "little") if len(head) == 8 else -1
    if header_len < 2 or header_len > min(MAX_HEADER_BYTES, size - 8):
        raise ValueError(f"{path} is not a readable safetensors file (its first 8 bytes give a header of "
                         f"{header_len} bytes in a file of {size} bytes)")
    return path


def read_metadata(path) -> dict:
    """The metadata of a safetensors file, reading only its header."""
    path = _open_checked(path)
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            raw = f.metadata() or {}
    except Exception as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    return _decode_metadata(path, raw)


class _TooLarge(Exception):
    pass


def load_arrays(path, max_bytes: int = MAX_TENSOR_BYTES) -> tuple[dict[str, np.ndarray], dict]:
    """Read a safetensors file (never pickle); a corrupt file raises ValueError naming it.

    The header is checked first (tensors of more than ``max_bytes`` in all are refused from it),
    then the tensors are read one by one through safetensors' memory-mapped ``safe_open``:
    a huge or sparse file is never read whole into memory.
    """
    path = _open_checked(path)
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            raw = f.metadata() or {}
            total = 0
            for key in f.keys():
                piece = f.get_slice(key)
                total += _ITEM_BYTES.get(piece.get_dtype(), 8) * int(np.prod(piece.get_shape(), dtype=np.float64))
            if total > max_bytes:
                raise _TooLarge(f"{path}: its header describes {total:,} bytes of tensors, more than the limit of "
                                f"{max_bytes:,}; it is not a dcnn model (or pass a larger max_bytes)")
            arrays = {key: f.get_tensor(key) for key in f.keys()}
    except _TooLarge as exc:
        raise ValueError(str(exc)) from None
    except MemoryError:
        raise ValueError(f"{path}: its tensors do not fit in memory; it is not a dcnn weights file") from None
    except Exception as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    return arrays, _decode_metadata(path, raw)
