"""The loader's augmentation (issue 22, point 2): the vectorised batch transforms against plain
per-image references, in uint8 and float32."""
import numpy as np
import pytest

from dcnn.data.transforms import DRAWS, Augment, translate


def _batch(dtype=np.uint8, n=16, h=7, w=9, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    return (x if dtype == np.uint8 else (x / 255).astype(np.float32)), rng.random((n, DRAWS))


def _shift_one(img, dy, dx, fill):
    """Reference: one image moved by (dy, dx), pixel by pixel."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            if fill == "edge":
                out[i, j] = img[min(max(si, 0), h - 1), min(max(sj, 0), w - 1)]
            elif 0 <= si < h and 0 <= sj < w:
                out[i, j] = img[si, sj]
    return out


@pytest.mark.parametrize("fill", ["zero", "edge"])
def test_translate_matches_a_per_image_reference(fill):
    x, _ = _batch()
    rng = np.random.default_rng(1)
    dy, dx = rng.integers(-8, 9, 16), rng.integers(-10, 11, 16)      # some beyond the image
    got = translate(x, dy, dx, fill)
    for k in range(16):
        assert np.array_equal(got[k], _shift_one(x[k], dy[k], dx[k], fill)), (k, dy[k], dx[k])


def test_flip_crop_and_shift_follow_their_own_draws():
    x, u = _batch()
    flipped = Augment(flip=True)(x, u)
    for k in range(16):
        assert np.array_equal(flipped[k], x[k, :, ::-1] if u[k, 0] < 0.5 else x[k])
    assert 0 < (u[:, 0] < 0.5).sum() < 16
    cropped = Augment(crop_padding=3)(x, u)
    offsets = lambda col, p: np.minimum(np.floor(u[:, col] * (2 * p + 1)).astype(int), 2 * p) - p
    for k in range(16):
        assert np.array_equal(cropped[k], _shift_one(x[k], offsets(1, 3)[k], offsets(2, 3)[k], "zero"))
    shifted = Augment(shift=2)(x, u)
    for k in range(16):
        assert np.array_equal(shifted[k], _shift_one(x[k], offsets(3, 2)[k], offsets(4, 2)[k], "edge"))
    # turning colour jitter on leaves the geometric draws as they were
    assert np.array_equal(Augment(flip=True, crop_padding=3, brightness=0.5)(x, u) == 0,
                          Augment(flip=True, crop_padding=3)(x, u) == 0)


def _jitter_one(img, b, c, s, top):
    """Reference: torchvision's ColorJitter blends, one image, float64."""
    f = img.astype(np.float64)
    luma = lambda a: a @ np.array([0.299, 0.587, 0.114]) if a.shape[2] == 3 else a[..., 0]
    f = np.clip(f * b, 0, top)
    mean = luma(f).mean()
    f = np.clip(c * f + (1 - c) * mean, 0, top)
    if f.shape[2] == 3:
        f = np.clip(s * f + (1 - s) * luma(f)[..., None], 0, top)
    return f


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.float32, 3), (np.uint8, 1)])
def test_colour_jitter_matches_torchvisions_blends(dtype, channels):
    x, u = _batch(dtype, c=channels)
    top = 255 if dtype == np.uint8 else 1
    aug = Augment(brightness=0.4, contrast=0.3, saturation=0.5)
    got = aug(x, u)
    assert got.dtype == dtype and got.shape == x.shape
    factor = lambda col, j: 1 + j * (2 * u[:, col] - 1)
    b, c, s = factor(5, 0.4), factor(6, 0.3), factor(7, 0.5)
    for k in range(16):
        want = _jitter_one(x[k], b[k], c[k], s[k], top)
        tolerance = 1 if dtype == np.uint8 else 1e-5
        assert np.abs(got[k].astype(np.float64) - want).max() <= tolerance
    assert not np.array_equal(got, x)


def test_nothing_to_do_returns_the_batch_unchanged():
    x, u = _batch()
    assert np.array_equal(Augment()(x, u), x) and not Augment().active and Augment(shift=1).active


@pytest.mark.parametrize("kwargs, message", [
    ({"flip": 1}, "flip must be True or False"), ({"crop_padding": -1}, "crop_padding"),
    ({"shift": 2.5}, "shift"), ({"brightness": 1.0}, r"brightness must be a number in \[0, 1\)"),
    ({"contrast": -0.1}, "contrast"), ({"saturation": "x"}, "saturation")])
def test_bad_settings_name_the_problem(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Augment(**kwargs)
