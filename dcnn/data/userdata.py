"""Your own data: a folder of images with one subfolder per class, or arrays in a .npz file.

Image folders are laid out as torchvision's ``ImageFolder`` and Keras's
``image_dataset_from_directory`` take them::

    pets/                      or   pets/train/cat/..., pets/train/dog/...
      cat/001.png ...                pets/test/cat/...,  pets/test/dog/...
      dog/001.jpg ...

Class names are the subfolder names, sorted.  With ``train/`` (and ``test/``) subfolders
those are the splits; otherwise a seeded ``test_split`` share of each class is held out as
the test set.  Every picture is read as ``dcnn predict`` reads one (dcnn.data.images: EXIF
orientation, transparency over white, the aspect ratio kept by padding) at ``image_size``
(H, W) and ``channels`` (1 gray, 3 RGB); by default those of the first picture.

A ``.npz`` file holds ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test`` and
``classes`` (an array of strings); it is read with ``allow_pickle=False``.  Images may be
(N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1..4; 8-bit values are scaled to [0, 1].
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .dataset import CorruptDataError, DataNotFoundError, Dataset, DatasetError
from .images import IMAGE_SUFFIXES

MAX_CLASSES = 10_000


def load_path(path, *, image_size=None, channels: int | None = None, test_split: float = 0.2,
              seed: int = 0) -> Dataset:
    """A Dataset from a folder of images or a .npz file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist: give a folder of images (one subfolder per class) "
                                "or a .npz file")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DatasetError(f"{path} is a file but not a .npz archive; give a .npz file or a folder of images")
        return load_npz(path)
    return load_image_folder(path, image_size=image_size, channels=channels, test_split=test_split, seed=seed)


# --- image folders ------------------------------------------------------------------------------------

def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _size_arg(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        image_size = (image_size, image_size)
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be (height, width) of positive ints, or one int; got {image_size!r}")
    return size


def _scan(root: Path, classes: list[str] | None = None):
    folders = _class_folders(root)
    if not folders:
        raise DatasetError(f"{root} holds no class subfolders: put each class's images in a folder of its own "
                           "(e.g. data/cat/*.png, data/dog/*.png)")
    names = [f.name for f in folders]
    if classes is not None and names != classes:
        raise DatasetError(f"{root} has the classes {names}, but the training folder has {classes}")
    files, labels = [], []
    for label, folder in enumerate(folders):
        found = _files(folder)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its class subfolders")
    return names, files, np.asarray(labels, np.int64)


def _read_all(files, size, channels) -> np.ndarray:
    from .images import read_image
    out = np.empty((len(files), channels, *size), np.float32)
    for i, f in enumerate(files):      # one decode per file: Pillow reads files one at a time
        out[i] = read_image(f, channels, size, fit="pad")
    return out


def load_image_folder(root, *, image_size=None, channels: int | None = None, test_split: float = 0.2,
                      seed: int = 0) -> Dataset:
    """A Dataset from ``root/<class>/*.png`` (or ``root/train/<class>``, ``root/test/<class>``)."""
    from .images import read_image
    root = Path(root)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB); got {channels!r}")
    size = _size_arg(image_size)
    classes, train_files, y_train, test_files, y_test = scan_layout(root, test_split, seed)
    if size is None or channels is None:
        first = read_image(train_files[0])
        size = size or tuple(first.shape[1:])
        channels = channels or first.shape[0]
    x_train = _read_all(train_files, size, channels)
    x_test = _read_all(test_files, size, channels)
    return Dataset(root.name, x_train, y_train, x_test, y_test, tuple(classes), root,
                   {"image_size": list(size), "channels": channels})


