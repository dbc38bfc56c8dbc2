"""dcnn: a deep convolutional network framework written once for NumPy and CuPy.

The backend is chosen with ``DCNN_BACKEND=numpy|cupy|auto``; see ``backends``.
"""
from .callbacks import (Callback, CosineDecay, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                        ModelCheckpoint, OneCycleLR, StepDecay)
from .layers import (BatchNorm2D, Conv2D, ConvBlock, Dense, Dropout, FeatureMapNorm, Flatten, Layer,
                     MaxPool2D, ReLU, Sequential, Softmax)
from .loading import load
from .losses import SoftmaxCrossEntropy
from .network import DCNNetwork
from .optimizers import SGD, Adam
from . import datasets, presets  # noqa: E402  (dcnn.datasets.load, dcnn.presets.get_preset)

__version__ = "0.1.0"

__all__ = ["Adam", "BatchNorm2D", "CSVLogger", "Callback", "CosineDecay", "EarlyStopping", "LearningRateScheduler",
           "ModelCheckpoint", "OneCycleLR", "StepDecay", "Conv2D", "ConvBlock", "DCNNetwork", "Dense", "Dropout",
           "FeatureMapNorm", "Flatten", "History", "Layer", "MaxPool2D", "ReLU", "SGD", "Sequential",
           "Softmax", "SoftmaxCrossEntropy", "datasets", "load", "presets"]
