"""Metrics against references written from torchmetrics' definitions (with torch and NumPy, by
another route than ours: bincount and one-hot sums instead of a product of one-hots), on every
backend, fed in several batches; and no update waits for the device."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcnn.model.losses import BCEWithLogits, CrossEntropy, MeanSquaredError
from dcnn.model.metrics import (MAE, PSNR, Accuracy, ConfusionMatrix, Dice, MeanIoU, PerClassIoU, PixelAccuracy,
                                get_metric)
from test_no_host_wait import no_read_back


def feed(backend, metric, outputs, targets, batch=3):
    metric.reset(backend)
    for start in range(0, len(outputs), batch):
        stop = start + batch
        metric.update(backend.from_numpy(outputs[start:stop]), backend.from_numpy(targets[start:stop]))
    return metric.result()


def segmentation(rng, n=7, k=5, h=6, w=5, ignore=None, absent=None):
    """Logits that are right about half the time, labels with an absent class and ignored pixels."""
    labels = rng.integers(0, k, (n, h, w))
    if absent is not None:
        labels[labels == absent] = (absent + 1) % k
    logits = rng.standard_normal((n, k, h, w))
    logits += 2.5 * np.moveaxis(np.eye(k)[labels], -1, 1) * (rng.random((n, 1, h, w)) < 0.5)
    if absent is not None:
        logits[:, absent] -= 10                  # neither a label nor ever predicted
    if ignore is not None:
        labels[rng.random(labels.shape) < 0.15] = ignore
    return logits, labels


def torchmetrics_confmat(logits, labels, k, ignore_index=None):
    preds, target = torch.from_numpy(logits).argmax(1).flatten(), torch.from_numpy(labels).flatten()
    if ignore_index is not None:                 # _multiclass_confusion_matrix_format
        keep = target != ignore_index
        preds, target = preds[keep], target[keep]
    return torch.bincount(target * k + preds, minlength=k * k).reshape(k, k)


def torchmetrics_jaccard(confmat, average, ignore_index=None):
    """torchmetrics' _jaccard_index_reduce for a multiclass confusion matrix (macro or none)."""
    confmat = confmat.double()
    num = torch.diag(confmat)
    denom = confmat.sum(0) + confmat.sum(1) - num
    jaccard = torch.where(denom > 0, num / denom.clamp(min=1), torch.zeros_like(num))
    if average == "none":
        return jaccard
    weights = torch.ones_like(jaccard)
    if ignore_index is not None and 0 <= ignore_index < confmat.shape[0]:
        weights[ignore_index] = 0.0
    weights[confmat.sum(1) + confmat.sum(0) == 0] = 0.0
    return ((weights * jaccard) / weights.sum()).sum()


def torchmetrics_dice(logits, labels, k, include_background=True):
    """segmentation.DiceScore(input_format='index', aggregation_level='global', average='macro')."""
    preds = F.one_hot(torch.from_numpy(logits).argmax(1), k).movedim(-1, 1)
    target = F.one_hot(torch.from_numpy(labels), k).movedim(-1, 1)
    if not include_background:
        preds, target = preds[:, 1:], target[:, 1:]
    axes = [0] + list(range(2, target.ndim))
    numerator = 2 * (preds * target).sum(axes).double()
    denominator = (preds.sum(axes) + target.sum(axes)).double()
    dice = torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.full_like(numerator, math.nan))
    return torch.nanmean(dice)


@pytest.mark.parametrize("ignore", [None, 255, 0])
def test_confusion_matrix_and_iou(backend, rng, ignore):
    logits, labels = segmentation(rng, ignore=ignore, absent=3)
    counts = feed(backend, ConfusionMatrix(ignore_index=ignore), logits, labels)
    ref = torchmetrics_confmat(logits, labels, 5, ignore)
    assert counts.dtype == np.int64 and np.array_equal(counts, ref.numpy())
    miou = feed(backend, MeanIoU(ignore_index=ignore), logits, labels)
    assert miou == pytest.approx(torchmetrics_jaccard(ref, "macro", ignore).item(), rel=1e-12)
    per_class = feed(backend, PerClassIoU(ignore_index=ignore), logits, labels)
    np.testing.assert_allclose(per_class, torchmetrics_jaccard(ref, "none").numpy(), rtol=1e-12)
    assert per_class[3] == 0.0 and miou > per_class.mean()     # the absent class is out of the mean


@pytest.mark.parametrize("include_background", [True, False])
def test_dice(backend, rng, include_background):
    logits, labels = segmentation(rng, absent=2)
    dice = feed(backend, Dice(include_background=include_background), logits, labels)
    assert dice == pytest.approx(torchmetrics_dice(logits, labels, 5, include_background).item(), rel=1e-12)


@pytest.mark.parametrize("ignore", [None, 4])
def test_pixel_accuracy(backend, rng, ignore):
    logits, labels = segmentation(rng, ignore=ignore)
    keep = labels != ignore
    expected = ((logits.argmax(1) == labels) & keep).sum() / keep.sum()
    assert feed(backend, PixelAccuracy(ignore_index=ignore), logits, labels) == pytest.approx(expected, rel=1e-12)


