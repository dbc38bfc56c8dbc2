from .activations import ReLU, Softmax
from .base import Layer
from .container import ConvBlock, Residual, Sequential, basic_block, projection
from .conv import Conv2D
from .core import Dense, Dropout, Flatten
from .normalization import BatchNorm2D, FeatureMapNorm
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

__all__ = ["AvgPool2D", "BatchNorm2D", "Conv2D", "ConvBlock", "Dense", "Dropout", "FeatureMapNorm", "Flatten",
           "GlobalAvgPool2D", "Layer", "MaxPool2D", "ReLU", "Residual", "Sequential", "Softmax", "basic_block",
           "projection"]
