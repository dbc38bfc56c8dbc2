"""Image bytes -> uint8 (H, W, C) at the size the model takes, in a loader's worker process.

Three decoders, measured in ``scripts/bench_loader.py --decoders`` (64x64 JPEGs, one core):

- ``simplejpeg`` (libjpeg-turbo, bundled in its wheel): JPEG only, the fastest (about 5x Pillow);
- ``turbojpeg`` (PyTurboJPEG, needs the system's libturbojpeg): JPEG only, between the two;
- ``pillow``: every format, and the fallback for what the others refuse (PNG, CMYK JPEGs...).

``"auto"`` takes simplejpeg when installed, else Pillow.  The pixels match what ``dcnn.data.images``
reads (EXIF orientation applied, transparency over white, 16-bit scaled, aspect kept by padding
with the border colour) except that resizing is done in 8 bits (Pillow's bilinear filter).

A file that cannot be decoded raises ``BadImage`` with the reason; the loader skips it (or stops,
when strict).
"""
from __future__ import annotations

import io
import struct
import warnings

import numpy as np

DECODERS = ("auto", "simplejpeg", "turbojpeg", "pillow")
MAX_PIXELS = 89_478_485          # Pillow's default Image.MAX_IMAGE_PIXELS; more is refused (a decompression bomb)
JPEG_MAGIC = b"\xff\xd8\xff"


class BadImage(ValueError):
    """An image file that cannot be decoded (truncated, empty, not an image...)."""


def resolve_decoder(name: str) -> str:
    """The decoder that ``name`` means here; a clear ImportError when it is not installed."""
    if name not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}; got {name!r}")
    if name == "auto":
        try:
            import simplejpeg  # noqa: F401
            return "simplejpeg"
        except ImportError:
            name = "pillow"
    if name == "simplejpeg":
        try:
            import simplejpeg  # noqa: F401
        except ImportError:
            raise ImportError("decoder='simplejpeg' needs simplejpeg: pip install simplejpeg "
                              "(in a clone of dcnn: pip install -e '.[stream]')") from None
    if name == "turbojpeg":
        _turbo()
    if name == "pillow":
        _pillow()
    return name


def _pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError("reading image files needs Pillow: pip install pillow "
                          "(in a clone of dcnn: pip install -e '.[stream]')") from None
    return Image, ImageOps


_TURBO = None


def _turbo():
    global _TURBO
    if _TURBO is None:
        try:
            from turbojpeg import TurboJPEG
            _TURBO = TurboJPEG()
        except (ImportError, RuntimeError, OSError) as exc:
            raise ImportError(f"decoder='turbojpeg' needs PyTurboJPEG and the libturbojpeg library "
                              f"(pip install PyTurboJPEG; apt-get install libturbojpeg0): {exc}") from None
    return _TURBO


# --- EXIF orientation without Pillow (for the JPEG-only decoders) --------------------------------------

