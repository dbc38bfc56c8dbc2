"""fashion-mosaic: made by its stated rules, the same bytes everywhere (the recorded checksum),
train and test garments kept apart, cached atomically, and loaded through dcnn.datasets."""
import dataclasses
import os
import types
from pathlib import Path

import numpy as np
import pytest

from dcnn.data import builtin, datasets, mosaic
from dcnn.data.dataset import CorruptDataError, Dataset, DataNotFoundError
from dcnn.utils.files import load_arrays, save_arrays

ROOT = Path(__file__).resolve().parents[1]

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not SYSTEM_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not "
                                   "installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache holding the dataset, made once from the real Fashion-MNIST."""
    if not SYSTEM_FASHION.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DCNN_DATA", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(root))
        ds = datasets.load("fashion-mosaic", download=False)
    return root, ds


@pytest.fixture
def in_cache(cache, monkeypatch):
    monkeypatch.delenv("DCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache[0]))
    return cache[0] / "dcnn" / mosaic.NAME / mosaic.FILE_NAME


@needs_fashion
def test_made_on_first_use_with_the_recorded_checksum(cache, in_cache):
    _, ds = cache
    assert isinstance(ds, Dataset) and ds.name == "fashion-mosaic" and ds.task == "segmentation"
    assert ds.x_train.shape == (12000, 1, 56, 56) and ds.x_test.shape == (2000, 1, 56, 56)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert ds.y_train.shape == (12000, 56, 56) and ds.y_train.dtype == np.int64
    assert ds.num_classes == 11 and ds.classes[0] == "background" and ds.classes[1] == "T-shirt/top"
    assert set(np.unique(ds.y_test)) == set(range(11))
    assert ds.source == in_cache.parent and in_cache.is_file()
    assert [p.name for p in in_cache.parent.iterdir()] == [mosaic.FILE_NAME]     # no temporary file left
    arrays, meta = load_arrays(in_cache)
    assert mosaic.content_hash(arrays) == mosaic.SHA256 == meta["sha256"]
    # The rule: a pixel is labelled (1..10) exactly where its intensity reaches the threshold.
    pixels = np.rint(ds.x_train * 255)[:, 0]
    assert np.array_equal(ds.y_train > 0, pixels >= mosaic.THRESHOLD)


@needs_fashion
def test_second_load_reads_the_file(in_cache, monkeypatch):
    monkeypatch.setattr(mosaic, "make", lambda *a, **k: pytest.fail("made again although the file is there"))
    ds = datasets.load("Fashion_Mosaic", download=False)
    assert ds.y_test.shape == (2000, 56, 56)
    assert ds.limit(5).y_train.shape == (5, 56, 56)


@needs_fashion
def test_a_changed_byte_is_refused(in_cache, tmp_path, monkeypatch):
    arrays, meta = load_arrays(in_cache)
    arrays["y_test"][7, 30, 30] ^= 1
    damaged = tmp_path / mosaic.NAME / mosaic.FILE_NAME
    save_arrays(damaged, arrays, meta)
    with pytest.raises(CorruptDataError, match="checksum mismatch.*delete it and it is made again"):
        datasets.load("fashion-mosaic", tmp_path)        # data_dir/fashion-mosaic/ holds the damaged copy
    assert datasets.load("fashion-mosaic", tmp_path, verify=False).y_test[7, 30, 30] != \
        datasets.load("fashion-mosaic").y_test[7, 30, 30]


def fake_fashion(n_train=60, n_test=20):
    """Garments that say where they come from: a 20x20 square (inside the 28x28 margins, so squares
    never overlap) of intensity 100-199 in the training split and 200-255 in the test split."""
    def split(n, low, high):
        x = np.zeros((n, 1, 28, 28), np.float32)
        values = low + np.arange(n) % (high - low)
        x[:, 0, 4:24, 4:24] = values[:, None, None] / 255
        return x, np.arange(n) % 10
    (xtr, ytr), (xte, yte) = split(n_train, 100, 200), split(n_test, 200, 256)
    return Dataset("fashion-mnist", xtr, ytr, xte, yte, builtin.SPECS["fashion-mnist"].classes)


def test_splits_are_kept_apart_and_each_mosaic_holds_two_to_four(monkeypatch):
    monkeypatch.setattr(mosaic, "COUNTS", {"train": 15, "test": 5})
    monkeypatch.setattr(mosaic.builtin, "load", lambda *a, **k: fake_fashion())
    arrays = mosaic.make()
    assert set(np.unique(arrays["x_train"])) <= {0} | set(range(100, 200))
    assert set(np.unique(arrays["x_test"])) <= {0} | set(range(200, 256))
    counts = [len(np.unique(image)) - 1 for image in arrays["x_train"]]
    assert set(counts) == {2, 3, 4}
    used = np.unique(arrays["x_train"])[1:]
    assert len(used) == sum(counts)                      # no garment twice
    for image, mask in zip(arrays["x_train"], arrays["y_train"]):
        for value in np.unique(image)[1:]:
            square = image == value
            assert square.sum() == 400 and len(np.unique(mask[square])) == 1 and mask[square][0] >= 1
        assert np.array_equal(mask > 0, image > 0)


def test_occlusion_rule():
    """A later garment's foreground covers the earlier one; its faint pixels only brighten."""
    garments = np.zeros((8, 28, 28), np.uint8)
    garments[:, :, :] = 10                                 # faint everywhere
    garments[:, 2:26, 2:26] = 50 + 20 * np.arange(8)[:, None, None]
    canvas, masks = mosaic.make_split(garments, np.arange(8) % 10, 2, "train")
    for image, mask in zip(canvas, masks):
        assert np.array_equal(mask > 0, image >= mosaic.THRESHOLD)
        for value in np.unique(image[image >= mosaic.THRESHOLD]):
            assert len(np.unique(mask[image == value])) == 1


def test_names_and_errors(tmp_path, monkeypatch):
    assert datasets.canonical("fashion_mosaic") == "fashion-mosaic" and not datasets.is_path("fashion-mosaic")
    assert "fashion-mosaic" in datasets.all_names()
    monkeypatch.delenv("DCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = builtin.SPECS["fashion-mnist"]
    monkeypatch.setitem(builtin.SPECS, "fashion-mnist", dataclasses.replace(spec, system_dirs=(str(tmp_path / "no"),)))
    with pytest.raises(DataNotFoundError, match="fashion-mosaic is made from Fashion-MNIST on first use: "
                                                "Fashion-MNIST was not found"):
        datasets.load("fashion-mosaic", download=False)
    with pytest.raises(ValueError, match="need up to 40 garments; the split has 12"):
        mosaic.make_split(np.zeros((12, 28, 28), np.uint8), np.zeros(12), 10, "train")


@pytest.fixture
def twin_threads(monkeypatch):
    """unet_torch sets the thread variables for its own process; here they are put back after the test."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
        else:
            monkeypatch.delenv(var, raising=False)


def test_torch_twin_scores_as_dcnn_and_runs(cache, in_cache, rng, monkeypatch, twin_threads):
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import unet_torch
    from backends import resolve
    from dcnn.model.metrics import MeanIoU, PixelAccuracy
    logits = rng.standard_normal((6, 11, 8, 8)).astype(np.float32)
    logits[:, 4] -= 9                                         # class 4: never predicted...
    labels = rng.integers(0, 11, (6, 8, 8))
    labels[labels == 4] = 5                                   # ...nor true: out of the mean
    argmax = types.SimpleNamespace(predict=lambda x: x.argmax(1))   # a trainer that predicts the logits' argmax
    counts = unet_torch.confusion(argmax, logits, labels, 11, 4)
    ours = unet_torch.scores(counts)
    be = resolve("numpy")
    assert ours["miou"] == pytest.approx(_result(MeanIoU(), be, logits, labels), rel=1e-12)
    assert ours["pixel_accuracy"] == pytest.approx(_result(PixelAccuracy(), be, logits, labels), rel=1e-12)
    summary = unet_torch.main(["--epochs", "1", "--limit", "64", "--base", "4", "--threads", "1",
                               "--data-dir", str(in_cache.parent.parent)])
    assert summary["train_mosaics"] == 64 and summary["steps"] == 2 and 0 <= summary["test_miou"] <= 1
    assert set(summary["kernels"]) == {"openblas", "torch", "onednn_max_isa"}      # which kernels ran, recorded


def test_torch_twin_times_each_convolution_of_the_same_network(monkeypatch, twin_threads):
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import unet_torch
    result = unet_torch.main(["--layers", "1", "--base", "4", "--threads", "1"])
    kinds = [r["kind"] for r in result["layers"]]
    assert kinds.count("Conv2D") == 15 and kinds.count("Conv2DTranspose") == 3     # every convolution, in order
    assert result["layers"][0]["in"] == [1, 56, 56] and result["layers"][-1]["out"] == [11, 56, 56]
    assert all(r["dcnn_ms"] > 0 and r["torch_ms"] > 0 for r in result["layers"])
    assert result["dcnn_ms"] == pytest.approx(sum(r["dcnn_ms"] for r in result["layers"]))


def _result(metric, backend, outputs, targets):
    metric.reset(backend)
    metric.update(outputs, targets)
    return metric.result()
