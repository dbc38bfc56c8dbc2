"""How a trained model does on labelled images: confusion matrix and misclassified examples."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..train.metrics import class_labels as _labels  # noqa: F401 (re-exported)
from ..train.metrics import confusion_matrix
from ._figure import grid_shape, new_figure, save_png, show_image


def _names(class_names, n: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    if len(class_names) < n:
        raise ValueError(f"{len(class_names)} class names given for {n} classes")
    return [str(c) for c in class_names]


def plot_confusion_matrix(y_true, y_pred, path, class_names=None) -> Path:
    """Write ``confusion_matrix_figure(...)`` to ``path``."""
    return save_png(confusion_matrix_figure(y_true, y_pred, class_names), path)


def confusion_matrix_figure(y_true, y_pred, class_names=None):
    """Counts in each cell, coloured by the share of the true class (row)."""
    n = len(class_names) if class_names is not None else None
    counts = confusion_matrix(y_true, y_pred, n)
    n = len(counts)
    names = _names(class_names, n)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.5 + 0.55 * n
    fig = new_figure(size + 0.4, size + 0.2)
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(counts):    # one label per cell, not per sample
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"confusion matrix: {counts.sum()} images, accuracy {accuracy:.1%}", fontsize=10)
    return fig


def plot_misclassified(images, y_true, y_pred, path, class_names=None, probs=None, max_images: int = 25) -> Path:
    """Write ``misclassified_figure(...)`` to ``path``."""
    return save_png(misclassified_figure(images, y_true, y_pred, class_names, probs, max_images), path)


def misclassified_figure(images, y_true, y_pred, class_names=None, probs=None, max_images: int = 25):
    """Grid of the first ``max_images`` images whose prediction is wrong, titled true / predicted."""
    images = np.asarray(images)
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if not len(images) == len(y_true) == len(y_pred):
        raise ValueError(f"images, y_true and y_pred differ in length: {len(images)}, {len(y_true)}, "
                         f"{len(y_pred)}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W) or (N, H, W); got {images.shape}")
    names = _names(class_names, int(max(y_true.max(initial=0), y_pred.max(initial=0)) + 1))
    probs = None if probs is None else np.asarray(probs)
    wrong = np.flatnonzero(y_true != y_pred)[:max_images]
    rows, cols = grid_shape(max(len(wrong), 1), max_cols=5 if len(wrong) <= 25 else 8)
    fig = new_figure(1.7 * cols + 0.3, 1.9 * rows + 0.5)
    if not len(wrong):
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, f"no misclassified images among {len(y_true)}", ha="center", va="center")
        return fig
    grid = fig.add_gridspec(rows, cols)
    for panel, i in enumerate(wrong):
        confidence = f" ({probs[i, y_pred[i]]:.0%})" if probs is not None else ""
        show_image(fig.add_subplot(grid[panel // cols, panel % cols]), images[i],
                   f"true: {names[y_true[i]]}\npred: {names[y_pred[i]]}{confidence}", fontsize=7)
    fig.suptitle(f"misclassified: {len(wrong)} shown of {int((y_true != y_pred).sum())} "
                 f"wrong in {len(y_true)}", fontsize=10)
    return fig


def plot_results(net, x, y, out_dir, class_names=None, max_images: int = 25) -> list[Path]:
    """Predict ``x`` once and write ``confusion_matrix.png`` and ``misclassified.png`` into ``out_dir``."""
    probs = net.predict(x)
    y_pred = probs.argmax(axis=1)
    y_true = _labels(y, "y")
    names = class_names if class_names is not None else [str(i) for i in range(probs.shape[1])]
    out_dir = Path(out_dir)
    return [plot_confusion_matrix(y_true, y_pred, out_dir / "confusion_matrix.png", names),
            plot_misclassified(x, y_true, y_pred, out_dir / "misclassified.png", names, probs, max_images)]
