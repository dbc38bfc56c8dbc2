"""``fashion-mosaic``: a semantic-segmentation dataset made from Fashion-MNIST, with no download.

How it is made (``make_split``; version 1):

- Each image is 56x56 and holds 2, 3 or 4 Fashion-MNIST garments (28x28 each), drawn uniformly.
- The canvas has four slots (2x2); each garment takes a different slot, in a random order, and is
  shifted inside it by 0-4 pixels down and right from (24 * row, 24 * column), so neighbours may
  overlap by up to 8 pixels (mostly their blank margins).
- A pixel is *foreground* where the garment's intensity is at least ``THRESHOLD`` (32 of 255, 12.5%).
  Garments are drawn in order: a foreground pixel covers what is below it (image and label), a
  background pixel only brightens it (the image keeps the larger intensity; the label stays).
  So a pixel's label is the class + 1 (1-10) of the garment whose foreground shows there, and 0
  (background) elsewhere: 11 classes, and a pixel is labelled exactly where it is bright enough.
- The training mosaics take their garments from Fashion-MNIST's training split only, the test
  mosaics from its test split only, each garment at most once (a seeded permutation of the split).
- Every random number is a raw 64-bit draw of NumPy's PCG64 bit generator, seeded by a
  SeedSequence of (``SEED``, split): a stream NumPy keeps stable across versions and machines
  (unlike the distributions of ``Generator``).  Integers in [0, n) are draws modulo n, orders are
  stable arg-sorts of draws.  No loop runs over images or pixels: one vectorised pass per slot.

``COUNTS`` mosaics are made per split; their bytes (uint8 images and masks) must hash to
``SHA256``, checked after making them and on every load, so the dataset is the same everywhere.
They are made on first use from the Fashion-MNIST that ``dcnn.data.builtin`` finds, and written
atomically to ``<cache>/fashion-mosaic/FILE_NAME`` (a safetensors file: no pickle).
``load`` returns a Dataset: x float32 (N, 1, 56, 56) in [0, 1], y int64 masks (N, 56, 56).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..utils.files import load_arrays, save_arrays
from . import builtin
from .dataset import CorruptDataError, Dataset, DatasetError

NAME = "fashion-mosaic"
VERSION = 1
SIZE = 56                      # the mosaic's height and width
GARMENT = 28                   # Fashion-MNIST's
STEP = 24                      # slot origins are 0 and STEP on each axis
JITTER = 4                     # a garment moves 0..JITTER pixels down and right inside its slot
THRESHOLD = 32                 # foreground: intensity >= 32 of 255
MIN_GARMENTS, MAX_GARMENTS = 2, 4
SEED = 20240521
COUNTS = {"train": 12000, "test": 2000}
SPLIT_IDS = {"train": 0, "test": 1}
FILE_NAME = f"{NAME}-v{VERSION}.safetensors"
# sha256 of x_train, y_train, x_test and y_test's uint8 bytes, in that order (``content_hash``).
SHA256 = "b60e0afdad165cc5517bfcf126e2baead8a9ee1df421bb50f6ac6e9762263b00"
CLASSES = ("background",) + builtin.SPECS["fashion-mnist"].classes


def _draws(split: str, purpose: int, size: int) -> np.ndarray:
    """``size`` raw uint64 draws, the same on every machine and NumPy version."""
    seed = np.random.SeedSequence([SEED, SPLIT_IDS[split], purpose])
    return np.random.PCG64(seed).random_raw(size).astype(np.uint64)


def make_split(images: np.ndarray, labels: np.ndarray, count: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``count`` mosaics from uint8 garments (M, 28, 28) and their labels (M,): uint8 images and
    masks (count, 56, 56)."""
    if images.dtype != np.uint8 or images.shape[1:] != (GARMENT, GARMENT) or len(images) != len(labels):
        raise ValueError(f"make_split needs uint8 garments (M, {GARMENT}, {GARMENT}) and M labels; got "
                         f"{images.dtype} {images.shape} and {len(labels)} labels")
    if MAX_GARMENTS * count > len(images):
        raise ValueError(f"{count} mosaics need up to {MAX_GARMENTS * count} garments; the split has {len(images)}")
    spread = MAX_GARMENTS - MIN_GARMENTS + 1
    garments = MIN_GARMENTS + (_draws(split, 0, count) % np.uint64(spread)).astype(np.int64)
    slots = np.argsort(_draws(split, 1, count * 4).reshape(count, 4), axis=1, kind="stable")
    shifts = (_draws(split, 2, count * MAX_GARMENTS * 2) % np.uint64(JITTER + 1)).astype(np.int64)
    shifts = shifts.reshape(count, MAX_GARMENTS, 2)
    picks = np.argsort(_draws(split, 3, len(images)), kind="stable")[:count * MAX_GARMENTS]
    picks = picks.reshape(count, MAX_GARMENTS)
    canvas = np.zeros((count, SIZE, SIZE), np.uint8)
    masks = np.zeros((count, SIZE, SIZE), np.uint8)
    span = np.arange(GARMENT)
    which = np.arange(count)[:, None, None]
    for j in range(MAX_GARMENTS):          # one vectorised pass per slot
        drawn = (j < garments)[:, None, None]
        top = (slots[:, j] // 2) * STEP + shifts[:, j, 0]
        left = (slots[:, j] % 2) * STEP + shifts[:, j, 1]
        where = (which, (top[:, None] + span)[:, :, None], (left[:, None] + span)[:, None, :])
        garment = images[picks[:, j]]
        front = drawn & (garment >= THRESHOLD)
        below = canvas[where]
        canvas[where] = np.where(front, garment, np.where(drawn, np.maximum(below, garment), below))
        label = (labels[picks[:, j]].astype(np.uint8) + 1)[:, None, None]
        masks[where] = np.where(front, label, masks[where])
    return canvas, masks


def content_hash(arrays: dict) -> str:
    digest = hashlib.sha256()
    for key in ("x_train", "y_train", "x_test", "y_test"):
        digest.update(np.ascontiguousarray(arrays[key], dtype=np.uint8).tobytes())
    return digest.hexdigest()


def make(data_dir=None, *, download: bool = True, progress: bool = False) -> dict[str, np.ndarray]:
    """The four uint8 arrays, made from Fashion-MNIST (found as ``dcnn.data.builtin`` finds it)."""
    try:
        source = builtin.load("fashion-mnist", data_dir, download=download, verify=True, progress=progress)
    except DatasetError as exc:
        raise type(exc)(f"{NAME} is made from Fashion-MNIST on first use: {exc}") from None
    arrays = {}
    for split, (x, y) in {"train": (source.x_train, source.y_train), "test": (source.x_test, source.y_test)}.items():
        garments = np.rint(x[:, 0] * 255).astype(np.uint8)      # the IDX bytes again, exactly
        arrays[f"x_{split}"], arrays[f"y_{split}"] = make_split(garments, y, COUNTS[split], split)
    return arrays


def path(data_dir=None) -> Path:
    """Where the file is found: ``data_dir`` (itself or its fashion-mosaic/) when it holds it, else the cache."""
    if data_dir is not None:
        for folder in (Path(data_dir).expanduser() / NAME, Path(data_dir).expanduser()):
            if (folder / FILE_NAME).is_file():
                return folder / FILE_NAME
    return builtin.cache_dir() / NAME / FILE_NAME


def ensure(data_dir=None, *, download: bool = True, progress: bool = False) -> Path:
    """The dataset's file, made and written (atomically) first if it is not there yet."""
    target = path(data_dir)
    if target.is_file():
        return target
    arrays = make(data_dir, download=download, progress=progress)
    digest = content_hash(arrays)
    if digest != SHA256:
        raise CorruptDataError(f"{NAME}: the mosaics made here hash to {digest}, not {SHA256}; the Fashion-MNIST "
                               "files or NumPy's PCG64 differ from the reference, so nothing was written")
    meta = {"format": f"dcnn-{NAME}", "version": VERSION, "sha256": digest, "size": SIZE, "threshold": THRESHOLD,
            "classes": list(CLASSES)}
    try:
        save_arrays(target, arrays, meta)
    except OSError as exc:
        raise DatasetError(f"{NAME}: cannot write {target} ({exc.strerror or exc}); make the cache folder "
                           "writable or set XDG_CACHE_HOME") from None
    return target


def _checked(file: Path, verify: bool) -> dict[str, np.ndarray]:
    try:
        arrays, _ = load_arrays(file)
    except ValueError as exc:
        raise CorruptDataError(f"{exc}; delete it and it is made again") from None
    for key in ("x_train", "y_train", "x_test", "y_test"):
        split = key[2:]
        expected = (COUNTS[split], SIZE, SIZE)
        if key not in arrays or arrays[key].dtype != np.uint8 or arrays[key].shape != expected:
            got = "missing" if key not in arrays else f"{arrays[key].dtype} {arrays[key].shape}"
            raise CorruptDataError(f"{file}: {key} should be uint8 {expected}, is {got}; delete it and it is made "
                                   "again")
    if verify and content_hash(arrays) != SHA256:
        raise CorruptDataError(f"{file}: checksum mismatch (sha256 {content_hash(arrays)}, expected {SHA256}); "
                               "the file is damaged: delete it and it is made again")
    return arrays


def load(data_dir=None, *, download: bool = True, verify: bool = True, progress: bool = False) -> Dataset:
    """The dataset, made into the cache on first use (about a second from Fashion-MNIST)."""
    file = ensure(data_dir, download=download, progress=progress)
    arrays = _checked(file, verify)
    scale = np.float32(255)
    out = {}
    for split in ("train", "test"):
        out[f"x_{split}"] = np.divide(arrays[f"x_{split}"][:, None], scale, dtype=np.float32)
        if int(arrays[f"y_{split}"].max(initial=0)) >= len(CLASSES):
            raise CorruptDataError(f"{file}: y_{split} has labels beyond {len(CLASSES) - 1}")
        out[f"y_{split}"] = arrays[f"y_{split}"].astype(np.int64)
    return Dataset(NAME, out["x_train"], out["y_train"], out["x_test"], out["y_test"], CLASSES, file.parent,
                   {"version": VERSION, "sha256": SHA256})
