"""Segmentation masks as pictures: one fixed colour per class (background dark), a coloured mask PNG and a
legend PNG of the class colours.  Pillow writes them (no matplotlib); every write is atomic."""
from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np

from ..utils.files import atomic_write_bytes

# Class 0 (background) near black, so that the garments stand out; then matplotlib's tab10 colours, its
# grey swapped for yellow (grey would not show over a grey picture).
PALETTE = np.array([(20, 20, 20), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (255, 221, 51), (188, 189, 34), (23, 190, 207)], np.uint8)
PILLOW_HINT = "writing mask pictures needs Pillow: pip install pillow (in a clone of dcnn: pip install -e '.[images]')"


def palette(classes: int) -> np.ndarray:
    """(classes, 3) uint8 RGB: ``PALETTE``, then evenly spread hues (golden-ratio steps) for more classes."""
    extra = [tuple(round(255 * c) for c in colorsys.hsv_to_rgb((0.13 + 0.618034 * i) % 1, 0.65, 0.95))
             for i in range(max(0, classes - len(PALETTE)))]
    return np.concatenate([PALETTE[:classes], np.array(extra, np.uint8).reshape(-1, 3)])


def colour_mask(labels, classes: int) -> np.ndarray:
    """Class labels (H, W) -> (H, W, 3) uint8, each pixel its class's colour."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"a mask is integer class labels of shape (H, W); got {labels.dtype} {labels.shape}")
    if labels.size and not 0 <= labels.min() <= labels.max() < classes:
        raise ValueError(f"mask labels must lie in 0..{classes - 1}; got {labels.min()}..{labels.max()}")
    return palette(classes)[labels]


def _pillow():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:
        raise ImportError(PILLOW_HINT) from exc
    return Image, ImageDraw, ImageFont


def _write_png(path, image) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"mask pictures are written as PNG; give a path ending in .png, got {str(path)!r}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_mask(path, labels, classes: int) -> Path:
    """The coloured mask of ``labels`` (H, W) as an RGB PNG of the same size (one pixel per label)."""
    Image, _, _ = _pillow()
    return _write_png(path, Image.fromarray(colour_mask(labels, classes)))     # (H, W, 3) uint8: RGB


def write_legend(path, class_names) -> Path:
    """A PNG listing each class's colour swatch and name, in class order."""
    Image, ImageDraw, ImageFont = _pillow()
    names = [str(c) for c in class_names]
    colours = palette(len(names))
    font = ImageFont.load_default()
    swatch, row, pad = 16, 22, 8
    width = pad * 3 + swatch + int(max((font.getlength(n) for n in names), default=0)) + 1
    image = Image.new("RGB", (width, pad * 2 + row * len(names)), "white")
    draw = ImageDraw.Draw(image)
    for i, (name, colour) in enumerate(zip(names, colours)):
        top = pad + i * row
        draw.rectangle([pad, top, pad + swatch - 1, top + swatch - 1], fill=tuple(int(c) for c in colour),
                       outline=(90, 90, 90))
        draw.text((pad * 2 + swatch, top + 2), name, fill="black", font=font)
    return _write_png(path, image)
