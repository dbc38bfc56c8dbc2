from .activations import ReLU, Softmax
from .base import Layer
from .container import ConvBlock, Residual, Sequential, basic_block, projection
from .conv import Conv2D
from .core import Dense, Dropout, Flatten
from .graph import Graph
from .merge import Add, Average, Concatenate, Multiply, Subtract
from .normalization import BatchNorm2D, FeatureMapNorm
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .symbolic import Input, SymbolicTensor

__all__ = ["Add", "Average", "AvgPool2D", "basic_block", "BatchNorm2D", "Concatenate", "Conv2D", "ConvBlock",
           "Dense", "Dropout", "FeatureMapNorm", "Flatten", "GlobalAvgPool2D", "Graph", "Input", "Layer",
           "MaxPool2D", "Multiply", "projection", "ReLU", "Residual", "Sequential", "Softmax", "Subtract",
           "SymbolicTensor"]
