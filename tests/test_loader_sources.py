"""Lazy sources (issue 22, point 1): image folders indexed by name only, .npy/.npz memory-mapped,
built-in datasets unchanged; and the decoders the loader's workers use."""
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dcnn.data.arrays import map_npy, map_npz_member
from dcnn.data.dataset import CorruptDataError, Dataset, DatasetError
from dcnn.data.decode import BadImage, decode, exif_orientation, resolve_decoder
from dcnn.data.images import read_image
from dcnn.data.loader import Loader
from dcnn.data.sources import ArrayImages, ImageFiles, image_folder, open_sources
from dcnn.data.userdata import load_image_folder
from test_loader import batches, make_folder

Image = pytest.importorskip("PIL.Image")


# --- image folders ---------------------------------------------------------------------------------------

def test_image_folder_indexes_names_only_in_the_layouts_of_userdata(tmp_path, monkeypatch):
    split = make_folder(tmp_path / "split")
    flat = tmp_path / "flat"
    (split / "train").rename(flat)
    make_folder(tmp_path / "split")
    for root in (split, flat):
        expected = load_image_folder(root)
        monkeypatch.setattr("dcnn.data.sources.decode", lambda *a, **k: pytest.fail("indexing decoded a picture"))
        train, test = image_folder(root)
        monkeypatch.undo()
        assert train.classes == expected.classes == ("class0", "class1", "class2")
        assert np.array_equal(train.labels, expected.y_train) and np.array_equal(test.labels, expected.y_test)
        assert len(train) + len(test) == len(expected.y_train) + len(expected.y_test)
        # the same images in the same order, decoded exactly as the in-memory loader decodes them (Pillow)
        x, y = batches(Loader(train, len(train), shuffle=False, decoder="pillow"))[0]
        assert np.array_equal(x, np.rint(expected.x_train * 255).astype(np.uint8)) and np.array_equal(y, expected.y_train)
    assert len(image_folder(flat)[1]) == round(0.2 * 7) + round(0.2 * 6) + round(0.2 * 5)   # a held-out share


def test_a_source_pickles_small_and_keeps_odd_file_names(tmp_path):
    """Workers get the index of paths and labels as mapped temporary files (removed with the source)."""
    import gc
    names = [str(tmp_path / f"caf\u00e9 {i}.jpg") for i in range(3000)] + [str(tmp_path / "bad-\udcff.jpg")]
    source = ImageFiles(names, np.zeros(len(names)), ("a",))
    data = pickle.dumps(source)
    copy = pickle.loads(data)
    assert copy.paths == names and len(data) < 2000 and isinstance(copy._blob, np.memmap)
    folder = source._spilled["folder"]
    assert len(list(Path(folder).iterdir())) == 3
    del source
    gc.collect()
    assert not Path(folder).exists() and copy.paths == names          # (the mapping outlives the file)


def test_fast_decoders_give_pillows_pixels(tmp_path):
    root = make_folder(tmp_path / "pics", png_every=100)
    train, _ = image_folder(root)
    reference, _ = batches(Loader(train, len(train), shuffle=False, decoder="pillow"))[0]
    for name in ("simplejpeg", "turbojpeg"):
        try:
            resolve_decoder(name)
        except ImportError:
            continue
        x, _ = batches(Loader(train, len(train), shuffle=False, decoder=name))[0]
        assert np.abs(x.astype(int) - reference).max() <= 1, name      # the same libjpeg-turbo IDCT, bar rounding


