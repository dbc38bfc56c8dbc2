"""Your own data and your own model on the command line: image folders, .npz, --val-split, net.save -> CLI."""
import json

import numpy as np
import pytest

import backends
import dcnn
from dcnn import cli
from dcnn.data import datasets
from dcnn.data.images import model_image
from dcnn.data.userdata import load_image_folder, load_npz

Image = pytest.importorskip("PIL.Image")

SHAPES = ("bar", "column", "ring")


@pytest.fixture(autouse=True)
def cpu(monkeypatch):
    previous = backends.get_backend()
    backends.use("numpy")
    monkeypatch.setenv("DCNN_BACKEND", "numpy")
    monkeypatch.delenv("DCNN_DATA", raising=False)
    yield
    backends.use(previous)


def shapes(n_per_class: int, size: int = 20, seed: int = 0):
    """Dark strokes on a light, noisy background: a horizontal bar, a vertical bar or a ring, anywhere."""
    rng = np.random.default_rng(seed)
    n = n_per_class * len(SHAPES)
    labels = np.repeat(np.arange(len(SHAPES)), n_per_class)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(6, size - 6, (2, n))[..., None, None]
    bar = (np.abs(yy - cy) <= 1) & (np.abs(xx - cx) <= 5)
    column = (np.abs(xx - cx) <= 1) & (np.abs(yy - cy) <= 5)
    ring = np.abs(np.hypot(yy - cy, xx - cx) - 4) <= 1
    ink = np.where(labels[:, None, None] == 0, bar, np.where(labels[:, None, None] == 1, column, ring))
    pixels = 0.85 - 0.7 * ink + rng.normal(0, 0.05, ink.shape)
    return np.clip(pixels * 255, 0, 255).astype(np.uint8), labels


def write_folder(root, n_per_class=30, seed=0):
    images, labels = shapes(n_per_class, seed=seed)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / SHAPES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


def dcnn_cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_an_image_folder_loads_as_imagefolder_does(tmp_path):
    root = write_folder(tmp_path / "shapes", n_per_class=10)
    data = load_image_folder(root)
    assert data.classes == ("bar", "column", "ring") and data.input_shape == (1, 20, 20)
    assert len(data.y_train) + len(data.y_test) == 30 and np.bincount(data.y_test).tolist() == [2, 2, 2]
    again = datasets.load(str(root), image_size=(12, 16), channels=3)
    assert again.input_shape == (3, 12, 16) and again.x_train.dtype == np.float32
    np.testing.assert_array_equal(again.y_test, data.y_test)       # the held-out split is seeded


