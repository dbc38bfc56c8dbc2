"""The seed's step-by-step pictures for any model: each layer's feature maps beside the input."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..layers import BatchNorm2D, Dropout, FeatureMapNorm, Layer
from ..utils.checks import as_batch
from ._figure import grid_shape, new_figure, save_png, show_image
from .images import as_chw

NORMALISATIONS = (FeatureMapNorm, BatchNorm2D)


@dataclass
class Stage:
    """One layer's output for one image: ``maps`` is a (C, H, W) host array."""
    number: int        # 1, 2, ... in forward order
    key: str           # the layer's state-dict prefix, e.g. "0." or "1.2."
    layer: Layer
    maps: np.ndarray

    @property
    def slug(self) -> str:
        return f"stage{self.number:02d}_{type(self.layer).__name__.lower()}"


def feature_maps(net, image) -> tuple[np.ndarray, list[Stage]]:
    """Run one image through ``net`` layer by layer in eval mode: every layer (every call of a
    graph's layers) whose output is still feature maps.  Inside a Residual the stages are its
    body's layers, then the sum body + shortcut.

    Returns the input as a (C, H, W) host array and one Stage per layer whose
    output is still a stack of maps (Dropout, the identity in eval mode, is skipped).
    Computation stays on the model's backend; each stage's maps come to the host once.
    An unbuilt model is built for the image's shape.
    """
    channels = net.input_shape[0] if net.input_shape else None
    image = as_chw(net.backend.to_numpy(image) if net.backend.owns(image) else image, channels)
    if not net.model.built:
        net.build(image.shape)
    x = as_batch(net.backend, image[None], net.input_shape, name="image")
    stages = []
    was_training = net.model.training
    net.model.train(False)
    try:
        # The layer tree's own walk: a Residual shows its body's steps, then the sum.
        for key, layer, x in net.model.forward_stages(x):
            if x.ndim != 4:          # flat features (after a Flatten or a global pool) are not maps
                continue
            if not isinstance(layer, Dropout):
                stages.append(Stage(len(stages) + 1, key + ".", layer, net.backend.to_numpy(x[0, ...])))
    finally:
        net.model.train(was_training)
    return image, stages


def stage_figure(image: np.ndarray, stage: Stage, *, max_maps: int = 16, caption: str = ""):
    """One Figure: the input image, the stage's first ``max_maps`` maps, and for a
    normalisation stage the histogram of its first map.  ``caption`` names the image."""
    maps = stage.maps
    shown = min(len(maps), max_maps)
    rows, cols = grid_shape(shown)
    histogram = isinstance(stage.layer, NORMALISATIONS)
    width = 1 + cols + (1.4 if histogram else 0)
    fig = new_figure(1.9 * width + 0.4, 1.9 * rows + 0.8)
    grid = fig.add_gridspec(rows, 1 + cols + int(histogram),
                            width_ratios=[1.0] + [1.0] * cols + ([1.4] if histogram else []))
    show_image(fig.add_subplot(grid[:, 0]), image, "input")
    for j in range(shown):
        lo, hi = float(maps[j].min()), float(maps[j].max())
        show_image(fig.add_subplot(grid[j // cols, 1 + j % cols]), maps[j], f"map {j}\n{lo:.3g} … {hi:.3g}",
                   fontsize=8)
    if histogram:
        ax = fig.add_subplot(grid[:, -1])
        values = maps[0].ravel()
        ax.hist(values, bins=30, color="tab:blue")
        ax.set_title(f"map 0 values\nmean {values.mean():.2f}, std {values.std():.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
    c, h, w = maps.shape
    more = f" (first {shown} of {c} maps)" if shown < c else ""
    what = "residual sum: body + shortcut" if stage.layer.children() else stage.layer.describe()
    fig.suptitle(f"stage {stage.number} ({stage.key.rstrip('.')}): {what} → {c}×{h}×{w}{more}"
                 + (f"\n{caption}" if caption else ""), fontsize=10)
    return fig


def plot_stages(net, image, out_dir, *, max_maps: int = 16, prefix: str = "", caption: str = "") -> list[Path]:
    """Write one PNG per stage of ``net`` for ``image`` into ``out_dir``; returns their paths.

    ``image`` is (H, W), (C, H, W) or (H, W, C), float or uint8; files are named
    ``{prefix}stage01_conv2d.png``, ``{prefix}stage02_relu.png``, ...; ``caption`` (e.g. where
    the image comes from) goes under each title.
    """
    if isinstance(max_maps, bool) or not isinstance(max_maps, (int, np.integer)) or max_maps < 1:
        raise ValueError(f"max_maps must be a positive int; got {max_maps!r}")
    image, stages = feature_maps(net, image)
    if not stages:
        raise ValueError("the model has no layer that outputs feature maps before Flatten: nothing to draw")
    out_dir = Path(out_dir)
    return [save_png(stage_figure(image, stage, max_maps=max_maps, caption=caption),
                     out_dir / f"{prefix}{stage.slug}.png")
            for stage in stages]
