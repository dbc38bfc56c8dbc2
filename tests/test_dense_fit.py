"""Dense prediction end to end (issue 21): fit / evaluate / predict of a segmentation model and a
denoising autoencoder through DCNNetwork, with the compiled metrics kept on the device.

The segmentation data are fashion-mosaic's own construction (``mosaic.make_split``) over random
"garments", so labels have its layout (0 background, 1-10 classes, 11 in all) without a download.
Every number the network reports is checked against NumPy on the host from ``predict``.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backends
from dcnn import Conv2D, DCNNetwork, Dense, Flatten, Input, ReLU, Softmax, distributed
from dcnn.data.mosaic import make_split
from dcnn.model import fitting, metric_state
from dcnn.model.metrics import MeanIoU, PixelAccuracy
from dcnn.train.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, auto_mode
from test_no_host_wait import HostWait, no_read_back

K = 11
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("numpy_active")   # conftest.py


def mosaics(n, seed=0):
    """n fashion-mosaic-like samples: x float32 (n, 1, 56, 56) in [0, 1], y int64 masks (n, 56, 56)."""
    rng = np.random.default_rng(seed)
    garments = (rng.random((4 * n, 28, 28)) ** 3 * 255).astype(np.uint8)
    images, masks = make_split(garments, rng.integers(0, 10, 4 * n), n, "train")
    return images[:, None].astype(np.float32) / 255, masks.astype(np.int64)


def seg_net(metrics=("miou", "pixel_accuracy"), seed=1, backend=None, **compile_options):
    """Conv2D(same) -> ReLU -> Conv2D(K, 1): logits (N, K, 56, 56)."""
    x = Input((1, 56, 56))
    y = Conv2D(K, 1)(ReLU()(Conv2D(6, 3, padding="same")(x)))
    net = DCNNetwork(inputs=x, outputs=y, seed=seed, backend=backend)
    return net.compile("adam", metrics=list(metrics), lr=0.02, **compile_options)


def host_segmentation_metrics(probabilities, labels, ignore=None):
    """Pixel accuracy, per-class IoU and mean IoU (torchmetrics' definitions) from predict's arg-max."""
    predicted, labels = probabilities.argmax(1).ravel(), labels.ravel()
    if ignore is not None:
        keep = labels != ignore
        predicted, labels = predicted[keep], labels[keep]
    counts = np.bincount(labels * K + predicted, minlength=K * K).reshape(K, K).astype(np.float64)
    tp = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), 0.0)
    present = union > 0
    if ignore is not None and ignore < K:
        present[ignore] = False
    return float((predicted == labels).mean()), iou, float(iou[present].mean())


# --- segmentation ------------------------------------------------------------------------------------

def test_segmentation_fit_logs_dense_metrics_each_epoch():
    x, y = mosaics(10)
    net = seg_net()
    history = net.fit(x[:6], y[:6], epochs=3, batch_size=4, validation_data=(x[6:], y[6:]), verbose=0)
    assert list(history.history) == ["loss", "miou", "pixel_accuracy", "val_loss", "val_miou",
                                     "val_pixel_accuracy"]
    assert net.num_classes == K and net.output_shape == (K, 56, 56)      # the class axis, not the width
    assert all(len(v) == 3 for v in history.history.values())
    for key in ("miou", "pixel_accuracy", "val_miou", "val_pixel_accuracy"):
        assert all(0 <= v <= 1 for v in history[key]), key     # per pixel, not per image
    assert history["loss"][-1] < history["loss"][0]
    # The last epoch's validation is an evaluation of the final weights.
    final = net.evaluate(x[6:], y[6:], batch_size=3)
    assert final["miou"] == pytest.approx(history["val_miou"][-1], rel=1e-12)
    assert final["pixel_accuracy"] == pytest.approx(history["val_pixel_accuracy"][-1], rel=1e-12)


@pytest.mark.parametrize("ignore, given", [(None, "names"), (255, "objects"), (255, "names")])
def test_evaluate_matches_numpy_from_predicts_arg_max(ignore, given):
    x, y = mosaics(7, seed=3)
    if ignore is not None:
        y[:, :5, :] = ignore                   # an unlabelled band: neither right nor wrong
        metrics = [MeanIoU(ignore_index=ignore), PixelAccuracy(ignore_index=ignore), "iou"] if given == "objects" \
            else ["miou", "pixel_accuracy", "iou"]       # by name: the loss's ignore_index is theirs too
        net = seg_net(metrics, loss_options={"ignore_index": ignore})
    else:
        net = seg_net(["miou", "pixel_accuracy", "iou", "accuracy"])
    net.fit(x, y, epochs=2, batch_size=3, verbose=0)
    got = net.evaluate(x, y, batch_size=3)         # 3 batches, the last of one image
    probabilities = net.predict(x, batch_size=4)
    assert probabilities.shape == (7, K, 56, 56)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)   # softmax over the class axis
    pixel_accuracy, iou, miou = host_segmentation_metrics(probabilities, y, ignore)
    assert got["pixel_accuracy"] == pytest.approx(pixel_accuracy, rel=1e-12)
    assert got["miou"] == pytest.approx(miou, rel=1e-12)
    np.testing.assert_allclose([got[f"iou_{c}"] for c in range(K)], iou, rtol=1e-12)
    if ignore is None:
        assert got["accuracy"] == pytest.approx(pixel_accuracy, rel=1e-12)   # accuracy of dense outputs: pixels
        assert set(got) == {"loss", "miou", "pixel_accuracy", "accuracy", *(f"iou_{c}" for c in range(K))}


def test_one_arg_max_a_step_serves_the_hit_count_and_every_class_metric(monkeypatch):
    """class_argmax once per training step and per evaluation batch, however many class metrics
    read it (each used to make its own), and the metrics' sums are those of their own arg-max."""
    x, y = mosaics(6, seed=4)
    metrics = ["miou", "pixel_accuracy", "iou", "accuracy", "dice"]
    shared, own = seg_net(metrics), seg_net(metrics)
    backend = shared.backend
    calls = []
    real = type(backend).class_argmax
    monkeypatch.setattr(type(backend), "class_argmax", lambda self, v: calls.append(1) or real(self, v))
    shared.fit(x, y, epochs=1, batch_size=3, verbose=0)
    assert len(calls) == 2                                  # 2 steps
    calls.clear()
    got = shared.evaluate(x, y, batch_size=2)
    assert len(calls) == 3                                  # 3 batches
    # The same sums as metrics that each take their own arg-max of the same outputs.
    logits = shared.logits(shared._prepare(x), training=False)
    yd = fitting.targets(shared, y, len(y))
    each = own.metric_set()
    each.update(logits, yd)
    together = shared.metric_set()
    together.update(logits, yd, metric_state.hits(shared, logits, yd)[1])
    assert [backend.to_numpy(s).tolist() for s in together.states()] == \
        [backend.to_numpy(s).tolist() for s in each.states()]
    assert got["miou"] == pytest.approx(host_segmentation_metrics(shared.predict(x), y)[2], rel=1e-12)


def test_the_final_test_counts_come_from_the_last_pass_over_the_test_set(monkeypatch):
    """dcnn train's closing pixel confusion matrix is the one its last test pass counted (no second
    pass), and only where that pass counted every pixel of these masks."""
    from dcnn.train.metrics import dense_confusion_matrix, final_confusion_matrix
    x, y = mosaics(7, seed=5)
    net = seg_net()
    net.fit(x[:4], y[:4], epochs=1, batch_size=2, validation_data=(x[4:], y[4:]), verbose=0)
    expected = dense_confusion_matrix(net, x[4:], y[4:], batch_size=2)
    assert expected.sum() == y[4:].size
    monkeypatch.setattr(net, "logits", lambda *a, **k: pytest.fail("a second pass over the test set"))
    np.testing.assert_array_equal(final_confusion_matrix(net, x[4:], y[4:], 2, last_pass_was_this=True), expected)
    monkeypatch.undo()
    # A pass that did not count these pixels, or is not known to be over this set, is not taken.
    other = final_confusion_matrix(net, x[:2], y[:2], 2, last_pass_was_this=True)
    np.testing.assert_array_equal(other, dense_confusion_matrix(net, x[:2], y[:2], batch_size=2))
    net.evaluate(x[:3], y[:3])
    np.testing.assert_array_equal(final_confusion_matrix(net, x[4:], y[4:], 2, last_pass_was_this=False), expected)
    # A loader's evaluation is the latest pass too, not the arrays' pass of as many pixels before it.
    images = np.round(x * 255).astype(np.uint8)
    net.evaluate(x[4:], y[4:])
    net.evaluate(MaskLoader(images[:3], y[:3], 2))
    np.testing.assert_array_equal(final_confusion_matrix(net, images[:3], y[:3], 2, last_pass_was_this=True),
                                  dense_confusion_matrix(net, images[:3], y[:3], batch_size=2))


class MaskLoader:
    """The loader protocol (dcnn.model.fitting): uint8 image batches with their masks."""

    def __init__(self, images, masks, batch_size):
        self.images, self.masks, self.batch_size = images, masks, batch_size

    def __len__(self):
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        for start in range(0, len(self.images), self.batch_size):
            yield self.images[start:start + self.batch_size], self.masks[start:start + self.batch_size]


def test_a_loader_of_masks_fits_and_evaluates_as_arrays_do():
    x, y = mosaics(9, seed=4)
    images = np.round(x * 255).astype(np.uint8)        # moved as uint8, scaled on the device
    net = seg_net(["miou", "pixel_accuracy"])
    history = net.fit(MaskLoader(images[:6], y[:6], 4), epochs=2, validation_data=MaskLoader(images[6:], y[6:], 2),
                      verbose=0)
    assert list(history.history) == ["loss", "miou", "pixel_accuracy", "val_loss", "val_miou",
                                     "val_pixel_accuracy"]
    from_loader = net.evaluate(MaskLoader(images[6:], y[6:], 2))
    from_arrays = net.evaluate(images[6:].astype(np.float32) / 255, y[6:])
    assert from_loader["miou"] == pytest.approx(from_arrays["miou"], rel=1e-12)
    assert from_loader["pixel_accuracy"] == pytest.approx(history["val_pixel_accuracy"][-1], rel=1e-12)
    bad = y[6:].copy()
    bad[0, 0, 0] = 12
    with pytest.raises(ValueError, match=r"labels outside \[0, 10\]: 12"):
        net.evaluate(MaskLoader(images[6:], bad, 2))


def test_monitor_val_miou_keeps_the_highest(tmp_path):
    x, y = mosaics(10, seed=5)
    net = seg_net(seed=2)
    stop = EarlyStopping(monitor="val_miou", patience=10, restore_best_weights=True)
    keep = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_miou", save_best_only=True,
                           save_weights_only=True)
    log = CSVLogger(tmp_path / "log.csv")
    history = net.fit(x[:6], y[:6], epochs=5, batch_size=3, validation_data=(x[6:], y[6:]), verbose=0,
                      callbacks=[stop, keep, log])
    scores = history["val_miou"]
    best = int(np.argmax(scores))
    assert stop.mode == keep.mode == "max"
    assert stop.best == keep.best == max(scores)
    assert min(scores) < max(scores)                       # a wrong direction would keep another epoch
    meta = net.load_weights(tmp_path / "best.safetensors")
    assert int(meta["epoch"]) == best + 1
    assert net.evaluate(x[6:], y[6:])["miou"] == pytest.approx(max(scores), rel=1e-12)
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert header == ["epoch", "loss", "miou", "pixel_accuracy", "val_loss", "val_miou", "val_pixel_accuracy"]


