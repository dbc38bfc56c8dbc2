"""dcnn: a deep convolutional network framework written once for NumPy and CuPy.

The backend is chosen with ``DCNN_BACKEND=numpy|cupy|auto``; see ``backends``.
"""
from .callbacks import (Callback, CosineDecay, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                        ModelCheckpoint, OneCycleLR, StepDecay)
from .layers import (AvgPool2D, BatchNorm2D, Conv2D, ConvBlock, Dense, Dropout, FeatureMapNorm, Flatten,
                     GlobalAvgPool2D, Layer, MaxPool2D, ReLU, Residual, Sequential, Softmax)
from .loading import load
from .losses import SoftmaxCrossEntropy
from .network import DCNNetwork
from .optimizers import SGD, Adam, AdamW
from . import datasets, presets  # noqa: E402  (dcnn.datasets.load, dcnn.presets.get_preset)

__version__ = "0.1.0"

__all__ = ["Adam", "AdamW", "AvgPool2D", "BatchNorm2D", "CSVLogger", "Callback", "CosineDecay", "EarlyStopping",
           "LearningRateScheduler", "ModelCheckpoint", "OneCycleLR", "StepDecay", "Conv2D", "ConvBlock",
           "DCNNetwork", "Dense", "Dropout", "FeatureMapNorm", "Flatten", "GlobalAvgPool2D", "History", "Layer",
           "MaxPool2D", "ReLU", "Residual", "SGD", "Sequential", "Softmax", "SoftmaxCrossEntropy", "datasets",
           "load", "presets"]
