"""Pictures of what a network computes, learns and gets wrong, written as PNG files.

Drawing needs matplotlib (``pip install matplotlib``, or ``pip install -e '.[plot]'`` in a clone); importing this package does not.

- ``plot_stages(net, image, out_dir)``: the seed notebook's step-by-step pictures, one per layer.
- ``edge_filter_demo()``: the seed's model (edge filters -> ReLU -> max-pool -> normalisation).
- ``plot_filters(net, path)``: the first convolution's filters.
- ``plot_training_curves(history, path)``: loss and accuracy per epoch.
- ``plot_confusion_matrix``, ``plot_misclassified``, ``plot_results``: results on labelled images.
- ``plot_segmentation(net, x, masks, path)``: inputs beside their true and predicted masks (``masks``:
  the class colours, and mask and legend PNGs written with Pillow).

Each ``plot_*`` has a ``*_figure`` twin that returns the matplotlib Figure instead of writing it.
"""
from ._figure import INSTALL_HINT
from .filters import filters_figure, plot_filters
from .images import as_chw, load_image_file
from .results import (confusion_matrix, confusion_matrix_figure, misclassified_figure, plot_confusion_matrix,
                      plot_misclassified, plot_results)
from .seed import HORIZONTAL_EDGE, VERTICAL_EDGE, edge_filter_demo
from .segmentation import plot_segmentation, segmentation_figure
from .stages import Stage, feature_maps, plot_stages, stage_figure
from .training import plot_training_curves, training_curves_figure

__all__ = ["HORIZONTAL_EDGE", "INSTALL_HINT", "Stage", "VERTICAL_EDGE", "as_chw", "confusion_matrix",
           "confusion_matrix_figure", "edge_filter_demo", "feature_maps", "filters_figure", "load_image_file",
           "misclassified_figure", "plot_confusion_matrix", "plot_filters", "plot_misclassified", "plot_results",
           "plot_segmentation", "plot_stages", "plot_training_curves", "segmentation_figure", "stage_figure",
           "training_curves_figure"]