def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1..8) of a JPEG's APP1 segment; 1 when there is none."""
    pos = 2
    while pos + 4 <= min(len(data), 1 << 16):
        if data[pos] != 0xFF:
            return 1
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == 0xDA:                        # start of scan: no more headers
            return 1
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\0\0":
            tiff = data[pos + 10:pos + 2 + length]
            try:
                order = "<" if tiff[:2] == b"II" else ">"
                ifd = struct.unpack(order + "I", tiff[4:8])[0]
                count = struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]
                for k in range(count):
                    entry = tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
                    if struct.unpack(order + "H", entry[:2])[0] == 0x0112:
                        value = struct.unpack(order + "H", entry[8:10])[0]
                        return value if 1 <= value <= 8 else 1
            except struct.error:
                return 1
            return 1
        pos += 2 + length
    return 1


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) as a viewer shows it, given its EXIF orientation (as ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


# --- decoding -------------------------------------------------------------------------------------------

def _jpeg(data: bytes, channels: int, decoder: str, least: int = 0) -> np.ndarray:
    """A JPEG decoded by a fast decoder; ``least``: decode at a reduced scale (libjpeg's DCT scaling,
    1/2, 1/4, 1/8) as long as both sides stay at least that long."""
    if decoder == "simplejpeg":
        import simplejpeg
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        if h * w > MAX_PIXELS:
            raise BadImage(f"{w}x{h} pixels is more than the limit of {MAX_PIXELS:,} (a decompression bomb?)")
        a = simplejpeg.decode_jpeg(data, colorspace="GRAY" if channels == 1 else "RGB", strict=True,
                                   min_height=least, min_width=least)
    else:
        from turbojpeg import TJPF_GRAY, TJPF_RGB
        a = _turbo().decode(data, pixel_format=TJPF_GRAY if channels == 1 else TJPF_RGB)    # (no scaling)
    if a.ndim == 2:
        a = a[..., None]
    return orient(a, exif_orientation(data))


def _with_pillow(data: bytes, channels: int, least: int = 0) -> np.ndarray:
    Image, ImageOps = _pillow()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            if least and img.format == "JPEG":
                img.draft(img.mode, (least, least))      # DCT scaling, both sides kept >= least
            img = ImageOps.exif_transpose(img)
            img.load()
            mode = img.mode
            if mode.startswith("I;16") or mode in ("I", "F"):     # 16-bit and float: scale, then 8 bits
                a = np.asarray(img).astype(np.float32)
                scale = 1.0 if mode == "F" else (65535.0 if mode != "I" or a.max(initial=0) <= 65535
                                                 else float(a.max()))
                a = np.clip(np.rint(a / scale * 255), 0, 255).astype(np.uint8)[..., None]
                return np.repeat(a, 3, axis=-1) if channels == 3 else a
            if mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info:
                rgba = np.asarray(img.convert("RGBA"), np.float32)
                alpha = rgba[..., 3:] / 255
                rgb = rgba[..., :3] * alpha + 255 * (1 - alpha)          # over white, as a viewer shows it
                if channels == 1:
                    rgb = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
                return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(*rgb.shape[:2], channels)
            a = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    return a[..., None] if a.ndim == 2 else a


def pad_to_aspect(a: np.ndarray, size) -> np.ndarray:
    """Pad (H, W, C) uint8 with its mean border colour to the aspect ratio of ``size`` (image centred),
    as ``dcnn.data.images`` does, so that resizing does not stretch the picture."""
    h, w = a.shape[:2]
    th, tw = size
    if h * tw == w * th:
        return a
    if h * tw > w * th:
        new_h, new_w = h, max(w, int(round(h * tw / th)))
    else:
        new_h, new_w = max(h, int(round(w * th / tw))), w
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean(axis=0)
    out = np.empty((new_h, new_w, a.shape[2]), np.uint8)
    out[...] = np.clip(np.rint(border), 0, 255).astype(np.uint8)
    top, left = (new_h - h) // 2, (new_w - w) // 2
    out[top:top + h, left:left + w] = a
    return out


def resize(a: np.ndarray, size) -> np.ndarray:
    """(H, W, C) uint8 -> (size[0], size[1], C), aspect kept by padding, Pillow's bilinear filter."""
    if a.shape[:2] == tuple(size):
        return a
    Image, _ = _pillow()
    a = pad_to_aspect(a, size)
    h, w = size
    if a.shape[2] == 1:
        return np.asarray(Image.fromarray(a[..., 0]).resize((w, h), Image.Resampling.BILINEAR))[..., None]
    return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((w, h), Image.Resampling.BILINEAR))


def decode(data: bytes, channels: int, size=None, decoder: str = "pillow") -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, channels), resized to ``size`` (H, W) when given.

    ``decoder`` is a resolved name (``resolve_decoder``); JPEGs the fast decoders refuse are tried
    with Pillow before the file counts as bad.  A JPEG much larger than ``size`` is decoded at a
    reduced scale (1/2, 1/4 or 1/8, both sides kept at least max(size)) before it is resized: several
    times faster on photos.  Raises ``BadImage`` naming the reason.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    a = None
    error = None
    least = max(size) if size is not None else 0       # whatever the orientation, both sides suffice
    if decoder != "pillow" and data[:3] == JPEG_MAGIC:
        try:
            a = _jpeg(data, channels, decoder, least)
        except BadImage:
            raise
        except Exception as exc:                  # noqa: BLE001 - Pillow gets a second try, below
            error = exc
    if a is None:
        try:
            a = _with_pillow(data, channels, least)
        except ImportError:
            if error is not None:
                raise BadImage(f"not a readable JPEG ({error})") from None
            raise
        except Exception as exc:                  # noqa: BLE001 - any failure to decode is a bad file
            reason = error or exc
            if "DecompressionBomb" in type(exc).__name__:
                reason = exc
            raise BadImage(f"not a readable image ({type(reason).__name__}: {reason})") from None
    if a.shape[2] != channels:
        a = np.repeat(a, 3, axis=2) if channels == 3 else \
            np.clip(np.rint(a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)), 0, 255
                    ).astype(np.uint8)[..., None]
    return resize(a, size) if size is not None else a