def test_open_sources_and_the_path_shortcut(tmp_path):
    root = make_folder(tmp_path / "pics")
    train, test = open_sources(root)
    assert len(Loader(root, 4, split="test")) == -(-len(test) // 4)
    with pytest.raises(DatasetError, match="neither a folder"):
        open_sources(tmp_path / "pics" / "train" / "class0" / "000.jpg")


# --- arrays ----------------------------------------------------------------------------------------------

LAYOUTS = {"NHW": (12, 5, 6), "NCHW": (12, 3, 5, 6), "NHWC": (12, 5, 6, 3)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_npz_members_are_memory_mapped_in_every_layout(tmp_path, layout):
    x = np.random.default_rng(0).integers(0, 256, LAYOUTS[layout], dtype=np.uint8)
    y = np.arange(12) % 4
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:3], y_test=y[:3],
             classes=np.array(["a", "b", "c", "d"]))
    train, test = open_sources(tmp_path / "d.npz")
    assert isinstance(train.x, np.memmap) and train.classes == ("a", "b", "c", "d") and len(test) == 3
    got, labels = batches(Loader(train, 12, shuffle=False))[0]
    nchw = {"NHW": lambda: x[:, None], "NCHW": lambda: x, "NHWC": lambda: x.transpose(0, 3, 1, 2)}[layout]()
    assert got.dtype == np.uint8 and np.array_equal(got, nchw) and np.array_equal(labels, y)
    assert len(pickle.dumps(train)) < 4000                         # the workers map the file themselves


def test_a_memmap_given_as_it_is_pickles_as_its_file(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(200 * 3 * 8 * 8, dtype=np.uint32).astype(np.uint8).reshape(200, 3, 8, 8))
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    source = ArrayImages(x, np.zeros(200, int))
    assert len(pickle.dumps(source)) < 200 * 8 + 2000 and np.array_equal(pickle.loads(pickle.dumps(source)).x, x)


