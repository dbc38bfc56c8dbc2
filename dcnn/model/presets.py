"""Model presets for ``dcnn train --model NAME``: an architecture plus the training recipe that suits it.

- ``convnet`` (the default): the strongest; two conv blocks with pooling and BatchNorm, dense 256,
  dropout, Adam with a one-cycle learning-rate schedule over 4 epochs.  >= 0.92 on Fashion-MNIST in under 5 minutes on 2 CPU cores.
- ``resnet``: a small residual network (stem conv 32 + max-pool, a basic block of 32 maps at
  14x14, a strided projection block and an identity block of 64 maps at 7x7, global average
  pooling), AdamW with a one-cycle schedule over 22 epochs, label smoothing 0.1, random flips and
  1-pixel shifts.  About 2.4x the convnet's time per step, so about 12 minutes on 2 quiet CPU cores.
- ``mobilenet``: MobileNetV2's pattern for 28x28 (or 32x32) images: a 3x3 stem of 16 maps, inverted
  residual blocks (1x1 expansion, depthwise 3x3, ReLU6, linear 1x1 bottleneck, identity skips) of 24
  maps at 14x14 and 48 at 7x7, a 1x1 head of 192, global average pooling; AdamW, one-cycle, label
  smoothing, flips and 1-pixel shifts over 10 epochs.
- ``lenet``: LeNet-5's shape (5x5 convolutions, 6 and 16 maps, dense 120 and 84).
- ``seed``: the seed notebook's network: the two hand-made edge filters (vertical and
  horizontal, frozen) in a ConvBlock, a second ConvBlock, dense 128, dense 10.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..layers import (BatchNorm2D, Conv2D, ConvBlock, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU,
                       basic_block)
from ..layers.blocks import inverted_residual, relu6
from .network import DCNNetwork

VERTICAL_EDGE = np.array([[1, 0, -1]] * 3, dtype=np.float32)
HORIZONTAL_EDGE = VERTICAL_EDGE.T.copy()


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    layers: Callable[[tuple, int], list]     # (input_shape, classes) -> layers
    optimizer: str = "adam"
    lr: float = 1e-3
    optimizer_options: dict = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 128
    schedule: str = "onecycle"               # or "constant"
    augment: bool = False
    augment_shift: int = 2                   # pixels of random shift when augmenting (0: flips only)
    label_smoothing: float = 0.0             # torch.nn.CrossEntropyLoss's meaning

    def build(self, input_shape, classes: int, *, seed: int = 0, backend=None) -> DCNNetwork:
        net = DCNNetwork(self.layers(tuple(input_shape), classes), input_shape=input_shape, seed=seed,
                         backend=backend)
        return net.build()


def _convnet(input_shape, classes):
    # Pooling before BatchNorm and ReLU gives the same function class (max-pool commutes with
    # per-channel monotone maps when gamma > 0) and normalises 4x fewer values: much faster on the CPU.
    layers = []
    for width in (32, 64):
        layers += [Conv2D(width, 3, padding=1), MaxPool2D(2), BatchNorm2D(), ReLU()]
    return layers + [Flatten(), Dense(256), ReLU(), Dropout(0.25), Dense(classes)]


def _resnet(input_shape, classes):
    # The stem pools before its BatchNorm, as convnet does; the residual stages run at 14x14
    # and 7x7 only, where 2 CPU cores can afford them.
    return [Conv2D(32, 3, padding=1, use_bias=False), MaxPool2D(2), BatchNorm2D(), ReLU(),
            *basic_block(32, 1, in_filters=32),
            *basic_block(64, 2, in_filters=32),
            *basic_block(64, 1, in_filters=64),
            GlobalAvgPool2D(), Dense(classes)]


# (expansion, output channels, blocks, stride of the first) per stage, after a 3x3 stem at full size.
MOBILENET_STAGES = ((1, 24, 1, 2), (4, 24, 1, 1), (4, 48, 3, 2))
MOBILENET_STEM, MOBILENET_HEAD = 16, 192


def _mobilenet(input_shape, classes):
    # MobileNetV2's pattern scaled to 28x28 (or 32x32) images: a 3x3 stem at full size, a
    # non-expanding block whose depthwise convolution halves the size, inverted residual blocks
    # at 1/2 and 1/4 size (expansion 4), a 1x1 head, global average pooling.
    layers = [Conv2D(MOBILENET_STEM, 3, padding=1, use_bias=False), BatchNorm2D(), relu6()]
    channels = MOBILENET_STEM
    for expansion, width, blocks, stride in MOBILENET_STAGES:
        for i in range(blocks):
            layers += inverted_residual(channels, width, stride if i == 0 else 1, expansion)
            channels = width
    return layers + [Conv2D(MOBILENET_HEAD, 1, use_bias=False), BatchNorm2D(), relu6(), GlobalAvgPool2D(),
                     Dropout(0.2), Dense(classes)]


def _lenet(input_shape, classes):
    return [Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2),
            Conv2D(16, 5), ReLU(), MaxPool2D(2),
            Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(classes)]


def _seed(input_shape, classes):
    edges = np.stack([VERTICAL_EDGE, HORIZONTAL_EDGE])
    return [ConvBlock(2, kernel=edges, trainable=False, padding=1, max_activation=1.0),
            ConvBlock(16, 3, padding=1, max_activation=6.0),
            Flatten(), Dense(128), ReLU(), Dense(classes)]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("convnet", "2 conv blocks (32, 64 maps; max-pool, BatchNorm, ReLU), dense 256, dropout; "
                      "Adam with a one-cycle schedule (the default, strongest)",
           _convnet, optimizer="adam", lr=3e-3, epochs=4, batch_size=128),
    Preset("resnet", "a small ResNet: stem conv 32 + max-pool, basic blocks 32 (14x14), 64 and 64 (7x7), "
                     "global average pool; AdamW, one-cycle, label smoothing 0.1, flips and 1-pixel shifts",
           _resnet, optimizer="adamw", lr=3e-3, optimizer_options={"weight_decay": 0.05}, epochs=22,
           batch_size=128, label_smoothing=0.1, augment=True, augment_shift=1),
    Preset("mobilenet", "MobileNetV2-style: 3x3 stem 16, inverted residual blocks (depthwise 3x3, ReLU6, "
                        "linear bottlenecks) 24 (14x14) and 48 (7x7), 1x1 head 192, global average pool; "
                        "AdamW, one-cycle, label smoothing 0.1, flips and 1-pixel shifts",
           _mobilenet, optimizer="adamw", lr=4e-3, optimizer_options={"weight_decay": 0.01}, epochs=10,
           batch_size=128, label_smoothing=0.1, augment=True, augment_shift=1),
    Preset("lenet", "LeNet-5 shape: 5x5 conv 6 and 16 maps with max-pool, dense 120, 84",
           _lenet, optimizer="adam", lr=2e-3, epochs=3, batch_size=128),
    Preset("seed", "the seed notebook's net: frozen edge-filter ConvBlock, ConvBlock(16), dense 128",
           _seed, optimizer="sgd", lr=0.05, optimizer_options={"momentum": 0.9}, epochs=3, batch_size=64),
)}
DEFAULT = "convnet"


def get_preset(name: str) -> Preset:
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid ones are: {', '.join(PRESETS)}")
    return PRESETS[key]
