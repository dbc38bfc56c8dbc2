"""dcnn: a deep convolutional network framework written once for NumPy and CuPy.

The backend is chosen with ``DCNN_BACKEND=numpy|cupy|auto``; see ``backends``.
"""
import sys

from .data import datasets
from .io.loading import load
from .layers import (Add, Average, Concatenate, Input, Multiply, Subtract, AvgPool2D, BatchNorm2D, Conv2D, ConvBlock, Dense, Dropout, FeatureMapNorm, Flatten,
                     GlobalAvgPool2D, Layer, MaxPool2D, ReLU, Residual, Sequential, Softmax)
from .model import presets
from .model.losses import SoftmaxCrossEntropy
from .model.network import DCNNetwork
from .model.optimizers import SGD, Adam, AdamW
from .train.callbacks import (Callback, CosineDecay, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                              ModelCheckpoint, OneCycleLR, StepDecay)

# ``import dcnn.datasets`` and ``from dcnn.presets import get_preset`` keep working: both modules kept
# their public names when they moved into the data and model packages.
sys.modules[__name__ + ".datasets"] = datasets
sys.modules[__name__ + ".presets"] = presets

__version__ = "0.1.0"

__all__ = ["Adam", "AdamW", "Add", "Average", "AvgPool2D", "BatchNorm2D", "Callback", "Concatenate", "Conv2D",
           "ConvBlock", "CosineDecay", "CSVLogger", "datasets", "DCNNetwork", "Dense", "Dropout", "EarlyStopping",
           "FeatureMapNorm", "Flatten", "GlobalAvgPool2D", "History", "Input", "Layer", "LearningRateScheduler",
           "load", "MaxPool2D", "ModelCheckpoint", "Multiply", "OneCycleLR", "presets", "ReLU", "Residual",
           "Sequential", "SGD", "Softmax", "SoftmaxCrossEntropy", "StepDecay", "Subtract"]
