"""The seed notebook's demo: two hand-made edge filters, then ReLU, max-pool and normalisation."""
from __future__ import annotations

import numpy as np

from ..layers import Conv2D, FeatureMapNorm, MaxPool2D, ReLU
from ..model.network import DCNNetwork
from ..model.presets import HORIZONTAL_EDGE, VERTICAL_EDGE  # [[1, 0, -1]] * 3 and its transpose


def edge_filter_demo(input_shape=None, *, max_activation: float = 1.0, pool_size: int = 2,
                     backend=None) -> DCNNetwork:
    """The seed's fixed pipeline: edge filters -> ReLU(max_activation) -> MaxPool2D -> FeatureMapNorm.

    The filters are frozen (``trainable=False``) and applied to every input channel.
    ``max_activation`` is the firing cap for inputs in [0, 1] (an edge filter gives at most 3).
    With ``input_shape=None`` the model is built for the first image it sees.
    """
    net = DCNNetwork(input_shape=input_shape, backend=backend)
    net.add_layer(Conv2D(2, 3, kernel=np.stack([VERTICAL_EDGE, HORIZONTAL_EDGE]), trainable=False))
    net.add_layer(ReLU(max_activation=max_activation))
    net.add_layer(MaxPool2D(pool_size))
    net.add_layer(FeatureMapNorm())
    return net