def test_auto_mode_follows_each_metrics_direction():
    for name in ("accuracy", "val_accuracy", "val_miou", "pixel_accuracy", "val_iou_3", "dice", "val_psnr"):
        assert auto_mode(name) == "max", name
    for name in ("loss", "val_loss", "mae", "val_mae"):
        assert auto_mode(name) == "min", name


def test_reduce_lr_on_plateau_of_val_miou_waits_for_it_to_stop_rising():
    x, y = mosaics(6, seed=6)
    net = seg_net()
    plateau = ReduceLROnPlateau(monitor="val_miou", factor=0.5, patience=1, min_delta=0.0)
    net.fit(x[:4], y[:4], epochs=1, batch_size=2, validation_data=(x[4:], y[4:]), verbose=0, callbacks=[plateau])
    assert plateau.mode == "max"
    plateau.on_train_begin(net, epochs=5, steps=1)
    net.optimizer.lr = 1.0
    rates = []
    for epoch, score in enumerate([0.1, 0.2, 0.2, 0.15, 0.3, 0.25]):
        plateau.on_epoch_end(epoch, {"val_miou": score})
        rates.append(net.optimizer.lr)
    assert rates == [1.0, 1.0, 0.5, 0.25, 0.25, 0.125]


@pytest.mark.parametrize("case, match", [
    ("label_k", r"y has labels outside \[0, 10\]: 11 in 3 places, for a model with 11 outputs"),
    ("shape", r"expects integer labels of shape \(4, 56, 56\) or class probabilities of shape \(4, 11, 56, 56\)"),
    ("float", r"y must be integer class labels of shape \(4, 56, 56\); got dtype float32 with fractional"),
    ("count", r"x and y have different lengths: 4 samples but 3 targets"),
])
def test_bad_targets_fail_clearly_before_any_step(case, match):
    x, y = mosaics(4, seed=7)
    if case == "label_k":
        y[0, 0, :3] = K
    elif case == "shape":
        y = y[:, ::2, ::2]
    elif case == "float":
        y = y.astype(np.float32) + 0.5
    else:
        y = y[:3]
    net = seg_net().build()
    before = net.state_dict()
    with pytest.raises(ValueError, match=match):
        net.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert net.optimizer.steps == 0
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(ValueError, match=match):
        net.evaluate(x, y)


