"""One input image, from an array or a PNG/JPEG file, as a (C, H, W) float32 host array."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def as_chw(image, channels: int | None = None, name: str = "image") -> np.ndarray:
    """(H, W), (C, H, W), (H, W, C) or (1, C, H, W) -> (C, H, W) float32; 8-bit pixels are scaled to [0, 1].

    ``channels`` (the model's) settles whether a 3-D array is channels-first or -last.
    """
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        image = image[None]
    elif image.ndim == 3:
        first, last = image.shape[0], image.shape[-1]
        wanted = (channels,) if channels is not None else (1, 3)
        if first not in wanted and last in wanted:
            image = np.moveaxis(image, -1, 0)
    else:
        raise ValueError(f"{name} must be one image of shape (H, W), (C, H, W) or (H, W, C); "
                         f"got shape {image.shape}")
    if channels is not None and image.shape[0] != channels:
        raise ValueError(f"{name} has {image.shape[0]} channels (shape {image.shape}) but the model expects "
                         f"{channels}: give a {'grayscale' if channels == 1 else f'{channels}-channel'} image")
    if image.dtype == np.uint8:
        image = image / np.float32(255)
    elif not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)
              or image.dtype == np.bool_):
        raise TypeError(f"{name} must hold numbers; got dtype {image.dtype}")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return image


def load_image_file(path, channels: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """A PNG/JPEG (anything Pillow reads) as (C, H, W) float32 in [0, 1].

    ``channels`` 1 converts to grayscale and 3 to RGB (default: grayscale images
    stay gray, others become RGB); ``size`` (H, W) resizes to the model's input.
    """
    from ..data.images import read_image
    try:
        pixels = read_image(path, channels, size)
    except ImportError as exc:
        raise ImportError("reading image files needs Pillow (it comes with matplotlib): "
                          "pip install pillow (in a clone: pip install -e '.[images]')") from exc
    return as_chw(pixels, channels, name=str(path))
