"""Checks on user input, so mistakes fail early with a message that names them."""
from __future__ import annotations

import math
from numbers import Real

import numpy as np

from backends import Backend


def check_number(owner: str, name: str, value, *, low: float, high: float = math.inf,
                 low_open: bool = False, high_open: bool = True) -> float:
    """``value`` as a float, if it is a real, finite number in the stated interval; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner} {name} must be a number; got {type(value).__name__} {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        interval = (("(" if low_open else "[") + f"{low:g}, " + (f"{high:g}" if math.isfinite(high) else "inf")
                    + (")" if high_open or not math.isfinite(high) else "]"))
        raise ValueError(f"{owner} {name} must be a finite number in {interval}; got {value!r}")
    return value


# One sample may hold at most this many values (2**28: a 16384 x 16384 image); larger is a mistake or an attack.
MAX_SAMPLE_VALUES = 2 ** 28


def check_input_shape(shape, name: str = "input_shape") -> tuple:
    """``shape`` (one sample's, no batch axis) as a tuple of positive ints of sane total size."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{name} must be a tuple of ints such as (1, 28, 28); got {shape!r}")
    dims = tuple(shape)
    if not dims or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{name} must be a non-empty tuple of ints such as (1, 28, 28); got {shape!r}")
    dims = tuple(int(d) for d in dims)
    if any(d < 1 for d in dims):
        raise ValueError(f"{name} must have every dimension >= 1; got {dims}")
    if int(np.prod(dims, dtype=np.float64)) > MAX_SAMPLE_VALUES:
        raise ValueError(f"{name} {dims} is too large: {int(np.prod(dims, dtype=np.float64)):,} values per sample, "
                         f"the limit is {MAX_SAMPLE_VALUES:,}")
    return dims


# A model's input: at most this many pixels a side and this many channels (--image-size is held to the
# same side).  A weights file that claims more is damaged or hostile, and is refused before any allocation.
MAX_IMAGE_SIDE = 4096
MAX_CHANNELS = 1024


def check_image_shape(shape, name: str = "input_shape") -> tuple:
    """``shape`` as (channels, height, width) within the bounds above (and ``check_input_shape``'s)."""
    dims = check_input_shape(shape, name)
    if len(dims) != 3:
        raise ValueError(f"{name} must be (channels, height, width); got {dims}")
    c, h, w = dims
    if c > MAX_CHANNELS or h > MAX_IMAGE_SIDE or w > MAX_IMAGE_SIDE:
        raise ValueError(f"{name} {dims} is beyond what dcnn accepts: at most {MAX_CHANNELS} channels and "
                         f"{MAX_IMAGE_SIDE} pixels a side")
    return dims


def as_batch(backend: Backend, x, expected_shape: tuple | None, name: str = "x"):
    """Validate images or features and return them as a float32 array on ``backend``.

    Host (NumPy) data is checked on the host before it moves; device data with
    one reduction (one sync per call, never per batch).
    """
    on_device = backend.owns(x) and not isinstance(x, np.ndarray)
    if not on_device:
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception:
                raise TypeError(f"{name} must be an array; got {type(x).__name__}") from None
        dtype_ok = np.issubdtype(x.dtype, np.floating)
    else:
        dtype_ok = backend.xp.isdtype(x.dtype, "real floating")
    if not dtype_ok:
        raise TypeError(f"{name} must hold floating-point values (e.g. float32 scaled to [0, 1]); "
                        f"got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); give at least one sample")
    if expected_shape is not None:
        if x.ndim != len(expected_shape) + 1:
            raise ValueError(f"{name} must have shape (N, {', '.join(map(str, expected_shape))}); "
                             f"got {x.ndim}-D shape {tuple(x.shape)}")
        if tuple(x.shape[1:]) != tuple(expected_shape):
            raise ValueError(f"{name} must have shape (N, {', '.join(map(str, expected_shape))}); "
                             f"got {tuple(x.shape)}"
                             + (f" (wrong channel count: {x.shape[1]} instead of {expected_shape[0]})"
                                if len(expected_shape) == 3 and x.shape[1] != expected_shape[0] else ""))
    # The check runs after the cast to float32: a float64 1e39 is finite but becomes inf.
    if on_device:
        xp = backend.xp
        x = xp.astype(x, xp.float32, copy=False)
        finite = bool(xp.all(xp.isfinite(x)))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            host = x.astype(np.float32, copy=False)
        finite = bool(np.isfinite(host).all())
        if finite:
            x = backend.from_numpy(host, np.float32)
    if not finite:
        raise ValueError(f"{name} contains NaN or Inf values, or values too large for float32 "
                         "(|x| > 3.4e38)")
    return x


def as_targets(backend: Backend, y, count: int, classes: int, name: str = "y"):
    """Integer labels in [0, classes) or (count, classes) one-hot rows, on ``backend``."""
    y = backend.to_numpy(y) if (backend.owns(y) and not isinstance(y, np.ndarray)) else np.asarray(y)
    if y.shape[:1] != (count,):
        raise ValueError(f"x and {name} have different lengths: {count} samples but {y.shape[0] if y.ndim else 0} "
                         f"targets")
    if y.ndim == 1:
        if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating)
                                                        and np.all(np.mod(y, 1) == 0))):
            raise TypeError(f"{name} must be integer class labels; got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(f"{name} has labels outside [0, {classes - 1}]: found {int(y.min())}..{int(y.max())} "
                             f"for a model with {classes} outputs")
        return backend.from_numpy(y.astype(np.int64))
    if y.ndim == 2 and y.shape[1] == classes:
        if not np.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or Inf values")
        return backend.from_numpy(y, np.float32)
    raise ValueError(f"{name} must be labels of shape ({count},) or one-hot of shape ({count}, {classes}); "
                     f"got {y.shape}")
