"""Image files (PNG, JPEG, anything Pillow reads) as float32 (C, H, W) in [0, 1], for predict and visualize.

What a viewer shows is what the model gets:

- the EXIF orientation of a photo is applied (``ImageOps.exif_transpose``);
- 16-bit images are scaled by 65535, not clipped at 255;
- transparent pixels are composited over white, as a viewer shows them, so black ink
  on a transparent background reads as black on white (``predict`` then inverts it
  to the light-on-dark look of (Fashion-)MNIST);
- an image with more pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` is refused with a
  ``ValueError`` naming the limit (a decompression bomb), before its pixels are decoded.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)    # ITU-R 601-2, as Pillow's convert("L")


def _pillow():
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError as exc:
        raise ImportError("reading image files needs Pillow: pip install pillow (in a clone of dcnn: pip install -e '.[images]')") from exc
    return Image, ImageOps, UnidentifiedImageError


def _as_float(img) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 1 or 3) float32 in [0, 1] and the alpha channel (H, W) or None."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float32)
        # "I" holds 16-bit PNGs in older Pillow versions; 32-bit integer images are rare.
        scale = 65535.0 if mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(a.max())
        return np.clip(a / scale, 0, 1)[..., None], None
    if mode == "F":
        return np.clip(np.asarray(img, np.float32), 0, 1)[..., None], None
    transparent = mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info
    if transparent:
        a = np.asarray(img.convert("RGBA"), np.float32) / 255
        rgb, alpha = a[..., :3], a[..., 3]
        if mode in ("LA", "La"):
            rgb = rgb[..., :1]
        return rgb, alpha
    target = "L" if mode in ("1", "L") else "RGB"
    return np.asarray(img.convert(target), np.float32)[..., None] / 255 if target == "L" else \
        np.asarray(img.convert(target), np.float32) / 255, None


def _resize(a: np.ndarray, size, Image) -> np.ndarray:
    """Bilinear resize of each channel in float ("F" mode), so 16-bit precision is kept."""
    h, w = size
    if a.shape[:2] == (h, w):
        return a
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(a[..., i]), mode="F")
                                .resize((w, h), Image.Resampling.BILINEAR)) for i in range(a.shape[-1])], axis=-1)


def _pad_to_aspect(a: np.ndarray, size) -> np.ndarray:
    """Pad (H, W, C) with its own border colour to the aspect ratio of ``size``, image centred,
    so that the resize after it scales the picture without stretching it."""
    h, w = a.shape[:2]
    th, tw = size
    if h * tw == w * th:
        return a
    if h * tw > w * th:          # too tall: widen
        new_h, new_w = h, max(w, int(round(h * tw / th)))
    else:                        # too wide: heighten
        new_h, new_w = max(h, int(round(w * th / tw))), w
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean(axis=0)
    out = np.empty((new_h, new_w, a.shape[2]), np.float32)
    out[...] = border
    top, left = (new_h - h) // 2, (new_w - w) // 2
    out[top:top + h, left:left + w] = a
    return out


def read_image(path, channels: int | None = None, size: tuple[int, int] | None = None,
               fit: str = "stretch") -> np.ndarray:
    """One image file as (C, H, W) float32 in [0, 1].

    ``channels`` 1 gives grayscale, 3 RGB (default: gray images stay gray, others RGB);
    ``size`` (H, W) resizes to the model's input: ``fit="pad"`` keeps the aspect ratio
    (the picture is padded with its border colour first), ``"stretch"`` does not.
    """
    if fit not in ("pad", "stretch"):
        raise ValueError(f"fit must be 'pad' or 'stretch'; got {fit!r}")
    Image, ImageOps, UnidentifiedImageError = _pillow()
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if channels not in (None, 1, 3):
        raise ValueError(f"an image file gives 1 (grayscale) or 3 (RGB) channels; the model expects {channels}")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its limit; both are refused here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                img.load()
                gray = img.mode in GRAY_MODES
                pixels, alpha = _as_float(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{path} is too large to open safely: more than Pillow's limit of {limit:,} pixels "
                         f"(PIL.Image.MAX_IMAGE_PIXELS; a decompression bomb?). Resize it first ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc})") from None
    if alpha is not None:
        pixels = pixels * alpha[..., None] + (1 - alpha[..., None])        # over white
    channels = channels or (1 if gray else 3)
    if channels == 1 and pixels.shape[-1] == 3:
        pixels = (pixels @ _LUMA)[..., None]
    elif channels == 3 and pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if size is not None:
        if fit == "pad":
            pixels = _pad_to_aspect(pixels, size)
        pixels = _resize(pixels, size, Image)
    return np.ascontiguousarray(np.clip(np.moveaxis(pixels, -1, 0), 0, 1), dtype=np.float32)


def model_image(path, input_shape, invert: str = "auto") -> np.ndarray:
    """An image file exactly as ``dcnn predict`` classifies it (and ``dcnn visualize --image`` shows it):
    (C, H, W) float32, the aspect ratio kept (padded, not stretched), and for a one-channel model
    inverted to the light-on-dark look of (Fashion-)MNIST when ``invert`` is "yes", or "auto" and
    the picture's border is light."""
    if invert not in ("auto", "yes", "no"):
        raise ValueError(f"invert must be 'auto', 'yes' or 'no'; got {invert!r}")
    c, h, w = input_shape
    a = read_image(path, c, (h, w), fit="pad")
    if c == 1 and invert != "no":
        border = np.concatenate([a[0, 0], a[0, -1], a[0, :, 0], a[0, :, -1]])
        if invert == "yes" or border.mean() > 0.5:
            a = 1.0 - a
    return np.ascontiguousarray(a, dtype=np.float32)


def load_images(paths, input_shape, invert: str = "auto") -> np.ndarray:
    """Image files -> float32 (N, C, H, W) in [0, 1], each as ``model_image`` reads it."""
    return np.stack([model_image(p, input_shape, invert) for p in paths]).astype(np.float32)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand_image_paths(items) -> list[Path]:
    """Files as given, folders as the image files in them (sorted), globs expanded (for predict).

    A pattern that matches nothing stays as it is, so that it is reported as not found.
    """
    import glob
    out = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            out += found or [path]       # an empty folder stays, to be reported as holding no image
        elif not path.exists() and glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            out += [Path(m) for m in matches] if matches else [path]
        else:
            out.append(path)
    return out
