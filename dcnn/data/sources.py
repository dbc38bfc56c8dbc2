"""Lazy sources for ``dcnn.data.loader.Loader``: what is in a dataset, without reading it.

- ``ImageFiles``: an image folder's paths and labels only (the layouts of ``dcnn.data.userdata``:
  ``root/<class>/*`` with a seeded held-out share, or ``root/train/<class>`` and ``root/test/<class>``);
  the pictures are decoded in the loader's workers, a batch at a time.
- ``ArrayImages``: images in an array, (N, H, W), (N, C, H, W) or (N, H, W, C), uint8 (0..255) or
  float (0..1): a ``.npy`` file or a stored ``.npz`` member memory-mapped (``dcnn.data.arrays``),
  or an array in memory (a built-in dataset: ``ArrayImages.from_dataset``).

Every source has ``len()``, ``labels`` (int64, in memory), ``classes``, ``describe(i)`` and
``load(indices, channels, size, decoder)`` -> (uint8 or float32 (B, H, W, C), bad), where ``bad`` lists
(position, path, reason) of the items that could not be read (their rows are zeros).  Sources pickle
small (paths as one UTF-8 blob, arrays as their file and offset), for worker processes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import MappedArray, Spilling, map_npy, map_npz_member, npz_members
from .dataset import CorruptDataError, DataNotFoundError, Dataset, DatasetError
from .decode import BadImage, decode
from .userdata import _labels, scan_layout


class ImageFiles(Spilling):
    """Image files and their labels; nothing is opened until ``load``.  The paths are held as one
    UTF-8 blob and its offsets (no Python object per file); workers map them (``Spilling``)."""

    _spill = ("_blob", "_ends", "labels")

    def __init__(self, paths, labels, classes, name: str = "images"):
        encoded = [str(p).encode("utf-8", "surrogateescape") for p in paths]
        self._blob = np.frombuffer(b"".join(encoded), np.uint8)
        self._ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        self.labels = np.asarray(labels, np.int64)
        self.classes, self.name = tuple(classes), name
        if len(self.labels) != len(encoded):
            raise ValueError(f"{len(encoded)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i else 0
        return self._blob[start:int(self._ends[i])].tobytes().decode("utf-8", "surrogateescape")

    @property
    def paths(self) -> list[str]:
        return [self.describe(i) for i in range(len(self))]

    def probe(self) -> tuple[int, tuple[int, int]]:
        """(channels, (H, W)) of the first picture that can be read: the default input shape."""
        from .images import read_image
        for i in range(min(len(self), 100)):
            try:
                first = read_image(self.describe(i))
            except (ValueError, OSError):
                continue
            return first.shape[0], tuple(first.shape[1:])
        raise DatasetError(f"{self.name}: none of the first {min(len(self), 100)} images can be read")

    def read(self, i: int) -> bytes:
        with open(self.describe(i), "rb") as f:
            return f.read()

    def load(self, indices, channels: int, size, decoder: str):
        out = np.zeros((len(indices), *size, channels), np.uint8)
        bad = []
        for k, i in enumerate(indices):       # one decode per file, in the worker
            try:
                out[k] = decode(self.read(int(i)), channels, size, decoder)
            except (BadImage, OSError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                bad.append((k, self.describe(int(i)), reason))
        return out, bad

    def __repr__(self):
        return f"ImageFiles({self.name!r}, {len(self)} files, {len(self.classes)} classes)"


def image_folder(root, *, test_split: float = 0.2, seed: int = 0) -> tuple[ImageFiles, ImageFiles]:
    """(train, test) sources of an image folder, split as ``dcnn.datasets.load`` splits it; only the
    file names are read."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"{root} is not a folder: give a folder of images with one subfolder per class")
    classes, train_files, y_train, test_files, y_test = scan_layout(root, test_split, seed)
    return (ImageFiles(train_files, y_train, classes, f"{root.name}/train"),
            ImageFiles(test_files, y_test, classes, f"{root.name}/test"))


