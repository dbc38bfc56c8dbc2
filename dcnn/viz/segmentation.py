"""A segmentation model on labelled images: each input beside its true and its predicted mask, both laid
over the picture in the class colours of ``dcnn.viz.masks`` (background left clear)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._figure import colour_key, displayable, new_figure, save_png
from .masks import palette

ALPHA = 0.6          # the mask colour's share of an overlaid pixel


def overlay(image, labels, classes: int, alpha: float = ALPHA) -> np.ndarray:
    """A (C, H, W) image with the mask ``labels`` (H, W) laid over it: (H, W, 3) floats in [0, 1]."""
    pixels, cmap = displayable(image)
    rgb = np.repeat(pixels[..., None], 3, axis=-1) if cmap == "gray" else pixels
    rgb = np.clip(rgb, 0, 1)
    colours = palette(classes).astype(np.float32) / 255
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"a mask of shape {labels.shape} does not fit an image of {rgb.shape[:2]}")
    return np.where((labels > 0)[..., None], (1 - alpha) * rgb + alpha * colours[labels], rgb)


def segmentation_figure(images, masks, predicted, class_names, max_images: int = 6):
    """One row per image (the first ``max_images``): the input, the true mask and the predicted one,
    titled with that image's pixel accuracy; a colour key of the classes shown below."""
    images, masks, predicted = np.asarray(images), np.asarray(masks), np.asarray(predicted)
    if images.ndim == 3:
        images = images[:, None]
    if not (images.ndim == 4 and masks.shape == predicted.shape == (len(images), *images.shape[2:])):
        raise ValueError(f"images (N, C, H, W) need true and predicted masks (N, H, W); got {images.shape}, "
                         f"{masks.shape} and {predicted.shape}")
    names = [str(c) for c in class_names]
    rows = max(1, min(len(images), max_images))
    fig = new_figure(6.4, 2.1 * rows + 0.9)
    axes = fig.subplots(rows, 3, squeeze=False)
    for i, (ax_in, ax_true, ax_pred) in enumerate(axes):
        if i >= len(images):
            break
        image, _ = displayable(images[i])
        ax_in.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax_true.imshow(overlay(images[i], masks[i], len(names)), interpolation="nearest")
        ax_pred.imshow(overlay(images[i], predicted[i], len(names)), interpolation="nearest")
        ax_in.set_title(f"input {i}", fontsize=9)
        ax_true.set_title("true mask", fontsize=9)
        ax_pred.set_title(f"predicted: {np.mean(masks[i] == predicted[i]):.1%} of pixels right", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    shown = np.union1d(masks[:rows], predicted[:rows]).astype(int)
    colour_key(fig, palette(len(names))[shown] / 255, [names[k] for k in shown])
    return fig


def plot_segmentation(net, x, y, path, class_names=None, max_images: int = 6) -> Path:
    """Predict the first ``max_images`` of ``x`` and write ``segmentation_figure`` to ``path`` (a .png)."""
    x, y = np.asarray(x[:max_images]), np.asarray(y[:max_images])
    predicted = net.predict(x).argmax(axis=1)
    names = class_names if class_names is not None else [str(i) for i in range(net.num_classes)]
    return save_png(segmentation_figure(x, y, predicted, names, max_images), path)
