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
  smoothing, flips and 1-pixel shifts over 15 epochs (0.9286 in one measured run; see the README).
- ``lenet``: LeNet-5's shape (5x5 convolutions, 6 and 16 maps, dense 120 and 84).
- ``seed``: the seed notebook's network: the two hand-made edge filters (vertical and
  horizontal, frozen) in a ConvBlock, a second ConvBlock, dense 128, dense 10.

Dense (per-pixel) presets, in ``DENSE_PRESETS`` (``PRESETS`` holds the classifiers, whose outputs
are (N, classes); ``get_preset`` finds both):

- ``unet``: a U-Net for fashion-mosaic (56x56, 11 classes): two conv-BN-ReLU layers per level, 16,
  32, 64 and 128 maps at 56, 28, 14 and 7 pixels, 2x2 stride-2 transposed convolutions up,
  concatenated skips, a 1x1 convolution to per-pixel class scores (N, classes, H, W); Adam 3e-3,
  one-cycle, batch 32, 4 epochs, scored by pixel accuracy and mean IoU (scripts/unet_torch.py is
  its PyTorch twin).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..layers import (BatchNorm2D, Concatenate, Conv2D, Conv2DTranspose, ConvBlock, Dense, Dropout, Flatten,
                       GlobalAvgPool2D, Input, MaxPool2D, ReLU, UpSampling2D, basic_block)
from ..layers.blocks import inverted_residual, relu6
from .network import DCNNetwork

VERTICAL_EDGE = np.array([[1, 0, -1]] * 3, dtype=np.float32)
HORIZONTAL_EDGE = VERTICAL_EDGE.T.copy()


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    layers: Callable[[tuple, int], list]     # (input_shape, classes) -> layers, or (inputs, outputs) if graph
    optimizer: str = "adam"
    lr: float = 1e-3
    optimizer_options: dict = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 128
    schedule: str = "onecycle"               # or "constant"
    augment: bool = False
    augment_shift: int = 2                   # pixels of random shift when augmenting (0: flips only)
    label_smoothing: float = 0.0             # torch.nn.CrossEntropyLoss's meaning
    graph: bool = False                      # ``layers`` gives a graph's (inputs, outputs) (the functional API)
    loss: str = "cross_entropy"              # a dcnn.model.losses name
    metrics: tuple = ("accuracy",)           # dcnn.model.metrics names, reported each epoch
    monitor: str = "val_accuracy"            # what picks the best epoch
    dataset: str | None = None               # the dataset the recipe was made for (None: any classifier's)
    task: str = "classification"             # or "segmentation": a label per pixel, trained on masks

    def build(self, input_shape, classes: int, *, seed: int = 0, backend=None) -> DCNNetwork:
        made = self.layers(tuple(input_shape), classes)
        if self.graph:
            inputs, outputs = made
            net = DCNNetwork(inputs=inputs, outputs=outputs, input_shape=input_shape, seed=seed, backend=backend)
        else:
            net = DCNNetwork(made, input_shape=input_shape, seed=seed, backend=backend)
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


def conv_bn_relu(x, width: int, layers: int = 2):
    """``layers`` times a 3x3 convolution (padding 1, no bias: the BatchNorm has one), BatchNorm, ReLU."""
    for _ in range(layers):
        x = ReLU()(BatchNorm2D()(Conv2D(width, 3, padding=1, use_bias=False)(x)))
    return x


def unet(input_shape, classes: int, width: int = 16, depth: int = 3, up: str = "transpose"):
    """A U-Net's (inputs, outputs): ``depth`` times conv_bn_relu then a 2x2 max-pool down (widths
    ``width * 2**level``), a conv_bn_relu at the bottom, then per level up a 2x2 stride-2 transposed
    convolution (``up="upsample"``: nearest 2x upsampling and a 3x3 convolution) to the skip's
    width, the skip and the upsampled maps concatenated (skip first, as torch.cat([skip, up])),
    conv_bn_relu; a 1x1 convolution to ``classes`` maps.  An odd size is floored by the pool and
    given back by the transposed convolution's output_padding, so any size >= 2**depth fits."""
    if up not in ("transpose", "upsample"):
        raise ValueError(f"unet's up is 'transpose' or 'upsample'; got {up!r}")
    if min(input_shape[1:]) < 2 ** depth:
        raise ValueError(f"a unet of depth {depth} needs images of at least {2 ** depth} pixels; got {input_shape}")
    inputs = x = Input(input_shape)
    skips = []
    for level in range(depth + 1):
        x = conv_bn_relu(x if level == 0 else MaxPool2D(2)(x), width * 2 ** level)
        skips.append(x)
    skips.pop()
    for level in reversed(range(depth)):
        skip = skips.pop()
        if up == "transpose":
            extra = tuple(s - 2 * n for s, n in zip(skip.shape[1:], x.shape[1:]))   # 0, or 1 for an odd size
            x = Conv2DTranspose(width * 2 ** level, 2, stride=2, output_padding=extra)(x)
        else:
            if skip.shape[1:] != tuple(2 * n for n in x.shape[1:]):
                raise ValueError(f"unet(up='upsample') needs sizes divisible by {2 ** depth}; got {input_shape}")
            x = Conv2D(width * 2 ** level, 3, padding=1)(UpSampling2D(2)(x))
        x = conv_bn_relu(Concatenate()([skip, x]), width * 2 ** level)
    return inputs, Conv2D(classes, 1)(x)


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
           _mobilenet, optimizer="adamw", lr=4e-3, optimizer_options={"weight_decay": 0.01}, epochs=15,
           batch_size=128, label_smoothing=0.1, augment=True, augment_shift=1),
    Preset("lenet", "LeNet-5 shape: 5x5 conv 6 and 16 maps with max-pool, dense 120, 84",
           _lenet, optimizer="adam", lr=2e-3, epochs=3, batch_size=128),
    Preset("seed", "the seed notebook's net: frozen edge-filter ConvBlock, ConvBlock(16), dense 128",
           _seed, optimizer="sgd", lr=0.05, optimizer_options={"momentum": 0.9}, epochs=3, batch_size=64),
)}
# Per-pixel models (outputs (N, classes, H, W)), apart from the classifiers that PRESETS promises.
DENSE_PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("unet", "a U-Net for fashion-mosaic: conv-BN-ReLU pairs of 16, 32, 64, 128 maps, 2x2 max-pools, "
                   "stride-2 transposed convolutions up, concatenated skips, 1x1 to per-pixel classes; "
                   "Adam, one-cycle, batch 32, pixel accuracy and mean IoU",
           unet, graph=True, optimizer="adam", lr=3e-3, epochs=4, batch_size=32, metrics=("pixel_accuracy", "miou"),
           monitor="val_miou", dataset="fashion-mosaic", task="segmentation"),
)}
DEFAULT = "convnet"


def all_presets() -> dict[str, Preset]:
    """Every preset by name: the classifiers, then the dense ones (for listings such as ``dcnn info``)."""
    return {**PRESETS, **DENSE_PRESETS}


def get_preset(name: str) -> Preset:
    key = str(name).strip().lower()
    found = all_presets().get(key)
    if found is None:
        raise ValueError(f"unknown model preset {name!r}; valid ones are: {', '.join(all_presets())}")
    return found
