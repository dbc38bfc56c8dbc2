"""The segmentation application (issue 21): ``dcnn train --model unet``, then evaluate, predict and
visualize on its run folder, and the clear errors for what it cannot do.

``fashion-mosaic`` is swapped for a few mosaics of its own construction (``mosaic.make_split``) over
random "garments", so nothing is downloaded; one tiny unet run (2 epochs of 8 images) is trained once
for the module and every number the commands report is checked against the model's own ``predict``.
"""
import contextlib
import io
import json

import numpy as np
import pytest

import backends
from dcnn import cli
from dcnn import load as load_model
from dcnn.data import datasets, mosaic
from dcnn.data.dataset import Dataset
from dcnn.data.images import model_image
from dcnn.io import checkpoint
from dcnn.train.config import TrainConfig
from dcnn.utils.files import read_metadata
from dcnn.viz.masks import PALETTE

K = len(mosaic.CLASSES)


def small_mosaic(data_dir=None, **options) -> Dataset:
    """8 training and 6 test mosaics, made as fashion-mosaic's are."""
    rng = np.random.default_rng(7)
    splits = {}
    for split, n in (("train", 8), ("test", 6)):
        garments = (rng.random((4 * n, 28, 28)) ** 2 * 255).astype(np.uint8)
        images, masks = mosaic.make_split(garments, rng.integers(0, 10, 4 * n), n, split)
        splits[split] = (images[:, None].astype(np.float32) / 255, masks.astype(np.int64))
    return Dataset(mosaic.NAME, *splits["train"], *splits["test"], mosaic.CLASSES)


@pytest.fixture(scope="module")
def patched():
    """fashion-mosaic is small_mosaic; the NumPy backend is active (for the processes started too)."""
    previous = backends.get_backend()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(datasets.GENERATED, mosaic.NAME, small_mosaic)
        mp.setenv("DCNN_BACKEND", "numpy")
        backends.use("numpy")
        yield mp
    backends.use(previous)


def dcnn(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def run(patched, tmp_path_factory):
    """One trained unet run: (folder, the --json result, the human-readable lines)."""
    folder = tmp_path_factory.mktemp("seg") / "run"
    out, err = io.StringIO(), io.StringIO()          # module scope: no capsys
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["train", "--model", "unet", "--epochs", "2", "--batch-size", "4", "--out", str(folder),
                       "--no-progress", "--json"])
    assert rc == 0, err.getvalue()
    return folder, json.loads(out.getvalue()), err.getvalue()


def host_confusion(net, x, y):
    predicted = net.predict(x).argmax(axis=1)
    return np.bincount(y.ravel() * K + predicted.ravel(), minlength=K * K).reshape(K, K)


def host_miou(counts):
    tp = np.diag(counts).astype(float)
    union = counts.sum(0) + counts.sum(1) - tp
    return float((tp[union > 0] / union[union > 0]).mean())


def test_train_unet_reports_segmentation_scores_and_keeps_the_best_weights(run):
    folder, result, lines = run
    assert result["dataset"] == "fashion-mosaic" and result["model"] == "unet"     # the preset's dataset
    assert result["task"] == "segmentation" and result["test_accuracy"] is None
    history = result["history"]
    assert set(history) >= {"val_miou", "val_pixel_accuracy"} and "val_accuracy" not in history
    # Epoch lines show the compiled metrics; the summary the test mIoU and pixel accuracy.
    assert "test_miou=" in lines and "test_pixel_accuracy=" in lines and "test_accuracy" not in lines
    assert f"test mIoU {result['test_miou']:.4f}, pixel accuracy {result['test_pixel_accuracy']:.4f}" in lines
    # The scores are the final weights' on the test set, as the model's own predict gives them.
    data, net = small_mosaic(), load_model(folder)
    counts = host_confusion(net, data.x_test, data.y_test)
    assert result["test_confusion_matrix"] == counts.tolist() and counts.sum() == 6 * 56 * 56
    assert result["test_miou"] == pytest.approx(host_miou(counts)) == pytest.approx(history["val_miou"][-1])
    assert result["test_pixel_accuracy"] == pytest.approx(np.trace(counts) / counts.sum())
    assert list(result["test_per_class_iou"]) == list(mosaic.CLASSES)
    tp = counts[0, 0]
    assert result["test_per_class_iou"]["background"] == pytest.approx(tp / (counts[0].sum() + counts[:, 0].sum() - tp))
    # The best epoch by val_miou, kept in best.safetensors; the run's metadata says what it is.
    best = int(np.argmax(history["val_miou"])) + 1
    assert result["monitor"] == "val_miou" and result["best_epoch"] == best
    best_meta = read_metadata(folder / checkpoint.BEST)
    assert best_meta["epoch"] == best and best_meta["val_miou"] == pytest.approx(max(history["val_miou"]))
    meta = read_metadata(folder / checkpoint.WEIGHTS)
    assert meta["task"] == "segmentation" and meta["classes"] == list(mosaic.CLASSES)