def test_training_on_a_generated_image_folder_reaches_90_percent(tmp_path, capsys):
    root = write_folder(tmp_path / "shapes", n_per_class=60)
    rc, out, err = dcnn_cli(capsys, "train", "--data", root, "--model", "lenet", "--epochs", 10, "--batch-size", 16,
                            "--lr", 0.01, "--val-split", 0.2, "--out", tmp_path / "run", "--no-progress", "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["val_images"] == 29 and result["test_images"] == 36 and result["train_images"] == 115
    assert "val_accuracy" in err and "test_accuracy" not in err.split("done:")[0]     # epochs report validation
    assert result["test_accuracy"] >= 0.9, result
    rc, out, err = dcnn_cli(capsys, "evaluate", tmp_path / "run", "--json")
    assert rc == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(result["test_accuracy"])
    rc, out, err = dcnn_cli(capsys, "predict", tmp_path / "run", root / "ring", "--json")
    predictions = json.loads(out)["predictions"]
    assert rc == 0 and len(predictions) == 60
    assert np.mean([p["top"][0]["class"] == "ring" for p in predictions]) >= 0.9


def test_a_model_built_in_python_round_trips_through_save_evaluate_and_predict(tmp_path, capsys):
    images, labels = shapes(40, seed=1)
    np.savez(tmp_path / "shapes.npz", x_train=images[::2], y_train=labels[::2], x_test=images[1::2],
             y_test=labels[1::2], classes=np.array(SHAPES))
    data = load_npz(tmp_path / "shapes.npz")
    assert data.classes == SHAPES and data.x_train.shape == (60, 1, 20, 20)
    net = dcnn.DCNNetwork([dcnn.Conv2D(8, 3, padding=1), dcnn.ReLU(), dcnn.MaxPool2D(2), dcnn.Conv2D(8, 3, padding=1),
                           dcnn.ReLU(), dcnn.MaxPool2D(2), dcnn.Flatten(), dcnn.Dense(3)], input_shape=(1, 20, 20))
    net.compile("adam", lr=0.01)
    net.fit(data.x_train, data.y_train, epochs=8, batch_size=10, verbose=0)
    expected = net.evaluate(data.x_test, data.y_test)["accuracy"]
    path = net.save(tmp_path / "mine.safetensors", classes=list(data.classes))

    rc, out, err = dcnn_cli(capsys, "evaluate", path, "--dataset", tmp_path / "shapes.npz", "--json")
    assert rc == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(expected) and expected > 0.4   # (chance: 1/3)

    Image.fromarray(images[1]).save(tmp_path / "one.png")
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    rc, out, err = dcnn_cli(capsys, "predict", path, tmp_path / "one.png", tmp_path / "broken.png", "--json")
    report = json.loads(out)
    assert rc == cli.EXIT_FAILED                                   # reported at the end, after the others
    assert [p["image"] for p in report["predictions"]] == [str(tmp_path / "one.png")]
    assert report["errors"][0]["image"] == str(tmp_path / "broken.png") and "not a readable image" in \
        report["errors"][0]["error"]
    probs = net.predict(model_image(tmp_path / "one.png", (1, 20, 20))[None])[0]
    assert report["predictions"][0]["top"][0]["class"] == SHAPES[int(np.argmax(probs))]
    assert report["predictions"][0]["top"][0]["probability"] == pytest.approx(float(probs.max()), rel=1e-5)

    rc, out, err = dcnn_cli(capsys, "predict", path, str(tmp_path / "*.png"))
    assert rc == 1 and "one.png: " in out and "dcnn: error:" in err and "broken.png" in err


def test_a_data_path_that_does_not_exist_is_an_error(tmp_path, capsys):
    rc, out, err = dcnn_cli(capsys, "train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run")
    assert rc == cli.EXIT_USAGE and "nowhere does not exist" in err and err.count("dcnn: error:") == 1
    assert "dcnn train:" not in err
    with pytest.raises(datasets.DataNotFoundError, match="does not exist"):
        datasets.load("fashion-mnist", tmp_path / "no-such-dir")
    assert not (tmp_path / "run").exists()


def test_npz_is_read_without_pickle(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.array([object()] * 2, dtype=object), y_train=np.zeros(2, int))
    with pytest.raises(datasets.CorruptDataError, match="not a readable .npz file"):
        load_npz(tmp_path / "bad.npz")


def test_predict_keeps_the_aspect_ratio(tmp_path):
    wide = np.full((20, 40), 255, np.uint8)
    wide[5:15, 15:25] = 0                           # a 10x10 black square in a 2:1 white picture
    Image.fromarray(wide).save(tmp_path / "wide.png")
    x = model_image(tmp_path / "wide.png", (1, 20, 20), invert="no")[0]
    rows, cols = np.nonzero(x < 0.5)
    assert np.ptp(rows) == np.ptp(cols)               # still square, not squeezed to 10x5
    assert x[0].min() > 0.9 and x[-1].min() > 0.9   # padding in the picture's own background colour


def test_visualize_image_shows_exactly_what_predict_classifies(tmp_path):
    import argparse
    from dcnn.cli.visualize import pick_image
    photo = np.full((30, 50, 3), 240, np.uint8)
    photo[5:25, 20:30] = (20, 40, 60)                  # a dark object on a light, wide photo
    Image.fromarray(photo).save(tmp_path / "photo.png")
    net = dcnn.DCNNetwork([dcnn.Flatten(), dcnn.Dense(2)], input_shape=(1, 28, 28)).build()
    for invert in ("auto", "no"):
        shown, _ = pick_image(argparse.Namespace(image=tmp_path / "photo.png", invert=invert), net, None)
        np.testing.assert_array_equal(shown, model_image(tmp_path / "photo.png", (1, 28, 28), invert))
    assert shown.shape == (1, 28, 28)


def test_viz_figures_display_as_pictures_in_notebooks():
    pytest.importorskip("matplotlib")
    from dcnn import viz
    fig = viz.confusion_matrix_figure([0, 1, 1], [0, 1, 0], ["a", "b"])
    assert fig._repr_png_().startswith(b"\x89PNG\r\n\x1a\n")


def test_cli_polish(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    net = dcnn.DCNNetwork([dcnn.Conv2D(2, 3), dcnn.ReLU(), dcnn.Flatten(), dcnn.Dense(3)], input_shape=(1, 20, 20))
    path = net.save(tmp_path / "m.safetensors", classes=list(SHAPES))
    Image.fromarray(shapes(1)[0][0]).save(tmp_path / "one.png")
    # the model is positional in visualize too, as in evaluate and predict (--weights stays as an alias)
    for how in ([path], ["--weights", path]):
        rc, out, err = dcnn_cli(capsys, "visualize", *how, "--image", tmp_path / "one.png", "--out", tmp_path / "fig")
        assert rc == 0, err
        assert "stage01_conv2d.png" in out
    rc, out, err = dcnn_cli(capsys, "visualize", path, "--weights", tmp_path / "other.safetensors")
    assert rc == 1 and "two models given" in err
    # one "dcnn: error:" prefix, the subcommand named in the hint only
    rc, out, err = dcnn_cli(capsys, "train", "--epochs", "0")
    assert err.startswith("dcnn: error: argument --epochs") and "(see dcnn train --help)" in err
    # info does not fail on a $DCNN_DATA that does not exist: it says so
    monkeypatch.setenv("DCNN_DATA", str(tmp_path / "missing"))
    rc, out, err = dcnn_cli(capsys, "info", "--json")
    assert rc == 0 and "does not exist" in json.loads(out)["data_problems"][0]