def scan_layout(root: Path, test_split: float, seed: int):
    """(classes, train files, train labels, test files, test labels) of an image folder: ``train/`` and
    ``test/`` of class folders, or class folders alone (a seeded ``test_split`` of each class held out)."""
    if (root / "train").is_dir():
        classes, train_files, y_train = _scan(root / "train")
        if (root / "test").is_dir():
            _, test_files, y_test = _scan(root / "test", classes)
        else:
            train_files, y_train, test_files, y_test = _split_files(train_files, y_train, test_split, seed)
    else:
        classes, files, labels = _scan(root)
        train_files, y_train, test_files, y_test = _split_files(files, labels, test_split, seed)
    return classes, train_files, y_train, test_files, y_test


def _hold_out(labels, fraction, seed) -> np.ndarray:
    """A mask of a seeded ``fraction`` of each class, the test set (at least one image of a class with two or more)."""
    if not 0 < fraction < 1:
        raise ValueError(f"test_split must be between 0 and 1; got {fraction!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7E5]))
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):          # per class, not per sample
        members = np.flatnonzero(labels == c)
        k = int(round(len(members) * fraction)) if len(members) > 1 else 0
        test[rng.permutation(members)[:max(k, 1 if len(members) > 1 else 0)]] = True
    if test.all() or not test.any():
        raise DatasetError(f"too few images ({len(labels)}) to hold out a test set; add more, or use "
                           "train/ and test/ subfolders")
    return test


def _split_files(files, labels, fraction, seed):
    test = _hold_out(labels, fraction, seed)
    files = np.asarray([str(f) for f in files])
    return list(files[~test]), labels[~test], list(files[test]), labels[test]


# --- .npz ---------------------------------------------------------------------------------------------

def _images(path, key, x) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise CorruptDataError(f"{path}: {key} must be images (N, H, W), (N, C, H, W) or (N, H, W, C); got {x.shape}")
    if x.shape[1] not in (1, 2, 3, 4) and x.shape[-1] in (1, 2, 3, 4):
        x = np.moveaxis(x, -1, 1)
    if x.dtype == np.uint8:
        return np.divide(x, np.float32(255), dtype=np.float32)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise CorruptDataError(f"{path}: {key} must hold numbers; got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise CorruptDataError(f"{path}: {key} contains NaN or Inf")
    return x


def _labels(path, key, y, n) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise CorruptDataError(f"{path}: {key} must be {n} integer labels >= 0; got dtype {y.dtype}, shape {y.shape}")
    return y.astype(np.int64)


def load_npz(path, test_split: float = 0.2, seed: int = 0) -> Dataset:
    """A Dataset from a .npz file (never unpickled)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CorruptDataError(f"{path} is not a readable .npz file of plain arrays ({exc})") from None
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise CorruptDataError(f"{path} lacks {', '.join(missing)}; it holds {', '.join(arrays) or 'nothing'}")
    x_train = _images(path, "x_train", arrays["x_train"])
    y_train = _labels(path, "y_train", arrays["y_train"], len(x_train))
    if "x_test" in arrays or "y_test" in arrays:
        x_test = _images(path, "x_test", arrays.get("x_test", np.zeros((0,) + x_train.shape[1:])))
        y_test = _labels(path, "y_test", arrays.get("y_test", np.zeros(0, np.int64)), len(x_test))
        if x_test.shape[1:] != x_train.shape[1:]:
            raise CorruptDataError(f"{path}: x_test images are {x_test.shape[1:]}, x_train ones {x_train.shape[1:]}")
    else:
        keep = ~_hold_out(y_train, test_split, seed)
        x_train, y_train, x_test, y_test = x_train[keep], y_train[keep], x_train[~keep], y_train[~keep]
    n_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "US" or len(names) < n_classes or len(names) > MAX_CLASSES:
            raise CorruptDataError(f"{path}: classes must be a 1-D array of at least {n_classes} strings")
        classes = tuple(str(c) for c in names)
    else:
        classes = tuple(str(i) for i in range(n_classes))
    return Dataset(path.stem, x_train, y_train, x_test, y_test, classes, path)
