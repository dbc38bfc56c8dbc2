"""dcnn: a deep convolutional network framework written once for NumPy and CuPy.

The backend is chosen with ``DCNN_BACKEND=numpy|cupy|auto``; see ``backends``.
"""
import sys

from .data import datasets
from .io.loading import load
from .layers import (Add, Average, AvgPool2D, BatchNorm1D, BatchNorm2D, Concatenate, Conv2D, Conv2DTranspose,
                     ConvBlock, Cropping2D, Dense, DepthwiseConv2D, Dropout, Dropout2D, ELU, FeatureMapNorm,
                     Flatten, GELU, GlobalAvgPool2D, GlobalMaxPool2D, GroupNorm, HardSigmoid, HardSwish, Identity,
                     Input, Layer, LayerNorm, LeakyReLU, MaxPool2D, Multiply, ReLU, ReLU6, Reshape, Residual,
                     SeparableConv2D, Sequential, Sigmoid, SiLU, Softmax, Subtract, Tanh, UpSampling2D,
                     ZeroPadding2D)
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

__all__ = ["Adam", "AdamW", "Add", "Average", "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Callback", "Concatenate",
           "Conv2D", "Conv2DTranspose", "ConvBlock", "CosineDecay", "Cropping2D", "CSVLogger", "datasets",
           "DCNNetwork", "Dense", "DepthwiseConv2D", "Dropout", "Dropout2D", "EarlyStopping", "ELU",
           "FeatureMapNorm", "Flatten", "GELU", "GlobalAvgPool2D", "GlobalMaxPool2D", "GroupNorm", "HardSigmoid",
           "HardSwish", "History", "Identity", "Input", "Layer", "LayerNorm", "LeakyReLU", "LearningRateScheduler",
           "load", "MaxPool2D", "ModelCheckpoint", "Multiply", "OneCycleLR", "presets", "ReLU", "ReLU6", "Reshape",
           "Residual", "SeparableConv2D", "Sequential", "SGD", "Sigmoid", "SiLU", "Softmax", "SoftmaxCrossEntropy",
           "StepDecay", "Subtract", "Tanh", "UpSampling2D", "ZeroPadding2D"]