def test_unknown_metric_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown metric 'mean_dice'; valid ones are: accuracy, .*miou.*psnr"):
        seg_net(["miou", "mean_dice"])
    with pytest.raises(ValueError, match=r"given twice"):
        seg_net(["miou", "mean_iou"])


# --- reconstruction ----------------------------------------------------------------------------------

def autoencoder(loss="mse", metrics=None):
    x = Input((1, 16, 16))
    y = Conv2D(1, 3, padding="same")(ReLU()(Conv2D(6, 3, padding="same")(x)))
    return DCNNetwork(inputs=x, outputs=y, seed=4).compile("adam", loss=loss, metrics=metrics, lr=0.01)


def clean_and_noisy(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, 16, dtype=np.float32)
    phase = rng.random((n, 1, 1, 1), dtype=np.float32) * 6
    clean = (0.5 + 0.4 * np.sin(t[:, None] + phase) * np.cos(t[None, :] - phase)).astype(np.float32)
    return clean, (clean + 0.15 * rng.standard_normal(clean.shape)).astype(np.float32)


def test_denoising_autoencoder_fits_and_predicts_raw_outputs():
    clean, noisy = clean_and_noisy(24)
    net = autoencoder(metrics=["mae", "psnr"])
    history = net.fit(noisy[:16], clean[:16], epochs=8, batch_size=4, validation_data=(noisy[16:], clean[16:]),
                      verbose=0)
    assert list(history.history) == ["loss", "mae", "psnr", "val_loss", "val_mae", "val_psnr"]   # no accuracy
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_psnr"][-1] > history["val_psnr"][0]
    out = net.predict(noisy[16:], batch_size=3)
    assert out.shape == clean[16:].shape and out.dtype == np.float32
    assert out.min() < 0.4 and out.max() > 0.6                      # raw values: no softmax over 1 channel
    got = net.evaluate(noisy[16:], clean[16:], batch_size=3)
    mse = float(np.mean((out.astype(np.float64) - clean[16:]) ** 2))
    assert got["loss"] == pytest.approx(mse, rel=1e-5)
    assert got["mae"] == pytest.approx(float(np.mean(np.abs(out.astype(np.float64) - clean[16:]))), rel=1e-5)
    assert got["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert set(autoencoder().evaluate(noisy, clean)) == {"loss"}      # mse asks for no metric by default


def test_mse_targets_must_have_the_outputs_shape():
    clean, noisy = clean_and_noisy(4)
    with pytest.raises(ValueError, match=r"mse expects targets of shape \(N, 1, 16, 16\), the model's output shape; "
                                         r"got \(4, 16, 16\)"):
        autoencoder().fit(noisy, clean[:, 0], verbose=0)


def test_bce_predicts_sigmoid_probabilities():
    clean, noisy = clean_and_noisy(6)
    masks = (clean > 0.5).astype(np.float32)
    net = autoencoder(loss="bce_with_logits", metrics=["pixel_accuracy", "dice"])
    history = net.fit(noisy, masks, epochs=2, batch_size=3, verbose=0)
    assert list(history.history) == ["loss", "pixel_accuracy", "dice"]
    xd = net._prepare(noisy)
    logits = net.backend.to_numpy(net.logits(xd)).astype(np.float64)
    np.testing.assert_allclose(net.predict(noisy), 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-7)
    got = net.evaluate(noisy, masks)
    assert got["pixel_accuracy"] == pytest.approx(float(((logits > 0) == (masks > 0.5)).mean()), rel=1e-12)


def test_a_trailing_softmax_is_a_layer_for_value_losses(rng):
    """Cross-entropy fuses a final Softmax into the loss; mse trains and predicts through it."""
    x = rng.random((6, 1, 4, 4), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 6)]
    net = DCNNetwork([Flatten(), Dense(3), Softmax()], input_shape=(1, 4, 4), seed=0).compile("sgd", loss="mse")
    p = net.predict(x)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    assert net.evaluate(x, y)["loss"] == pytest.approx(float(np.mean((p.astype(np.float64) - y) ** 2)), rel=1e-5)


