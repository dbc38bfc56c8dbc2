"""Augmentation of a whole batch at once, in a loader's worker: flips, random crops with padding,
shifts and colour jitter, vectorised over the batch (no loop over images or pixels).

The random numbers come in as an array ``u`` of shape (B, DRAWS), uniform in [0, 1), one row per
image, drawn by the loader from a generator keyed by (seed, epoch, batch): so an image's
augmentation depends on where it falls in the epoch, never on which worker or rank made the batch.
Each kind of augmentation reads its own columns, so turning one on leaves the others' draws as they are.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DRAWS = 8
_FLIP, _CROP_Y, _CROP_X, _SHIFT_Y, _SHIFT_X, _BRIGHT, _CONTRAST, _SATURATION = range(DRAWS)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)       # ITU-R 601-2, as Pillow's convert("L")


@dataclass(frozen=True)
class Augment:
    """What to do to each training image, on (B, H, W, C) batches, uint8 (0..255) or float32 (0..1).

    - ``flip``: a left-right flip with probability 1/2;
    - ``crop_padding``: pad by that many zero pixels on each side, then crop the image's size at a
      random place (torchvision's ``RandomCrop(size, padding=p)``): a shift of up to p with black fill;
    - ``shift``: a shift of up to that many pixels with the edge pixels repeated (no black border);
    - ``brightness``, ``contrast``, ``saturation``: colour jitter as torchvision's ``ColorJitter``,
      each a factor drawn uniformly from [1 - j, 1 + j] and applied in that order (saturation
      only to RGB images).
    """
    flip: bool = False
    crop_padding: int = 0
    shift: int = 0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def __post_init__(self):
        if not isinstance(self.flip, bool):
            raise TypeError(f"Augment flip must be True or False; got {self.flip!r}")
        for name in ("crop_padding", "shift"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 1024:
                raise ValueError(f"Augment {name} must be an int of pixels in [0, 1024]; got {value!r}")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"Augment {name} must be a number in [0, 1) (factors in [1 - j, 1 + j]); "
                                 f"got {value!r}")

    @property
    def active(self) -> bool:
        return any(asdict(self).values())

    def __call__(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``x`` (B, H, W, C) and draws ``u`` (B, DRAWS) -> the augmented batch, same shape and dtype."""
        if x.ndim != 4 or u.shape != (x.shape[0], DRAWS):
            raise ValueError(f"Augment takes (B, H, W, C) images and (B, {DRAWS}) draws; got {x.shape}, {u.shape}")
        if self.flip:
            flip = np.flatnonzero(u[:, _FLIP] < 0.5)
            x = x.copy()
            x[flip] = x[flip, :, ::-1]
        if self.crop_padding:
            x = translate(x, _offsets(u[:, _CROP_Y], self.crop_padding), _offsets(u[:, _CROP_X], self.crop_padding),
                          fill="zero")
        if self.shift:
            x = translate(x, _offsets(u[:, _SHIFT_Y], self.shift), _offsets(u[:, _SHIFT_X], self.shift), fill="edge")
        if self.brightness or self.contrast or self.saturation:
            x = self._jitter(x, u)
        return np.ascontiguousarray(x)

    def _jitter(self, x, u):
        """Brightness, contrast, saturation: each a blend clipped to the value range, in place on one
        float32 copy of the batch."""
        top = np.float32(255 if x.dtype == np.uint8 else 1)
        f = x.astype(np.float32)
        factor = lambda col, j: (1 + j * (2 * u[:, col] - 1)).astype(np.float32)[:, None, None, None]
        if self.brightness:
            f *= factor(_BRIGHT, self.brightness)
            np.clip(f, 0, top, out=f)
        if self.contrast:
            mean = _gray(f).mean(axis=(1, 2), dtype=np.float32)[:, None, None, None]
            c = factor(_CONTRAST, self.contrast)
            f *= c
            f += (1 - c) * mean
            np.clip(f, 0, top, out=f)
        if self.saturation and f.shape[3] == 3:
            s = factor(_SATURATION, self.saturation)
            gray = _gray(f)[..., None] * (1 - s)
            f *= s
            f += gray
            np.clip(f, 0, top, out=f)
        if x.dtype == np.uint8:
            return np.rint(f, out=f).astype(np.uint8)
        return f.astype(x.dtype, copy=False)


def _gray(f: np.ndarray) -> np.ndarray:
    """(B, H, W) luma of (B, H, W, C) float32."""
    if f.shape[3] == 1:
        return f[..., 0]
    return f[..., 0] * _LUMA[0] + f[..., 1] * _LUMA[1] + f[..., 2] * _LUMA[2]


def _offsets(u: np.ndarray, p: int) -> np.ndarray:
    """Shifts in [-p, p] with equal chances, from uniform draws."""
    return np.minimum(np.floor(u * (2 * p + 1)).astype(np.int64), 2 * p) - p


def translate(x: np.ndarray, dy: np.ndarray, dx: np.ndarray, fill: str = "zero") -> np.ndarray:
    """Each image of (B, H, W, C) moved by its own (dy, dx): output[b, i, j] = x[b, i - dy, j - dx],
    outside pixels zero (``fill="zero"``) or the nearest edge pixel (``"edge"``).

    The loop runs over the distinct shifts (at most 2p + 1 per axis), each moving every image that
    shares that shift in one slice assignment; never over images or pixels."""
    return _shift_axis(_shift_axis(x, dy, 1, fill), dx, 2, fill)


def _shift_axis(x: np.ndarray, d: np.ndarray, axis: int, fill: str) -> np.ndarray:
    if not d.any():
        return x
    out = np.zeros_like(x) if fill == "zero" else np.empty_like(x)
    n = x.shape[axis]
    at = lambda sl: (slice(None),) * axis + (sl,)           # an index along ``axis`` (after the batch one)
    for s in np.unique(d):
        s = int(s)
        idx = np.flatnonzero(d == s)
        if abs(s) >= n:
            if fill == "edge":
                out[idx] = x[idx][at(slice(0, 1) if s > 0 else slice(n - 1, n))]
            continue
        src = slice(0, n - s) if s >= 0 else slice(-s, n)
        dst = slice(s, n) if s >= 0 else slice(0, n + s)
        sub = x[idx]
        out[(idx,) + at(dst)[1:]] = sub[at(src)]
        if fill == "edge" and s > 0:
            out[(idx,) + at(slice(0, s))[1:]] = sub[at(slice(0, 1))]
        elif fill == "edge" and s < 0:
            out[(idx,) + at(slice(n + s, n))[1:]] = sub[at(slice(n - 1, n))]
    return out