def _layout(shape, where: str) -> str:
    """"NHWC" or "NCHW" for 4-D image arrays (the rule of dcnn.data.userdata); "NHW" for 3-D."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise CorruptDataError(f"{where} must be images (N, H, W), (N, C, H, W) or (N, H, W, C); got {shape}")
    return "NHWC" if shape[1] not in (1, 2, 3, 4) and shape[-1] in (1, 2, 3, 4) else "NCHW"


class ArrayImages(Spilling):
    """Images in an array (memory-mapped or in memory) with their labels; workers map the array's
    file (an array given in memory is written to a temporary one first: ``Spilling``)."""

    _spill = ("_x", "labels")

    def __init__(self, x, y, classes=None, name: str = "arrays"):
        self._x = x if isinstance(x, MappedArray) else x if isinstance(x, np.memmap) else np.asarray(x)
        shape, dtype = tuple(self._x.shape), np.dtype(self._x.dtype)
        self.layout = _layout(shape, name)
        if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
            raise CorruptDataError(f"{name}: images must be uint8 (0..255) or floats (0..1); got dtype {dtype}")
        self.labels = _labels(name, "labels", np.asarray(y), shape[0])
        n_classes = int(self.labels.max(initial=0)) + 1
        self.classes = tuple(classes) if classes is not None else tuple(str(i) for i in range(n_classes))
        if len(self.classes) < n_classes:
            raise CorruptDataError(f"{name}: labels go up to {n_classes - 1} but there are {len(self.classes)} classes")
        self.name = name
        c, h, w = (1, *shape[1:3]) if self.layout == "NHW" else shape[1:4] if self.layout == "NCHW" else \
            (shape[3], *shape[1:3])
        self.channels, self.size = int(c), (int(h), int(w))
        self.dtype = np.dtype(np.uint8) if dtype == np.uint8 else np.dtype(np.float32)

    @property
    def x(self) -> np.ndarray:
        return self._x.array if isinstance(self._x, MappedArray) else self._x

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, i: int) -> str:
        return f"{self.name}[{int(i)}]"

    def probe(self):
        return self.channels, self.size

    def load(self, indices, channels: int, size, decoder: str = ""):
        """One gather of the rows (in file order, then put back in batch order)."""
        if channels != self.channels or tuple(size) != self.size:
            raise ValueError(f"{self.name} holds {self.channels}x{self.size[0]}x{self.size[1]} images; "
                             f"asked for {channels}x{size[0]}x{size[1]} (arrays are not resized)")
        indices = np.asarray(indices, np.int64)
        order = np.argsort(indices, kind="stable")
        rows = np.empty((len(indices),) + self.x.shape[1:], self.x.dtype)
        rows[order] = self.x[indices[order]]
        if self.layout == "NHW":
            rows = rows[..., None]
        elif self.layout == "NCHW":
            rows = rows.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(rows, dtype=self.dtype), []

    @classmethod
    def from_npy(cls, x_path, y_path, classes=None) -> "ArrayImages":
        """Images in one .npy file (memory-mapped), labels in another."""
        y = map_npy(y_path).array
        return cls(map_npy(x_path), np.asarray(y), classes, Path(x_path).name)

    @classmethod
    def from_npz(cls, path, split: str = "train") -> "ArrayImages":
        """``x_<split>`` and ``y_<split>`` of a .npz archive (dcnn.data.userdata's keys), the images
        memory-mapped; ``classes`` as names when the archive holds them."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
        path = Path(path)
        names = npz_members(path)
        missing = [k for k in (f"x_{split}", f"y_{split}") if k not in names]
        if missing:
            raise CorruptDataError(f"{path} lacks {', '.join(missing)}; it holds {', '.join(names) or 'nothing'}")
        classes = None
        if "classes" in names:
            found = map_npz_member(path, "classes").array
            if found.ndim != 1 or found.dtype.kind not in "US":
                raise CorruptDataError(f"{path}: classes must be a 1-D array of strings")
            classes = [str(c) for c in found]
        y = np.asarray(map_npz_member(path, f"y_{split}").array)
        return cls(map_npz_member(path, f"x_{split}"), y, classes, f"{path.name}:x_{split}")

    @classmethod
    def from_dataset(cls, data: Dataset, split: str = "train") -> "ArrayImages":
        """A loaded ``Dataset``'s images (e.g. a built-in one), as uint8 when they are whole 8-bit steps."""
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        u8 = np.rint(x * 255)
        if np.array_equal(u8 / np.float32(255), x):
            x = u8.astype(np.uint8)
        return cls(x, y, data.classes, f"{data.name}/{split}")

    def __repr__(self):
        return f"ArrayImages({self.name!r}, {len(self)} images {self.channels}x{self.size[0]}x{self.size[1]} {self.dtype})"


def open_sources(path, *, test_split: float = 0.2, seed: int = 0):
    """(train, test) sources for a folder of images or a .npz archive, read lazily."""
    path = Path(path).expanduser()
    if path.is_dir():
        return image_folder(path, test_split=test_split, seed=seed)
    if path.suffix.lower() == ".npz":
        test = ArrayImages.from_npz(path, "test") if "x_test" in npz_members(path) else None
        return ArrayImages.from_npz(path, "train"), test
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist: give a folder of images or a .npz archive")
    raise DatasetError(f"{path} is neither a folder of images nor a .npz archive (for .npy files use "
                       "ArrayImages.from_npy(x_path, y_path))")
