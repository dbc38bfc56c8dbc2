"""The losses against PyTorch: value and gradient, float64 and float32, on every backend
(the strict namespace stands in for a GPU), and their target checks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcnn.model.losses import (BCEWithLogits, CrossEntropy, MeanAbsoluteError, MeanSquaredError,
                               SoftmaxCrossEntropy, get_loss)

# float64 agrees to rounding; float32 to its precision over sums of a few hundred terms.
TOL = {np.float64: dict(rtol=1e-10, atol=1e-13), np.float32: dict(rtol=2e-5, atol=1e-7)}


def run(backend, loss, outputs, targets):
    value = loss.forward(backend.from_numpy(outputs), backend.from_numpy(targets))
    return float(backend.to_numpy(value)), backend.to_numpy(loss.backward())


def torch_run(fn, outputs, targets, **options):
    x = torch.from_numpy(outputs.copy()).requires_grad_(True)
    value = fn(x, torch.from_numpy(targets.copy()), **options)
    value.backward()
    return value.item(), x.grad.numpy()


def compare(ours, ref, dtype):
    tol = TOL[dtype]
    np.testing.assert_allclose(ours[0], ref[0], **tol, err_msg="loss")
    assert ours[1].dtype == dtype
    np.testing.assert_allclose(ours[1], ref[1], **tol, err_msg="gradient")


def labels_with(rng, shape, k, ignore=None, fraction=0.2):
    y = rng.integers(0, k, shape)
    if ignore is not None:
        y[rng.random(shape) < fraction] = ignore
    return y


CE_OPTIONS = [
    {},
    {"ignore_index": 255},
    {"ignore_index": 0},                      # a real class ignored (e.g. the background)
    {"label_smoothing": 0.1},
    {"weight": [0.5, 2.0, 1.0, 0.0, 3.0]},
    {"weight": [0.5, 2.0, 1.0, 0.25, 3.0], "ignore_index": 255, "label_smoothing": 0.2},
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", CE_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_dense_cross_entropy_matches_torch(backend, rng, dtype, options):
    logits = (rng.standard_normal((3, 5, 6, 7)) * 3).astype(dtype)
    targets = labels_with(rng, (3, 6, 7), 5, options.get("ignore_index"))
    ours = run(backend, CrossEntropy(**options), logits, targets)
    torch_options = dict(options)
    if "weight" in options:
        torch_options["weight"] = torch.tensor(options["weight"], dtype=getattr(torch, np.dtype(dtype).name))
    compare(ours, torch_run(F.cross_entropy, logits, targets, **torch_options), dtype)


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 9), (2, 3, 2, 4, 5)])
@pytest.mark.parametrize("options", [{}, {"ignore_index": 1}, {"weight": [1.0, 2.0, 0.5], "label_smoothing": 0.3}],
                         ids=lambda o: ",".join(o) or "plain")
def test_cross_entropy_any_trailing_shape(backend, rng, shape, options):
    logits = rng.standard_normal(shape) * 2
    targets = labels_with(rng, shape[:1] + shape[2:], 3)
    torch_options = dict(options)
    if "weight" in options:
        torch_options["weight"] = torch.tensor(options["weight"], dtype=torch.float64)
    compare(run(backend, CrossEntropy(**options), logits, targets),
            torch_run(F.cross_entropy, logits, targets, **torch_options), np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_with_class_probabilities(backend, rng, dtype):
    logits = (rng.standard_normal((2, 4, 5, 3)) * 2).astype(dtype)
    probs = rng.random((2, 4, 5, 3)).astype(dtype)
    probs /= probs.sum(axis=1, keepdims=True)
    weight = [1.0, 0.5, 2.0, 1.5]
    ours = run(backend, CrossEntropy(0.1, weight=weight), logits, probs)
    ref = torch_run(F.cross_entropy, logits, probs, label_smoothing=0.1,
                    weight=torch.tensor(weight, dtype=getattr(torch, np.dtype(dtype).name)))
    compare(ours, ref, dtype)


def test_classification_keeps_the_fused_path_and_its_hit_count(backend, rng):
    logits = rng.standard_normal((6, 4))
    labels = np.array([0, 1, 2, 3, 0, 1])
    loss = SoftmaxCrossEntropy()
    ours = run(backend, loss, logits, labels)
    assert int(backend.to_numpy(loss.correct)) == int((logits.argmax(1) == labels).sum())
    compare(ours, torch_run(F.cross_entropy, logits, labels), np.float64)
    # With an ignored label the fused path would count the ignored rows: the general one runs.
    weighted = CrossEntropy(ignore_index=1)
    compare(run(backend, weighted, logits, labels), torch_run(F.cross_entropy, logits, labels, ignore_index=1),
            np.float64)
    assert weighted.correct is None


def test_every_position_ignored_gives_zero_not_nan(backend, rng):
    logits = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    value, grad = run(backend, CrossEntropy(ignore_index=255), logits, np.full((2, 4, 4), 255))
    assert value == 0.0 and not grad.any()


def test_cross_entropy_is_stable_for_huge_logits(backend):
    logits = np.zeros((1, 3, 1, 2), np.float32)
    logits[0, :, 0, 0] = [1000.0, 0.0, -1000.0]
    value, grad = run(backend, CrossEntropy(weight=[1.0, 1.0, 1.0]), logits, np.array([[[2, 0]]]))
    assert value == pytest.approx(1000.0 + np.log(3) / 2)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,fn", [(MeanSquaredError, F.mse_loss), (MeanAbsoluteError, F.l1_loss)])
def test_regression_losses_match_torch(backend, rng, dtype, cls, fn):
    outputs = rng.standard_normal((3, 2, 5, 4)).astype(dtype)
    targets = rng.standard_normal((3, 2, 5, 4)).astype(dtype)
    targets[0, 0, 0] = outputs[0, 0, 0]          # ties: L1's gradient is 0 there, as torch's
    compare(run(backend, cls(), outputs, targets), torch_run(fn, outputs, targets), dtype)


BCE_CASES = {
    "binary mask": ((3, 1, 6, 5), None),
    "multi-label masks, pos_weight per class": ((2, 4, 5, 5), [1.0, 3.0, 0.5, 2.0]),
    "multi-label per image": ((6, 4), [1.0, 3.0, 0.5, 2.0]),
    "one pos_weight": ((2, 3, 4), 2.5),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(BCE_CASES))
def test_bce_with_logits_matches_torch(backend, rng, dtype, case):
    shape, pos_weight = BCE_CASES[case]
    logits = (rng.standard_normal(shape) * 4).astype(dtype)
    logits.flat[:2] = [60.0, -60.0]              # far out, where a naive log(sigmoid) overflows
    targets = (rng.random(shape) < 0.4).astype(dtype)
    targets.flat[-1] = 0.3                       # soft targets too
    torch_pw = None
    if pos_weight is not None:
        pw = np.asarray(pos_weight, dtype)
        torch_pw = torch.from_numpy(pw.reshape(pw.shape + (1,) * (len(shape) - 2)) if pw.ndim else pw)
    ours = run(backend, BCEWithLogits(pos_weight), logits, targets)
    compare(ours, torch_run(F.binary_cross_entropy_with_logits, logits, targets, pos_weight=torch_pw), dtype)


def test_names_and_options():
    assert isinstance(get_loss("cross_entropy", ignore_index=255, label_smoothing=0.1), CrossEntropy)
    assert isinstance(get_loss("MSE"), MeanSquaredError) and isinstance(get_loss("l1"), MeanAbsoluteError)
    assert get_loss("bce_with_logits", pos_weight=[1, 2]).pos_weight.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="unknown loss 'dice'.*mse"):
        get_loss("dice")
    with pytest.raises(TypeError, match="loss 'mse' does not take the options \\['label_smoothing'\\]"):
        get_loss("mse", label_smoothing=0.1)
    with pytest.raises(ValueError, match="weight must be a 1-D sequence"):
        CrossEntropy(weight=[1.0, float("nan")])
    with pytest.raises(ValueError, match="ignore_index must be an int"):
        CrossEntropy(ignore_index=0.5)


def test_forward_refuses_mismatched_shapes(numpy_backend):
    be = numpy_backend
    with pytest.raises(ValueError, match=r"labels of shape \(2, 4, 4\) or class probabilities"):
        CrossEntropy().forward(be.from_numpy(np.zeros((2, 3, 4, 4))), be.from_numpy(np.zeros((2, 4, 5), np.int64)))
    with pytest.raises(ValueError, match="2 class weights but the logits have 3 classes"):
        CrossEntropy(weight=[1, 2]).forward(be.from_numpy(np.zeros((2, 3, 4))), be.from_numpy(np.zeros((2, 4), int)))
    with pytest.raises(ValueError, match="mse expects targets of the outputs' shape"):
        MeanSquaredError().forward(be.from_numpy(np.zeros((2, 3))), be.from_numpy(np.zeros((2, 1))))
    with pytest.raises(ValueError, match="3 positive weights but the outputs"):
        BCEWithLogits([1, 2, 3]).forward(be.from_numpy(np.zeros((2, 2, 4))), be.from_numpy(np.zeros((2, 2, 4))))


def test_check_targets_for_cross_entropy(numpy_backend):
    ce = CrossEntropy(ignore_index=255)
    masks = np.array([[[0, 1], [2, 255]]], np.uint8)
    out = ce.check_targets(masks, (3, 2, 2), count=1)
    assert out.dtype == np.int64 and out.tolist() == masks.tolist()
    assert ce.check_targets(numpy_backend.from_numpy(masks), (3, 2, 2)).dtype == np.int64
    assert CrossEntropy().check_targets(np.array([1.0, 2.0]), (3,)).dtype == np.int64   # whole floats are labels
    assert CrossEntropy().check_targets(np.eye(3)[[0, 2]], (3,)).dtype == np.float32     # one-hot
    with pytest.raises(ValueError, match=r"labels outside \[0, 2\] or the ignore_index 255: 3, 7 in 2 places"):
        ce.check_targets(np.array([[[0, 3], [7, 255]]]), (3, 2, 2))
    with pytest.raises(ValueError, match=r"labels outside \[0, 2\]: -100"):
        CrossEntropy().check_targets(np.array([[-100, 1]]), (3, 2))
    with pytest.raises(TypeError, match="integer class labels of shape \\(1, 2\\); got dtype float64 with fractional"):
        ce.check_targets(np.array([[0.5, 1.0]]), (3, 2))
    with pytest.raises(TypeError, match="got dtype bool"):
        ce.check_targets(np.array([[True, False]]), (3, 2))
    with pytest.raises(ValueError, match=r"expects integer labels of shape \(1, 2, 2\) or class probabilities of "
                                         r"shape \(1, 3, 2, 2\); got targets of shape \(1, 2\)"):
        ce.check_targets(np.array([[0, 1]]), (3, 2, 2))
    with pytest.raises(ValueError, match="x and y have different lengths: 2 samples but 1 targets"):
        ce.check_targets(masks, (3, 2, 2), count=2)
    with pytest.raises(ValueError, match="2 class weights but the model has 3 outputs"):
        CrossEntropy(weight=[1, 1]).check_targets(masks, (3, 2, 2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        ce.check_targets(np.full((1, 3, 2), np.nan), (3, 2))
    with pytest.raises(ValueError, match="negative values"):
        ce.check_targets(np.full((1, 3, 2), -1.0), (3, 2))


def test_check_targets_for_elementwise_losses():
    clean = np.zeros((2, 1, 4, 4), np.float64)
    assert MeanSquaredError().check_targets(clean, (1, 4, 4)).dtype == np.float32
    with pytest.raises(ValueError, match=r"mse expects targets of shape \(N, 1, 4, 4\).*got \(2, 4, 4\)"):
        MeanSquaredError().check_targets(clean[:, 0], (1, 4, 4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        MeanAbsoluteError().check_targets(np.full((2, 3), np.inf), (3,))
    with pytest.raises(TypeError, match="must hold numbers"):
        MeanAbsoluteError().check_targets(np.array([["a", "b"]]), (2,))
    bce = BCEWithLogits()
    assert bce.check_targets(np.ones((2, 1, 4, 4), np.uint8), (1, 4, 4)).dtype == np.float32
    with pytest.raises(ValueError, match=r"targets in \[0, 1\].*found values 0..2"):
        bce.check_targets(np.array([[0, 2]]), (2,))
    with pytest.raises(ValueError, match="3 positive weights but the model's outputs \\(2, 4\\) have 2 classes"):
        BCEWithLogits([1, 2, 3]).check_targets(np.zeros((1, 2, 4)), (2, 4))
