"""dcnn: a deep convolutional network framework written once for NumPy and CuPy.

The backend is chosen with ``DCNN_BACKEND=numpy|cupy|auto``; see ``backends``.
"""
from .callbacks import Callback, History
from .layers import (AvgPool2D, BatchNorm2D, Conv2D, ConvBlock, Dense, Dropout, FeatureMapNorm, Flatten,
                     GlobalAvgPool2D, Layer, MaxPool2D, ReLU, Residual, Sequential, Softmax)
from .losses import SoftmaxCrossEntropy
from .network import DCNNetwork
from .optimizers import SGD, Adam, AdamW

__version__ = "0.1.0"

__all__ = ["Adam", "AdamW", "AvgPool2D", "BatchNorm2D", "Callback", "Conv2D", "ConvBlock", "DCNNetwork", "Dense", "Dropout",
           "FeatureMapNorm", "Flatten", "GlobalAvgPool2D", "History", "Layer", "MaxPool2D", "ReLU", "Residual", "SGD", "Sequential",
           "Softmax", "SoftmaxCrossEntropy"]