def test_npy_files_and_float_arrays(tmp_path):
    x = np.random.default_rng(1).random((10, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    source = ArrayImages.from_npy(tmp_path / "x.npy", tmp_path / "y.npy")
    got, _ = batches(Loader(source, 10, shuffle=False))[0]
    assert got.dtype == np.float32 and np.array_equal(got, x)


def test_compressed_npz_members_are_refused_with_what_to_do(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", x_train=np.zeros((4, 2, 2), np.uint8), y_train=np.zeros(4, int))
    with pytest.raises(DatasetError, match="compressed .*cannot be memory-mapped: re-save .* np.savez"):
        ArrayImages.from_npz(tmp_path / "c.npz")


def test_damaged_or_unsafe_array_files_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptDataError, match="Python objects"):
        map_npy(tmp_path / "obj.npy")
    np.save(tmp_path / "x.npy", np.zeros((100, 8, 8), np.uint8))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[:-10])
    with pytest.raises(CorruptDataError, match="truncated"):
        map_npy(tmp_path / "short.npy")
    (tmp_path / "junk.npy").write_bytes(b"hello")
    with pytest.raises(CorruptDataError, match="not a readable .npy"):
        map_npy(tmp_path / "junk.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    with pytest.raises(CorruptDataError, match="not a readable .npz"):
        ArrayImages.from_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "nolabels.npz", x_train=np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(CorruptDataError, match="lacks y_train"):
        ArrayImages.from_npz(tmp_path / "nolabels.npz")
    with pytest.raises(DatasetError, match="has no array 'x_val'"):
        map_npz_member(tmp_path / "nolabels.npz", "x_val")
    with pytest.raises(CorruptDataError, match="must be uint8 .* or floats"):
        ArrayImages(np.zeros((3, 2, 2), np.int32), np.zeros(3, int))
    with pytest.raises(CorruptDataError, match="integer labels"):
        ArrayImages(np.zeros((3, 2, 2), np.uint8), np.array([0.5, 1, 2]))


def test_a_fortran_order_member_and_a_zip64_archive(tmp_path):
    x = np.asfortranarray(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
    path = tmp_path / "f.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in (("x_train", x), ("y_train", np.array([0, 1]))):
            buffer = io.BytesIO()
            np.save(buffer, value)
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                f.write(buffer.getvalue())
    source = ArrayImages.from_npz(path)
    assert np.array_equal(source.x, x)


def test_built_in_datasets_as_sources():
    x = np.random.default_rng(2).integers(0, 256, (9, 1, 4, 4)).astype(np.uint8)
    data = Dataset("tiny", np.divide(x, np.float32(255), dtype=np.float32), np.arange(9) % 3, x[:0], np.zeros(0, int),
                   ("a", "b", "c"))
    source = ArrayImages.from_dataset(data)
    assert source.dtype == np.uint8 and np.array_equal(source.x, x)
    got, _ = batches(Loader(source, 9, shuffle=False))[0]
    assert np.array_equal(np.divide(got, np.float32(255), dtype=np.float32), data.x_train)


def test_fashion_mnist_streams_the_images_it_loads():
    from dcnn.data.datasets import load
    try:
        data = load("fashion-mnist", download=False)
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST is not installed here: {exc}")
    x, y = next(iter(Loader(ArrayImages.from_dataset(data), 256, shuffle=False)))
    assert x.dtype == np.uint8 and np.array_equal(np.divide(x, np.float32(255), dtype=np.float32),
                                                  data.x_train[:256]) and np.array_equal(y, data.y_train[:256])


# --- decoding --------------------------------------------------------------------------------------------

def _jpeg(a, **kw):
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, "JPEG", quality=95, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(orientation):
    from PIL import ImageOps
    a = np.zeros((8, 16, 3), np.uint8)
    a[:4, :4] = 255
    a[:, 12:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(a, exif=exif.tobytes())
    assert exif_orientation(data) == orientation
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    for name in ("simplejpeg", "pillow"):
        if name == "simplejpeg":
            pytest.importorskip("simplejpeg")
        got = decode(data, 3, None, name)
        assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() <= 1, name


def test_transparency_16_bits_and_gray_as_dcnn_images_reads_them(tmp_path):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray((rng.integers(0, 65536, (6, 7))).astype(np.uint16)).save(tmp_path / "b.png")
    Image.fromarray(rgba[..., 0]).save(tmp_path / "c.png")
    for name, channels in (("a", 3), ("a", 1), ("b", 1), ("b", 3), ("c", 3)):
        path = tmp_path / f"{name}.png"
        expected = np.rint(read_image(path, channels) * 255).transpose(1, 2, 0)
        got = decode(path.read_bytes(), channels, None, "pillow")
        assert got.dtype == np.uint8 and got.shape == expected.shape
        assert np.abs(got.astype(int) - expected).max() <= 1, (name, channels)


def test_resize_keeps_the_aspect_ratio_as_dcnn_images_does(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[5:15, 10:30] = 200
    Image.fromarray(a).save(tmp_path / "wide.png")
    got = decode((tmp_path / "wide.png").read_bytes(), 3, (16, 16), "pillow")
    expected = read_image(tmp_path / "wide.png", 3, (16, 16), fit="pad").transpose(1, 2, 0) * 255
    assert got.shape == (16, 16, 3) and np.abs(got - expected).mean() < 2          # 8-bit against float resizing


def test_what_is_not_an_image_raises_bad_image():
    good = _jpeg(np.zeros((8, 8, 3), np.uint8))
    for data, reason in ((b"", "empty file"), (b"hello", "not a readable image"), (good[:len(good) // 2], "not a readable"),
                         (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not a readable image")):
        for name in ("pillow", "simplejpeg"):
            with pytest.raises(BadImage, match=reason):
                decode(data, 3, None, name)


@pytest.mark.parametrize("name", ["simplejpeg", "pillow"])
def test_a_large_jpeg_is_decoded_at_a_reduced_scale_first(name):
    if name == "simplejpeg":
        pytest.importorskip("simplejpeg")
    yy, xx = np.mgrid[:480, :640]
    a = np.stack([xx * 255 // 640, yy * 255 // 480, (xx + yy) % 256], -1).astype(np.uint8)
    data = _jpeg(a)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((64, 48), Image.Resampling.BILINEAR))
    got = decode(data, 3, (48, 64), name)
    assert got.shape == (48, 64, 3) and np.abs(got.astype(int) - full).mean() < 1
