"""The one place that imports matplotlib: headless figures, saved as PNG files.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot, no global state,
no display needed) and written atomically, so importing dcnn never needs matplotlib.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..utils.files import atomic_write_bytes

INSTALL_HINT = "pip install matplotlib (in a clone of dcnn: pip install -e '.[plot]')"
DPI = 100


_INLINE = None


def _inline_figure_class():
    """matplotlib's Figure plus ``_repr_png_``: Jupyter shows it as a picture, without pyplot."""
    global _INLINE
    if _INLINE is None:
        from matplotlib.figure import Figure

        class InlineFigure(Figure):
            def _repr_png_(self):
                buffer = io.BytesIO()
                self.savefig(buffer, format="png", dpi=DPI)
                return buffer.getvalue()

        _INLINE = InlineFigure
    return _INLINE


def new_figure(width: float, height: float):
    """A constrained-layout Figure of ``width`` x ``height`` inches; a clear error without matplotlib.

    Being a Figure, it is saved with ``fig.savefig``; in a notebook it displays as a picture."""
    try:
        from matplotlib.figure import Figure  # noqa: F401  (checked on every call: it may have gone)
        figure = _inline_figure_class()
    except ImportError as exc:
        raise ImportError(f"dcnn.viz draws with matplotlib, which is not installed: {INSTALL_HINT}") from exc
    return figure(figsize=(width, height), layout="constrained")


def save_png(fig, path) -> Path:
    """Render ``fig`` with Agg and write it to ``path`` (parent folders created)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figures are written as PNG; give a path ending in .png, got {str(path)!r}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def grid_shape(count: int, max_cols: int = 8) -> tuple[int, int]:
    """Rows and columns of a near-square grid holding ``count`` panels (one row up to 4)."""
    cols = count if count <= 4 else min(max_cols, int(np.ceil(np.sqrt(count))))
    return -(-count // cols), cols


def displayable(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) host image -> (array for imshow, colormap): gray for one channel, RGB for three.

    RGB is stretched to [0, 1] as a whole; other channel counts show their mean.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        return image, "gray"
    if image.shape[0] == 3:
        rgb = np.moveaxis(image, 0, -1)
        lo, hi = float(rgb.min()), float(rgb.max())
        return (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb), None
    return image.mean(axis=0), "gray"


def show_image(ax, image: np.ndarray, title: str | None = None, fontsize: int = 9) -> None:
    """Draw an image panel with no ticks."""
    pixels, cmap = displayable(image)
    ax.imshow(pixels, cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def colour_key(fig, colours, names, columns: int = 4) -> None:
    """A legend below the figure: one swatch per (RGB in [0, 1]) colour and its name."""
    from matplotlib.patches import Patch
    handles = [Patch(facecolor=tuple(c), edgecolor="0.4", label=str(n)) for c, n in zip(colours, names)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(columns, len(handles)), fontsize=8,
                   frameon=False)