def test_evaluate_prints_miou_per_class_iou_and_the_pixel_confusion_matrix(run, capsys):
    folder, result, _ = run
    rc, out, err = dcnn(capsys, "evaluate", folder)
    assert rc == 0, err
    assert f"mean IoU: {result['test_miou']:.4f}" in out and "pixel accuracy:" in out
    width = max(map(len, mosaic.CLASSES))
    for name, iou in result["test_per_class_iou"].items():
        assert f"  {name:<{width}}  {'-' if iou is None else f'{iou:.4f}'}\n" in out, name
    rows = out.split("pixel confusion matrix")[1].strip().splitlines()[2:]
    assert len(rows) == K and [int(v) for v in rows[0].split()[2:]] == result["test_confusion_matrix"][0]
    rc, out, _ = dcnn(capsys, "evaluate", folder, "--json")
    report = json.loads(out)
    assert report["confusion_matrix"] == result["test_confusion_matrix"]
    assert report["miou"] == pytest.approx(result["test_miou"]) and report["per_class_iou"] == result["test_per_class_iou"]


def test_predict_writes_the_mask_in_palette_colours_and_a_legend(run, capsys, tmp_path):
    from PIL import Image
    folder, _, _ = run
    picture = tmp_path / "picture.png"
    Image.fromarray((small_mosaic().x_test[2, 0] * 255).astype(np.uint8)).save(picture)
    rc, out, err = dcnn(capsys, "predict", folder, picture, "--out", tmp_path / "mask.png")
    assert rc == 0, err
    mask = np.asarray(Image.open(tmp_path / "mask.png").convert("RGB"))
    labels = load_model(folder).predict(model_image(picture, (1, 56, 56))[None])[0].argmax(axis=0)
    assert mask.shape == (56, 56, 3) and np.array_equal(mask, PALETTE[labels])     # each pixel its class's colour
    assert PALETTE[0].max() < 40                                                     # background dark
    legend = np.asarray(Image.open(tmp_path / "mask-legend.png").convert("RGB"))
    for colour in PALETTE:
        assert (legend == colour).all(axis=-1).sum() >= 100, colour                  # a swatch per class
    shares = np.bincount(labels.ravel(), minlength=K) / labels.size
    top = int(np.argmax(shares))
    assert f"{mosaic.CLASSES[top]} {shares[top]:.1%}" in out.splitlines()[0]
    rc, out, _ = dcnn(capsys, "predict", folder, picture, "--json")
    report = json.loads(out)["predictions"][0]
    assert report["mask"] is None and np.allclose(list(report["shares"].values()), shares)


def test_visualize_draws_inputs_beside_true_and_predicted_masks(run, capsys, tmp_path, patched, monkeypatch):
    from dcnn import viz
    pytest.importorskip("matplotlib")
    folder, _, _ = run
    # The unet's 50-odd stage pictures are test_viz's subject; this test is about the segmentation figure.
    monkeypatch.setattr(viz, "plot_stages", lambda *args, **kwargs: [])
    rc, out, err = dcnn(capsys, "visualize", folder, "--out", tmp_path / "figures")
    assert rc == 0, err
    figure = tmp_path / "figures" / "segmentation.png"
    assert str(figure) in out.splitlines()
    from PIL import Image
    width, height = Image.open(figure).size
    assert height > width > 400             # one row per test image, three panels each


@pytest.mark.parametrize("argv, expected", [
    (["--dataset", "fashion-mnist"], "needs a dataset of masks"),
    (["--augment"], "--augment shifts and flips each training image but not its mask"),
])
def test_unet_refuses_a_classification_dataset_and_augmentation(patched, capsys, tmp_path, argv, expected):
    rc, _, err = dcnn(capsys, "train", "--model", "unet", "--out", tmp_path / "run", *argv)
    assert rc == 2 and err.startswith("dcnn: error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_classifier_refuses_fashion_mosaic_and_unet_refuses_streaming(patched, capsys, tmp_path):
    rc, _, err = dcnn(capsys, "train", "--model", "convnet", "--dataset", "fashion-mosaic", "--out", tmp_path / "r")
    assert rc == 2 and "labels every pixel" in err and "--model unet" in err
    rc, _, err = dcnn(capsys, "train", "--model", "unet", "--data", tmp_path, "--workers", "2")
    assert rc == 2 and "--workers" in err and "per pixel" in err
    with pytest.raises(ValueError, match="not its mask"):        # the library says the same
        TrainConfig(model="unet", augment=True).resolve()
