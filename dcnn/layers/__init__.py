from .activations import ReLU, Softmax
from .base import Layer
from .container import ConvBlock, Sequential
from .conv import Conv2D
from .core import Dense, Dropout, Flatten
from .normalization import BatchNorm2D, FeatureMapNorm
from .pooling import MaxPool2D

__all__ = ["BatchNorm2D", "Conv2D", "ConvBlock", "Dense", "Dropout", "FeatureMapNorm", "Flatten",
           "Layer", "MaxPool2D", "ReLU", "Sequential", "Softmax"]
