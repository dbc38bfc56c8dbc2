"""UpSampling2D (torch.nn.Upsample), ZeroPadding2D (torch.nn.ZeroPad2d) and Cropping2D.

The work is the backend's ``upsample2d`` (nearest: a broadcast; bilinear, align_corners=False:
two products with interpolation matrices) and ``pad2d`` (backends/ops/resample.py).
"""
from backends import backend_of

from .base import Layer, check_rank
from .conv import pair


def edges(value, what: str, layer: str) -> tuple:
    """(top, bottom, left, right) from an int, (rows, columns) or ((top, bottom), (left, right)), as Keras."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (tuple, list)) for v in value):
        (top, bottom), (left, right) = pair(value[0], what, layer, 0), pair(value[1], what, layer, 0)
        return (top, bottom, left, right)
    rows, cols = pair(value, what, layer, 0)
    return (rows, rows, cols, cols)


class UpSampling2D(Layer):
    """Each map ``size`` (an int or (sh, sw)) times larger: torch.nn.Upsample(scale_factor=size,
    mode=interpolation, align_corners=False) for ``interpolation`` "nearest" or "bilinear"."""

    def __init__(self, size=2, interpolation: str = "nearest"):
        super().__init__()
        self.size = pair(size, "size", "UpSampling2D", 1)
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"UpSampling2D: interpolation must be 'nearest' or 'bilinear'; got {interpolation!r}")
        self.interpolation = interpolation

    def describe(self) -> str:
        size = self.size[0] if self.size[0] == self.size[1] else self.size
        return f"UpSampling2D({size}, {self.interpolation!r})"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects (channels, height, width) inputs; got {input_shape}")
        c, h, w = input_shape
        return (c, h * self.size[0], w * self.size[1])

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        return backend_of(x).upsample2d(x, self.size, self.interpolation)

    def backprop(self, dy, saved):
        return backend_of(dy).upsample2d_backward(dy, saved) if self.needs_input_grad else None


class ZeroPadding2D(Layer):
    """Rows and columns of zeros around each map: ``padding`` an int, (rows, columns) or
    ((top, bottom), (left, right)), as Keras; torch.nn.ZeroPad2d."""

    def __init__(self, padding=1):
        super().__init__()
        self.padding = padding
        self.pads = edges(padding, "padding", "ZeroPadding2D")

    def describe(self) -> str:
        return f"ZeroPadding2D({self.pads})"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects (channels, height, width) inputs; got {input_shape}")
        c, h, w = input_shape
        top, bottom, left, right = self.pads
        return (c, h + top + bottom, w + left + right)

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        return backend_of(x).pad2d(x, self.pads), ()

    def backprop(self, dy, saved):
        if not self.needs_input_grad:
            return None
        top, bottom, left, right = self.pads
        return dy[:, :, top:dy.shape[2] - bottom, left:dy.shape[3] - right]


class Cropping2D(Layer):
    """Rows and columns cut off each map's edges: ``cropping`` an int, (rows, columns) or
    ((top, bottom), (left, right)), as Keras."""

    def __init__(self, cropping=1):
        super().__init__()
        self.cropping = cropping
        self.crops = edges(cropping, "cropping", "Cropping2D")

    def describe(self) -> str:
        return f"Cropping2D({self.crops})"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects (channels, height, width) inputs; got {input_shape}")
        c, h, w = input_shape
        top, bottom, left, right = self.crops
        if top + bottom >= h or left + right >= w:
            raise ValueError(f"{self.describe()}: crops all of an input {h}x{w}")
        return (c, h - top - bottom, w - left - right)

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        self.output_shape(tuple(x.shape[1:]))
        top, bottom, left, right = self.crops
        return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right], ()

    def backprop(self, dy, saved):
        return backend_of(dy).pad2d(dy, self.crops) if self.needs_input_grad else None
