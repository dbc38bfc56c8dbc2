"""Loss and accuracy (or a segmentation model's pixel accuracy and mean IoU) per epoch, training against
validation."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._figure import new_figure, save_png

PLOTTED = ("loss", "accuracy", "pixel_accuracy", "miou")


def plot_training_curves(history: dict, path) -> Path:
    """Write ``training_curves_figure(history)`` to ``path`` (a .png) and return the path."""
    return save_png(training_curves_figure(history), path)


def training_curves_figure(history: dict):
    """Plot ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]}``.

    One panel for loss and one for each of accuracy, pixel_accuracy and miou that is present;
    validation curves are drawn when their lists are. A ``History`` object is accepted too.
    """
    history = getattr(history, "history", history)
    if not isinstance(history, dict):
        raise TypeError(f"history must be a dict of per-epoch lists; got {type(history).__name__}")
    metrics = [m for m in PLOTTED if history.get(m) or history.get(f"val_{m}")]
    if not metrics:
        raise ValueError(f"history has no 'loss' or 'accuracy' values to plot; its keys are {sorted(history)}")
    fig = new_figure(4.2 * len(metrics) + 0.4, 3.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = np.asarray(history.get(key) or [], dtype=float)
            if values.ndim != 1:
                raise ValueError(f"history[{key!r}] must be a list of numbers, one per epoch")
            if len(values):
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    return fig
