"""``dcnn.datasets``: one ``load`` for the built-in datasets and for your own data.

- built-in: Fashion-MNIST, MNIST and CIFAR-10, found locally or downloaded and checked
  (``dcnn.data.builtin`` says where it looks);
- made from a built-in one on first use and cached: ``fashion-mosaic``, segmentation masks of
  Fashion-MNIST garments (``dcnn.data.mosaic`` says how);
- your own: a folder of images with one subfolder per class, or a .npz file (``dcnn.data.userdata``).
"""
from __future__ import annotations

import os
from pathlib import Path

from . import builtin, mosaic
from .builtin import ALIASES, SPECS, DatasetSpec, cache_dir, get_spec, locate, names, parse_idx, search_dirs  # noqa: F401
from .dataset import CorruptDataError, DataNotFoundError, Dataset, DatasetError  # noqa: F401
from .userdata import load_path


# Datasets made from a built-in one: name -> loader(data_dir, download=, verify=, progress=).
GENERATED = {mosaic.NAME: mosaic.load}
GENERATED_ALIASES = {"fashion_mosaic": mosaic.NAME, "fashionmosaic": mosaic.NAME}
SEGMENTATION = (mosaic.NAME,)      # labelled per pixel; every other named dataset one label per image


def all_names() -> list[str]:
    """Every dataset ``load`` knows by name: the built-in ones, then those made from them."""
    return list(SPECS) + list(GENERATED)


def _generated(name) -> str | None:
    key = str(name).strip().lower()
    key = GENERATED_ALIASES.get(key, key)
    return key if key in GENERATED else None


def is_path(name) -> bool:
    """Whether ``name`` means your own data (a folder or .npz file) rather than a dataset known by name."""
    if isinstance(name, os.PathLike):
        return True
    key = str(name).strip().lower()
    return ALIASES.get(key, key) not in SPECS and _generated(key) is None


def task(name) -> str | None:
    """'segmentation' or 'classification' for a dataset known by name, without loading it; None for
    your own data (``Dataset.task`` says, once it is loaded)."""
    if is_path(name):
        return None
    return "segmentation" if _generated(name) in SEGMENTATION else "classification"


def canonical(name) -> str:
    """A known dataset's name, or your data's path (which must exist)."""
    if not is_path(name):
        return _generated(name) or get_spec(name).name
    path = Path(name).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"unknown dataset {str(name)!r}; valid ones are: {', '.join(all_names())}, or the "
                                "path of an existing folder of images (one subfolder per class) or .npz file")
    return str(path)


def load(name: str = "fashion-mnist", data_dir=None, *, download: bool = True, verify: bool = True,
         progress: bool = False, image_size=None, channels: int | None = None) -> Dataset:
    """Load a dataset: local copies first, then a checked download into the cache.

    ``name`` is a built-in dataset (fashion-mnist, mnist, cifar10), one made from it
    (fashion-mosaic: per-pixel masks, made and cached on first use), or the path of your own
    data: a folder of images with one subfolder per class, or a .npz file (see dcnn.data.userdata;
    ``image_size`` and ``channels`` apply to image folders).
    ``verify=False`` skips the checksums (for files you made yourself); the format
    and size checks always run.
    """
    if is_path(name):
        return load_path(canonical(name), image_size=image_size, channels=channels)   # (says what exists)
    if _generated(name):
        return GENERATED[_generated(name)](data_dir, download=download, verify=verify, progress=progress)
    return builtin.load(name, data_dir, download=download, verify=verify, progress=progress)
