"""dcnn.viz: every kind of figure is written, has its panels, and shows real (non-constant) maps."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from dcnn import BatchNorm2D, Conv2D, DCNNetwork, Dense, Dropout, Flatten, MaxPool2D, ReLU
from dcnn import viz

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed (pip install -e '.[plot]')")


def shapes_image(size=28):
    """A bright square and a bar on a dark, slightly noisy background: edges both ways."""
    image = np.random.default_rng(0).uniform(0, 0.1, (size, size)).astype(np.float32)
    image[6:18, 5:15] = 0.9
    image[21:24, 4:26] = 0.6
    return image


def small_model(backend=None):
    net = DCNNetwork(input_shape=(1, 28, 28), seed=0, backend=backend)
    for layer in (Conv2D(6, 3, padding=1), ReLU(), MaxPool2D(2), BatchNorm2D(), Dropout(0.25),
                  Conv2D(20, 3), ReLU(), Flatten(), Dense(10)):
        net.add_layer(layer)
    return net.build()


def map_panels(fig):
    """The image panels after the input: their pixel arrays."""
    return [np.asarray(ax.images[0].get_array()) for ax in fig.axes[1:] if ax.images]


def assert_not_constant(arrays):
    assert arrays and all(float(np.ptp(a)) > 0 for a in arrays)


# --- without matplotlib ---------------------------------------------------------
def test_importing_dcnn_and_viz_needs_no_matplotlib():
    code = "import sys, dcnn, dcnn.viz; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_drawing_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install matplotlib \(in a clone of dcnn: pip install -e '.\[plot\]'\)"):
        viz.plot_training_curves({"loss": [1.0, 0.5]}, tmp_path / "curves.png")


def test_seed_feature_maps_on_every_backend(backend):
    """The seed pipeline computes on the active backend; only the maps come to the host."""
    image, stages = viz.feature_maps(viz.edge_filter_demo(backend=backend), shapes_image())
    assert [type(s.layer).__name__ for s in stages] == ["Conv2D", "ReLU", "MaxPool2D", "FeatureMapNorm"]
    assert [s.maps.shape for s in stages] == [(2, 26, 26)] * 2 + [(2, 13, 13)] * 2
    assert all(isinstance(s.maps, np.ndarray) for s in stages)
    conv, relu, _, norm = (s.maps for s in stages)
    # Cross-correlation with [1, 0, -1]: dark-to-bright (left to right, or top to bottom) is negative.
    # The vertical filter sees the square's left and right sides, the horizontal one its top and bottom.
    assert conv[0, 10, 3] < -2 and conv[0, 10, 13] > 2 and abs(conv[0, 10, 8]) < 0.5
    assert conv[1, 4, 8] < -2 and conv[1, 16, 8] > 2 and abs(conv[1, 10, 8]) < 0.5
    np.testing.assert_allclose(relu, np.clip(conv, 0, 1))
    np.testing.assert_allclose(norm.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(norm.std(axis=(1, 2)), 1, atol=1e-3)


def test_feature_maps_stop_at_flatten_and_skip_dropout():
    _, stages = viz.feature_maps(small_model(), shapes_image())
    assert [type(s.layer).__name__ for s in stages] == ["Conv2D", "ReLU", "MaxPool2D", "BatchNorm2D",
                                                        "Conv2D", "ReLU"]
    assert [s.key for s in stages] == ["0.", "1.", "2.", "3.", "5.", "6."]
    assert stages[-1].maps.shape == (20, 12, 12)


@pytest.mark.parametrize("image, message", [
    (np.zeros((3, 28, 28), np.float32), "has 3 channels .* expects 1"),
    (np.zeros((2, 2, 28, 28), np.float32), "must be one image"),
    (np.zeros((1, 20, 20), np.float32), r"shape \(N, 1, 28, 28\)"),
    (np.full((28, 28), np.nan, np.float32), "NaN"),
])
def test_bad_images_are_refused_with_the_reason(image, message):
    with pytest.raises(ValueError, match=message):
        viz.feature_maps(small_model(), image)


def test_images_in_any_layout_and_8_bit():
    pixels = (shapes_image() * 255).astype(np.uint8)
    for image in (pixels, pixels[None], pixels[:, :, None], pixels[None, None]):
        np.testing.assert_allclose(viz.as_chw(image, 1)[0], pixels / 255, atol=1e-6)
    assert viz.as_chw(np.zeros((5, 6, 3))).shape == (3, 5, 6)


# --- figures --------------------------------------------------------------------
@needs_matplotlib
def test_seed_stage_pictures(tmp_path):
    net = viz.edge_filter_demo()
    paths = viz.plot_stages(net, shapes_image(), tmp_path)
    assert [p.name for p in paths] == ["stage01_conv2d.png", "stage02_relu.png", "stage03_maxpool2d.png",
                                       "stage04_featuremapnorm.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    image, stages = viz.feature_maps(net, shapes_image())
    for stage in stages:
        fig = viz.stage_figure(image, stage)
        histogram = type(stage.layer).__name__ == "FeatureMapNorm"
        assert len(fig.axes) == 1 + 2 + histogram          # input, two maps, [histogram]
        assert_not_constant(map_panels(fig))
        if histogram:
            assert len(fig.axes[-1].patches) == 30          # the histogram's bars


@needs_matplotlib
def test_stage_pictures_of_a_deeper_model_cap_the_maps(tmp_path):
    net = small_model()
    paths = viz.plot_stages(net, shapes_image(), tmp_path, max_maps=16, prefix="shoe_")
    assert len(paths) == 6 and paths[0].name == "shoe_stage01_conv2d.png"
    image, stages = viz.feature_maps(net, shapes_image())
    counts = [len(viz.stage_figure(image, s, max_maps=16).axes) for s in stages]
    assert counts == [1 + 6, 1 + 6, 1 + 6, 1 + 6 + 1, 1 + 16, 1 + 16]
    assert_not_constant(map_panels(viz.stage_figure(image, stages[0])))


@needs_matplotlib
def test_learned_filters(tmp_path):
    net = small_model()
    assert viz.plot_filters(net, tmp_path / "filters.png").stat().st_size > 1000
    fig = viz.filters_figure(net)
    assert len(fig.axes) == 6
    assert_not_constant([np.asarray(ax.images[0].get_array()) for ax in fig.axes])


@needs_matplotlib
def test_training_curves(tmp_path):
    history = {"loss": [1.2, 0.8, 0.6], "accuracy": [0.5, 0.7, 0.8],
               "val_loss": [1.0, 0.9, 0.85], "val_accuracy": [0.6, 0.68, 0.7]}
    path = viz.plot_training_curves(history, tmp_path / "runs" / "curves.png")
    assert path == tmp_path / "runs" / "curves.png" and path.stat().st_size > 1000
    fig = viz.training_curves_figure(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), history["val_accuracy"])
    assert len(viz.training_curves_figure({"loss": [1.0, 0.5]}).axes) == 1
    with pytest.raises(ValueError, match="no 'loss' or 'accuracy'"):
        viz.plot_training_curves({"lr": [0.1]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\.png"):
        viz.plot_training_curves(history, tmp_path / "curves.jpg")


@needs_matplotlib
def test_confusion_matrix_and_misclassified(tmp_path):
    y_true = np.array([0, 1, 2, 2, 1, 0, 2])
    y_pred = np.array([0, 2, 2, 1, 1, 0, 0])
    counts = viz.confusion_matrix(y_true, y_pred)
    assert counts.tolist() == [[2, 0, 0], [0, 1, 1], [1, 1, 1]]
    with pytest.raises(ValueError, match="label 2 is outside the 2 classes"):
        viz.confusion_matrix(y_true, y_pred, num_classes=2)
    names = ["cat", "dog", "horse"]
    assert viz.plot_confusion_matrix(y_true, y_pred, tmp_path / "cm.png", names).stat().st_size > 1000
    assert len(viz.confusion_matrix_figure(y_true, y_pred, names).axes) == 1
    images = np.stack([shapes_image() * (i + 1) / 7 for i in range(7)])
    assert viz.plot_misclassified(images, y_true, y_pred, tmp_path / "wrong.png", names).stat().st_size > 1000
    fig = viz.misclassified_figure(images, y_true, y_pred, names)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title() == "true: dog\npred: horse"
    assert_not_constant([np.asarray(ax.images[0].get_array()) for ax in fig.axes])
    assert len(viz.misclassified_figure(images, y_true, y_pred, names, max_images=2).axes) == 2
    assert len(viz.misclassified_figure(images, y_true, y_true).axes) == 1   # "no misclassified images"


@needs_matplotlib
def test_results_of_a_model(tmp_path):
    net = small_model()
    x = np.stack([shapes_image(), shapes_image()[::-1], shapes_image()[:, ::-1]])[:, None]
    paths = viz.plot_results(net, x, np.array([0, 1, 2]), tmp_path)
    assert [p.name for p in paths] == ["confusion_matrix.png", "misclassified.png"]


@needs_matplotlib
def test_image_files(tmp_path):
    from PIL import Image
    pixels = (shapes_image(40) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "gray.png")
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(tmp_path / "rgb.jpg")
    gray = viz.load_image_file(tmp_path / "gray.png")
    assert gray.shape == (1, 40, 40) and gray.dtype == np.float32
    np.testing.assert_allclose(gray[0], pixels / 255, atol=1e-6)
    assert viz.load_image_file(tmp_path / "rgb.jpg").shape == (3, 40, 40)
    assert viz.load_image_file(tmp_path / "rgb.jpg", channels=1, size=(28, 28)).shape == (1, 28, 28)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        viz.load_image_file(tmp_path / "broken.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        viz.load_image_file(tmp_path / "missing.png")
    # An RGB photo through the seed demo: the filters apply to every channel.
    _, stages = viz.feature_maps(viz.edge_filter_demo(), viz.load_image_file(tmp_path / "rgb.jpg"))
    assert stages[0].maps.shape == (2, 38, 38)


# --- the command line -------------------------------------------------------------
def visualize(capsys, *argv):
    """``dcnn visualize ARGV`` through the real entry point: (exit status, stdout lines, stderr)."""
    from dcnn.cli import main
    status = main(["visualize", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out.split(), captured.err


def fashion_mnist_here():
    from dcnn.data import datasets
    return datasets.locate(datasets.get_spec("fashion-mnist"))[0] is not None


needs_fashion_mnist = pytest.mark.skipif(not fashion_mnist_here(), reason="Fashion-MNIST is not installed "
                                                                          "(apt-get install dataset-fashion-mnist)")
SEED_FILES = ["stage01_conv2d.png", "stage02_relu.png", "stage03_maxpool2d.png", "stage04_featuremapnorm.png",
              "filters.png"]


def names(paths):
    return [p.rsplit("/", 1)[1] for p in paths]


def save_png(path, pixels):
    from PIL import Image
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
    return path


def trained_run(folder, preset="lenet"):
    """A run folder as `dcnn train` leaves it (weights with their metadata, history), without training."""
    from dcnn.model import presets
    from dcnn.io.checkpoint import HISTORY, WEIGHTS
    from dcnn.data.datasets import get_spec
    spec = get_spec("fashion-mnist")
    net = presets.get_preset(preset).build(spec.input_shape, len(spec.classes))
    net.save_weights(folder / WEIGHTS, metadata={"preset": preset, "dataset": spec.name,
                                                 "classes": list(spec.classes)})
    (folder / HISTORY).write_text('{"epochs_done": 2, "loss": [1.0, 0.6], "accuracy": [0.6, 0.8], '
                                  '"val_loss": [0.8, 0.7], "val_accuracy": [0.7, 0.75]}')
    return folder


@needs_matplotlib
def test_cli_seed_model_on_an_image_file(tmp_path, capsys):
    image = save_png(tmp_path / "shapes.png", shapes_image(36))
    status, written, _ = visualize(capsys, "--model", "seed", "--image", image, "--out", tmp_path / "out")
    assert status == 0 and names(written) == SEED_FILES
    assert all((tmp_path / "out" / name).is_file() for name in SEED_FILES)


@needs_matplotlib
def test_cli_trained_model_on_an_image_file(tmp_path, capsys):
    run = trained_run(tmp_path)
    image = save_png(tmp_path / "big.png", shapes_image(40))      # resized to the model's 28x28
    status, written, _ = visualize(capsys, "--weights", run, "--image", image, "--out", tmp_path / "out",
                                   "--max-maps", 4)
    assert status == 0
    assert names(written) == ["stage01_conv2d.png", "stage02_relu.png", "stage03_maxpool2d.png",
                              "stage04_conv2d.png", "stage05_relu.png", "stage06_maxpool2d.png",
                              "filters.png", "training_curves.png"]


@pytest.mark.parametrize("argv, message", [
    (["--image", "missing.png"], "image file not found: missing.png"),
    (["--model", "convnet"], "--model convnet needs a trained model"),
    (["--results"], "--results needs a trained model"),
    (["--max-maps", "0"], "--max-maps must be at least 1"),
    (["--weights", "no-such-run"], "weights file not found: no-such-run"),
])
def test_cli_errors_name_the_problem(tmp_path, capsys, argv, message):
    status, _, err = visualize(capsys, *argv, "--out", tmp_path)
    assert status == 1 and err.startswith("dcnn: error: ") and message in err


@needs_matplotlib
def test_cli_results_of_a_trained_model(tmp_path, capsys, monkeypatch):
    from dcnn.data import datasets
    spec = datasets.get_spec("fashion-mnist")
    x = np.stack([np.roll(shapes_image(), shift, axis=1) for shift in range(12)])[:, None]
    tiny = datasets.Dataset(spec.name, x, np.arange(12) % 10, x, np.arange(12) % 10, spec.classes)
    monkeypatch.setattr(datasets, "load", lambda name, data_dir=None: tiny)
    run = trained_run(tmp_path)
    status, written, _ = visualize(capsys, "--weights", run, "--index", 11, "--results", "--out", tmp_path / "out")
    assert status == 0 and names(written)[-2:] == ["confusion_matrix.png", "misclassified.png"]
    status, _, err = visualize(capsys, "--weights", run, "--index", 12, "--out", tmp_path / "out")
    assert status == 1 and "--index 12 is out of range: the fashion-mnist test split has 12 images (0..11)" in err


@needs_matplotlib
@needs_fashion_mnist
def test_cli_seed_model_on_a_fashion_mnist_image(tmp_path, capsys):
    status, written, _ = visualize(capsys, "--index", 3, "--out", tmp_path)
    assert status == 0 and names(written) == SEED_FILES


@needs_matplotlib
def test_cli_residual_model_shows_the_body_and_the_sum(tmp_path, capsys):
    run = trained_run(tmp_path, preset="resnet")
    image = save_png(tmp_path / "shapes.png", shapes_image(28))
    status, written, _ = visualize(capsys, "--weights", run, "--image", image, "--out", tmp_path / "out",
                                   "--max-maps", 2)
    assert status == 0
    files = names(written)
    # stem (conv, pool, norm, relu), then the first block's body (5 stages) and its sum, then the ReLU
    assert files[:11] == ["stage01_conv2d.png", "stage02_maxpool2d.png", "stage03_batchnorm2d.png",
                          "stage04_relu.png", "stage05_conv2d.png", "stage06_batchnorm2d.png",
                          "stage07_relu.png", "stage08_conv2d.png", "stage09_batchnorm2d.png",
                          "stage10_residual.png", "stage11_relu.png"]
    assert sum(f.endswith("_residual.png") for f in files) == 3 and "filters.png" in files
