""".npy files and the members of .npz archives as read-only memory maps: nothing is read up front.

``np.load(path, mmap_mode="r")`` maps a ``.npy`` file but not the members of a ``.npz`` archive (a
zip file).  A member that ``np.savez`` wrote is *stored* (not compressed), so its bytes lie in the
archive as they are: ``map_npz_member`` finds where (the member's local zip header, then its ``.npy``
header) and maps them.  Members written by ``np.savez_compressed`` are deflated and cannot be mapped;
they raise a ``DatasetError`` that says to re-save them with ``np.savez`` (or to load the file into
memory with ``dcnn.datasets.load``).  Arrays of Python objects are refused: nothing is unpickled.

A ``MappedArray`` pickles as its file, offset, dtype and shape, so a worker process maps the file
itself instead of receiving a copy of the data.  ``Spilling`` gives a source the same for the arrays
it holds in memory (an image folder's index of paths and labels, arrays given as they are): the first
time the source is pickled for workers, each large one is written once to a temporary .npy file that
the workers map (shared pages, not a private copy each), and that is removed with the source.  This
also keeps what is sent to a starting worker small (a pipe's worth), which matters: a worker that
dies as it starts, before reading a large payload, would leave the sender blocked on the pipe.
"""
from __future__ import annotations

import mmap
import os
import shutil
import struct
import tempfile
import threading
import weakref
import zipfile
from pathlib import Path

import numpy as np

from .dataset import CorruptDataError, DataNotFoundError, DatasetError

_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")    # the fixed 30 bytes of a zip local file header
_LOCAL_MAGIC = 0x04034B50


class MappedArray:
    """A read-only ``np.memmap`` of part of a file, which pickles as (path, offset, dtype, shape, order)."""

    def __init__(self, path, offset: int, dtype, shape, fortran: bool = False):
        self.path, self.offset = str(path), int(offset)
        self.dtype, self.shape, self.fortran = np.dtype(dtype), tuple(int(d) for d in shape), bool(fortran)
        self._array = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            if int(np.prod(self.shape)) == 0:
                self._array = np.zeros(self.shape, self.dtype)
            else:
                self._array = np.memmap(self.path, self.dtype, "r", self.offset, self.shape,
                                        order="F" if self.fortran else "C")
        return self._array

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_array"}

    def __setstate__(self, state):
        self.__dict__.update(state, _array=None)

    def __repr__(self):
        return f"MappedArray({self.path!r}, offset={self.offset}, dtype={self.dtype}, shape={self.shape})"


def _check_header(where: str, dtype: np.dtype, shape) -> None:
    if dtype.hasobject:
        raise CorruptDataError(f"{where} holds Python objects (dtype {dtype}); only plain numeric arrays are read "
                               "(nothing is unpickled)")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CorruptDataError(f"{where} has a bad shape {shape!r}")


def _read_npy_header(f, where: str):
    """(shape, fortran, dtype, data offset) of the .npy header at the file position."""
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = read(f)
    except ValueError as exc:
        raise CorruptDataError(f"{where} is not a readable .npy array ({exc})") from None
    _check_header(where, dtype, shape)
    return shape, fortran, dtype, f.tell()


def _check_size(where: str, path: Path, offset: int, dtype, shape) -> None:
    need = offset + int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    if need > size:
        raise CorruptDataError(f"{where} is truncated: its header says {shape} of {np.dtype(dtype)} "
                               f"({need - offset:,} bytes) but the file ends after {size - offset:,} of them")


def map_npy(path) -> MappedArray:
    """A .npy file as a MappedArray (its header checked, its data not read)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist (expected a .npy array file)")
    with open(path, "rb") as f:
        shape, fortran, dtype, offset = _read_npy_header(f, str(path))
    _check_size(str(path), path, offset, dtype, shape)
    return MappedArray(path, offset, dtype, shape, fortran)


def npz_members(path) -> list[str]:
    """The array names in a .npz archive (its members less the .npy suffix)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptDataError(f"{path} is not a readable .npz archive ({exc})") from None


