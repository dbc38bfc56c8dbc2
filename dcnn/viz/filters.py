"""The first convolution's filters as a grid of small images."""
from __future__ import annotations

from pathlib import Path

from ..layers import Conv2D
from ._figure import grid_shape, new_figure, save_png, show_image


def first_conv(net) -> tuple[str, Conv2D]:
    """The state-dict prefix and layer of the model's first Conv2D."""
    if not net.model.built:
        net.build()
    for key, layer in net.model.named_layers():
        if isinstance(layer, Conv2D):
            return key, layer
    raise ValueError("the model has no Conv2D layer: there are no filters to draw")


def plot_filters(net, path, *, max_filters: int = 64) -> Path:
    """Write ``filters_figure(net)`` to ``path``."""
    return save_png(filters_figure(net, max_filters=max_filters), path)


def filters_figure(net, *, max_filters: int = 64):
    """Grid of the first Conv2D's filters (each stretched to its own range).

    One input channel is drawn in gray, three as RGB, any other count as the channel mean.
    """
    key, conv = first_conv(net)
    weights = net.backend.to_numpy(conv.params["weight"])       # (F, C, K, K)
    shown = min(len(weights), max_filters)
    rows, cols = grid_shape(shown, max_cols=8)
    fig = new_figure(max(1.2 * cols + 0.4, 4.0), 1.25 * rows + 0.8)
    grid = fig.add_gridspec(rows, cols)
    for j in range(shown):
        show_image(fig.add_subplot(grid[j // cols, j % cols]), weights[j], f"filter {j}", fontsize=8)
    f, c, k, _ = weights.shape
    more = f", first {shown} of {f}" if shown < f else ""
    fig.suptitle(f"layer {key.rstrip('.')}: {conv.describe()}\n{f} filters of {k}×{k} over {c} channel(s){more}",
                 fontsize=9)
    return fig