# --- classification stays as it was ------------------------------------------------------------------

def test_classification_history_and_evaluate_keys_are_unchanged(rng):
    x = rng.random((20, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 4, 20)
    net = DCNNetwork([Conv2D(3, 3), ReLU(), Flatten(), Dense(4)], input_shape=(1, 8, 8), seed=0)
    net.compile("sgd", lr=0.05)
    history = net.fit(x[:14], y[:14], epochs=2, batch_size=5, validation_data=(x[14:], y[14:]), verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    got = net.evaluate(x, y)
    assert list(got) == ["loss", "accuracy"]
    assert got["accuracy"] == np.mean(net.predict(x).argmax(1) == y)
    assert net.num_classes == 4 and net.predict(x).shape == (20, 4)


# --- no host sync per batch --------------------------------------------------------------------------

def test_metric_updates_read_nothing_back_per_batch(rng):
    """train_on_batch and evaluation batches update every metric on the device, with no read-back:
    array_api_strict with read-backs and boolean masks refused (tests/test_no_host_wait.py)."""
    strict = pytest.importorskip("array_api_strict")
    be = backends.resolve("array_api_strict")
    x, y = mosaics(4, seed=9)
    y[:, 0] = 255
    net = seg_net([MeanIoU(ignore_index=255), "pixel_accuracy", "iou", "dice", "accuracy"], backend=be,
                  loss_options={"ignore_index": 255})
    xd, yd = net._prepare(x, y)
    metrics = net.metric_set()
    net.reset_metrics()
    with no_read_back(strict):
        for _ in range(2):
            net.train_on_batch(xd[:2, ...], yd[:2, ...])
        sums = fitting.evaluate_local(net, xd, yd, 2, metrics)
        with pytest.raises(HostWait):                    # the guard is on
            float(sums[0])
    logs = metric_state.evaluation_logs(net, metrics, *sums)
    assert 0 <= logs["miou"] <= 1 and 0 <= logs["pixel_accuracy"] <= 1
    assert 0 <= net._train_metrics.logs(0, 0)["miou"] <= 1


def test_cupy_dense_training_step_never_synchronises():
    """On a GPU: CuPy's own guard raises on any implicit synchronisation in a step with dense metrics."""
    try:
        be = backends.resolve("cupy")
    except backends.BackendError as exc:
        pytest.skip(f"cupy backend unavailable here: {exc}")
    import cupyx
    x, y = mosaics(4, seed=9)
    y[:, 0] = 255
    net = seg_net([MeanIoU(ignore_index=255), "pixel_accuracy", "iou", "dice"], backend=be,
                  loss_options={"ignore_index": 255})
    xd, yd = net._prepare(x, y)
    net.train_on_batch(xd, yd)                  # the first step compiles the kernels (may synchronise)
    metrics = net.metric_set()
    be.synchronize()
    with cupyx.allow_synchronize(False):
        for _ in range(2):
            net.train_on_batch(xd, yd)
        sums = fitting.evaluate_local(net, xd, yd, 2, metrics)
    logs = metric_state.evaluation_logs(net, metrics, *sums)
    pixel_accuracy, _, miou = host_segmentation_metrics(net.predict(x), y, 255)
    assert logs["miou"] == pytest.approx(miou, rel=1e-12)
    assert logs["pixel_accuracy"] == pytest.approx(pixel_accuracy, rel=1e-12)


def test_fit_reads_the_device_once_per_epoch_and_once_per_validation(monkeypatch):
    """However many batches an epoch has, its loss and every metric come back in one transfer
    (and the validation's in one more): nothing is read per batch."""
    x, y = mosaics(8, seed=11)
    for batch_size in (8, 1):
        net = seg_net(["miou", "pixel_accuracy", "iou", "dice", "accuracy"]).build()
        reads = []
        real = net.backend.to_numpy
        monkeypatch.setattr(net.backend, "to_numpy", lambda a, reads=reads, real=real:
                            (reads.append(a.shape), real(a))[1])
        net.fit(x[:6], y[:6], epochs=2, batch_size=batch_size, validation_data=(x[6:], y[6:]), verbose=0)
        monkeypatch.undo()
        assert len(reads) == 4, (batch_size, reads)


# --- data-parallel ----------------------------------------------------------------------------------

WORKER = '''
import json, sys
import numpy as np
import backends
from dcnn import distributed
sys.path.insert(0, {tests!r})
from test_dense_fit import mosaics, seg_net
comm = distributed.init(force=True)
backends.use("numpy")
x, y = mosaics(13, seed=13)
net = seg_net(["miou", "pixel_accuracy", "iou", "dice"])
net.build()
distributed.DataParallel(net, comm)
history = net.fit(x[:9], y[:9], epochs=2, batch_size=4, validation_data=(x[9:], y[9:]), verbose=0)
result = {{"history": history.history, "evaluate": net.evaluate(x[9:], y[9:], batch_size=1)}}
if comm.rank == 0:
    open(sys.argv[1], "w").write(json.dumps(result))
'''


def test_two_ranks_sum_the_metrics_as_one_process(tmp_path):
    """9 images at batch 4: shards of 2 and 2, and a last batch of one image that leaves rank 0
    empty; the ranks' confusion matrices and counts are all-reduced into the one-process metrics."""
    pytest.importorskip("mpi4py")
    try:
        prefix, mpi_env = distributed.mpiexec_command(2)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(ROOT / "tests")))
    env = {**os.environ, **mpi_env, "PYTHONPATH": str(ROOT), "DCNN_BACKEND": "numpy", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*prefix, sys.executable, str(script), str(tmp_path / "out.json")], capture_output=True,
                          text=True, timeout=180, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads((tmp_path / "out.json").read_text())
    x, y = mosaics(13, seed=13)
    net = seg_net(["miou", "pixel_accuracy", "iou", "dice"])
    history = net.fit(x[:9], y[:9], epochs=2, batch_size=4, validation_data=(x[9:], y[9:]), verbose=0)
    assert list(got["history"]) == list(history.history)
    for key, values in history.history.items():
        np.testing.assert_allclose(got["history"][key], values, rtol=1e-5, err_msg=key)
    expected = net.evaluate(x[9:], y[9:])
    assert list(got["evaluate"]) == list(expected)
    for key, value in expected.items():
        assert got["evaluate"][key] == pytest.approx(value, rel=1e-5), key