def map_npz_member(path, key: str) -> MappedArray:
    """The member ``key`` of a .npz archive as a MappedArray; it must be stored uncompressed (np.savez)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist (expected a .npz archive)")
    where = f"{path}: {key}"
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo(key + ".npy")
            except KeyError:
                raise DatasetError(f"{path} has no array {key!r}; it holds {', '.join(npz_members(path)) or 'none'}") \
                    from None
    except zipfile.BadZipFile as exc:
        raise CorruptDataError(f"{path} is not a readable .npz archive ({exc})") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise DatasetError(f"{where} is compressed (np.savez_compressed), so it cannot be memory-mapped: "
                           "re-save the arrays with np.savez (uncompressed), or save them as .npy files, "
                           "or load the whole file into memory with dcnn.datasets.load")
    if info.flag_bits & 0x1:
        raise DatasetError(f"{where} is encrypted; it cannot be read")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(head)[0] != _LOCAL_MAGIC:
            raise CorruptDataError(f"{where}: bad zip local header; the archive is damaged")
        name_len, extra_len = _LOCAL_HEADER.unpack(head)[-2:]
        f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
        shape, fortran, dtype, offset = _read_npy_header(f, where)
    member_end = offset + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    data_start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if member_end - data_start != info.file_size:
        raise CorruptDataError(f"{where}: its .npy header disagrees with the archive's size of the member "
                               f"({member_end - data_start:,} against {info.file_size:,} bytes); the archive is damaged")
    _check_size(where, path, offset, dtype, shape)
    return MappedArray(path, offset, dtype, shape, fortran)


# --- spilling in-memory arrays for worker processes ------------------------------------------------------

_SPILL_LOCK = threading.RLock()
SPILL_BYTES = 16 * 1024     # arrays larger than this travel to workers as a mapped temporary file


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:             # never from a forked copy of the owner
        shutil.rmtree(folder, ignore_errors=True)


class Spilling:
    """Mixin for sources: the attributes named in ``_spill`` pickle as MappedArrays of temporary
    files when they are in-memory arrays larger than SPILL_BYTES (a memory map of a file pickles as
    that file), and come back as read-only memory maps."""

    _spill: tuple[str, ...] = ()

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k != "_spilled"}
        for name in self._spill:
            value = state.get(name)
            if isinstance(value, np.memmap) and isinstance(getattr(value, "base", None), mmap.mmap) and value.filename:
                state[name] = MappedArray(value.filename, value.offset, value.dtype, value.shape,
                                          value.flags.f_contiguous and not value.flags.c_contiguous)
            elif isinstance(value, np.ndarray) and value.nbytes > SPILL_BYTES:
                state[name] = self._spilled_copy(name, value)
        return state

    def __setstate__(self, state):
        for name in self._spill:
            if isinstance(state.get(name), MappedArray):
                state[name] = state[name].array
        self.__dict__.update(state)

    def _spilled_copy(self, name: str, value: np.ndarray) -> MappedArray:
        # grain pickles the source for each worker, from several threads at once: one writes the file,
        # under a lock, to a temporary name renamed into place (no thread ever maps a half-written file).
        with _SPILL_LOCK:
            spilled = self.__dict__.setdefault("_spilled", {})
            if name not in spilled:
                if "folder" not in spilled:
                    spilled["folder"] = tempfile.mkdtemp(prefix="dcnn-source-")
                    weakref.finalize(self, _remove, spilled["folder"], os.getpid())
                path = Path(spilled["folder"]) / f"{name.strip('_')}.npy"
                partial = path.with_name(path.name + ".partial")
                with open(partial, "wb") as f:
                    np.save(f, np.ascontiguousarray(value), allow_pickle=False)
                os.replace(partial, path)
                spilled[name] = map_npy(path)
            return spilled[name]
