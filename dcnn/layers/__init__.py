from .activations import ELU, GELU, HardSigmoid, HardSwish, LeakyReLU, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Tanh
from .base import Layer
from .blocks import inverted_residual, mbconv, squeeze_excite
from .container import ConvBlock, Residual, Sequential, basic_block, projection
from .conv import Conv2D, DepthwiseConv2D
from .conv_variants import Conv2DTranspose, SeparableConv2D
from .core import Dense, Dropout, Dropout2D, Flatten
from .graph import Graph
from .merge import Add, Average, Concatenate, Multiply, Subtract
from .normalization import BatchNorm1D, BatchNorm2D, FeatureMapNorm, GroupNorm, LayerNorm
from .pooling import AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D
from .resampling import Cropping2D, UpSampling2D, ZeroPadding2D
from .shape import Identity, Reshape
from .symbolic import Input, SymbolicTensor

__all__ = ["Add", "Average", "AvgPool2D", "basic_block", "BatchNorm1D", "BatchNorm2D", "Concatenate", "Conv2D",
           "Conv2DTranspose", "ConvBlock", "Cropping2D", "Dense", "DepthwiseConv2D", "Dropout", "Dropout2D", "ELU",
           "FeatureMapNorm", "Flatten", "GELU", "GlobalAvgPool2D", "GlobalMaxPool2D", "Graph", "GroupNorm",
           "HardSigmoid", "HardSwish", "Identity", "Input", "inverted_residual", "Layer", "LayerNorm", "LeakyReLU",
           "MaxPool2D", "mbconv", "Multiply", "projection", "ReLU", "ReLU6", "Reshape", "Residual", "SeparableConv2D",
           "Sequential", "Sigmoid", "SiLU", "Softmax", "squeeze_excite", "Subtract", "SymbolicTensor", "Tanh",
           "UpSampling2D", "ZeroPadding2D"]