def test_accuracy_of_classes_labels_and_one_hot(backend, rng):
    logits = rng.standard_normal((10, 4))
    labels = rng.integers(0, 4, 10)
    expected = np.mean(logits.argmax(1) == labels)
    assert feed(backend, Accuracy(), logits, labels) == pytest.approx(expected)
    assert feed(backend, Accuracy(), logits, np.eye(4)[labels]) == pytest.approx(expected)


def test_one_logit_is_binary(backend, rng):
    logits = rng.standard_normal((4, 1, 5, 5))
    masks = (rng.random((4, 1, 5, 5)) < 0.4).astype(np.float32)
    predicted, truth = (logits[:, 0] > 0).astype(np.int64), masks[:, 0].astype(np.int64)
    assert feed(backend, Accuracy(), logits, masks) == pytest.approx(np.mean(predicted == truth))
    assert np.array_equal(feed(backend, ConfusionMatrix(), logits, masks),
                          np.bincount(truth.ravel() * 2 + predicted.ravel(), minlength=4).reshape(2, 2))


def test_mae_and_psnr(backend, rng):
    outputs = rng.random((5, 1, 4, 4)).astype(np.float32)
    targets = rng.random((5, 1, 4, 4)).astype(np.float32)
    d = outputs.astype(np.float64) - targets
    assert feed(backend, MAE(), outputs, targets) == pytest.approx(np.abs(d).mean(), rel=1e-6)
    mse = (d * d).mean()
    assert feed(backend, PSNR(), outputs, targets) == pytest.approx(10 * np.log10(1 / mse), rel=1e-6)
    assert feed(backend, PSNR(data_range=255.0), outputs, targets) == pytest.approx(10 * np.log10(255 ** 2 / mse),
                                                                                   rel=1e-6)
    assert feed(backend, PSNR(), targets, targets) == math.inf


def test_reset_starts_over_and_logs_are_named(numpy_backend, rng):
    logits, labels = segmentation(rng)
    metric = MeanIoU()
    feed(numpy_backend, metric, logits[::-1].copy(), labels)
    again = feed(numpy_backend, metric, logits, labels)
    assert metric.logs() == {"miou": again} and again == feed(numpy_backend, MeanIoU(), logits, labels)
    iou = PerClassIoU(class_names=["bg", "a", "b", "c", "d"])
    feed(numpy_backend, iou, logits, labels)
    assert list(iou.logs()) == ["iou_bg", "iou_a", "iou_b", "iou_c", "iou_d"]
    twin = metric.clone().reset(numpy_backend)
    twin.update(logits[:2], labels[:2])
    assert metric.result() == again and twin.result() == feed(numpy_backend, MeanIoU(), logits[:2], labels[:2])
    assert ConfusionMatrix().logs() == {} and MAE().higher_is_better is False
    assert math.isnan(Accuracy().reset(numpy_backend).result())


def test_names_and_errors(numpy_backend):
    assert isinstance(get_metric("mIoU", ignore_index=255), MeanIoU)
    assert get_metric("psnr", data_range=2.0).data_range == 2.0
    with pytest.raises(ValueError, match="unknown metric 'f1'; valid ones are: accuracy"):
        get_metric("f1")
    with pytest.raises(TypeError, match="metric 'mae' does not take the options \\['ignore_index'\\]"):
        get_metric("mae", ignore_index=0)
    be = numpy_backend
    with pytest.raises(ValueError, match=r"miou on outputs of shape \(2, 3, 4, 4\) expects labels of shape "
                                         r"\(2, 4, 4\)"):
        MeanIoU().update(be.from_numpy(np.zeros((2, 3, 4, 4))), be.from_numpy(np.zeros((2, 4), np.int64)))
    with pytest.raises(ValueError, match="was made for 4 classes; the outputs have 3"):
        MeanIoU(num_classes=4).update(be.from_numpy(np.zeros((2, 3, 4))), be.from_numpy(np.zeros((2, 4), np.int64)))
    with pytest.raises(ValueError, match="psnr expects targets of the outputs' shape"):
        PSNR().update(be.from_numpy(np.zeros((2, 3))), be.from_numpy(np.zeros((2, 4))))
    with pytest.raises(ValueError, match="data_range must be a positive number"):
        PSNR(data_range=0)


def test_updates_and_losses_never_wait_for_the_device(rng):
    strict_mod = pytest.importorskip("array_api_strict")
    import backends
    be = backends.resolve("array_api_strict")
    logits, labels = segmentation(rng, ignore=255)
    x, y = be.from_numpy(logits), be.from_numpy(labels)
    values = be.from_numpy(rng.random((2, 3, 4)))
    metrics = [Accuracy(ignore_index=255), MeanIoU(ignore_index=255), Dice(), PerClassIoU(), MAE(), PSNR()]
    for m in metrics:
        m.reset(be)
    with no_read_back(strict_mod):
        for m in metrics:
            for _ in range(2):
                m.update(values, values) if isinstance(m, (MAE, PSNR)) else m.update(x, y)
        for loss, target in ((CrossEntropy(0.1, weight=[1, 2, 1, 1, 1], ignore_index=255), y),
                             (MeanSquaredError(), x), (BCEWithLogits([1, 2, 3, 1, 1]), x)):
            loss.forward(x, target)
            loss.backward()
    assert all(isinstance(m.result(), (float, np.ndarray)) for m in metrics)
