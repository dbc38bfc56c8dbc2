"""Issue 13: image files given to predict and visualize read as a viewer shows them."""
import numpy as np
import pytest

from dcnn.data.images import load_images
from dcnn.data.images import read_image

Image = pytest.importorskip("PIL.Image")


def ramp(h=32, w=48):
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


def test_16_bit_png_is_scaled_by_65535(tmp_path):
    values = np.round(ramp() * 65535).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    a = read_image(tmp_path / "g16.png")
    assert a.shape == (1, 32, 48)
    np.testing.assert_allclose(a[0], values / 65535, atol=1e-6)
    # dark 16-bit values (all < 256) must stay dark, not become full white
    dark = np.full((8, 8), 200, np.uint16)
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    np.testing.assert_allclose(read_image(tmp_path / "dark16.png"), 200 / 65535, atol=1e-7)


def test_black_ink_on_transparent_background_reads_as_black_on_white(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)          # black everywhere; only the ink is opaque
    rgba[10:18, 6:22, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ink.png")
    a = read_image(tmp_path / "ink.png", channels=1)
    assert a[0, 0, 0] == 1.0 and a[0, 12, 10] == 0.0
    # predict's auto-invert then gives MNIST's white-on-black
    x = load_images([tmp_path / "ink.png"], (1, 28, 28))
    assert x[0, 0, 0, 0] == 0.0 and x[0, 0, 12, 10] == 1.0
    la = np.zeros((28, 28, 2), np.uint8)
    la[10:18, 6:22, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "ink_la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "ink_la.png", channels=1), a)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)        # wide, bright on its left edge
    pixels[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6                                # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    a = read_image(tmp_path / "photo.jpg")
    assert a.shape == (3, 40, 20)                   # displayed tall
    assert a[:, :10].mean() > 0.9 and a[:, -10:].mean() < 0.1   # the bright edge is now at the top


def test_decompression_bomb_is_a_named_error_with_the_limit(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)   # a 100x100 image stands in for 20000x20000
    with pytest.raises(ValueError, match=r"big.png is too large to open safely: more than Pillow's limit of "
                                         r"4,000 pixels \(PIL.Image.MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 9000)   # between 1x and 2x: Pillow only warns
    with pytest.raises(ValueError, match="limit of 9,000 pixels"):
        read_image(tmp_path / "big.png")


def test_eight_bit_gray_and_rgb_are_unchanged(tmp_path):
    pixels = (ramp() * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "g.png")
    np.testing.assert_allclose(read_image(tmp_path / "g.png")[0], pixels / 255, atol=1e-6)
    rgb = np.stack([pixels, 255 - pixels, pixels // 2], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    a = read_image(tmp_path / "c.png")
    assert a.shape == (3, 32, 48)
    np.testing.assert_allclose(np.moveaxis(a, 0, -1), rgb / 255, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "c.png", channels=1)[0],
                               np.asarray(Image.fromarray(rgb).convert("L")) / 255, atol=1 / 255)


def test_a_folder_given_as_an_image_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not an image file"):
        read_image(tmp_path)
