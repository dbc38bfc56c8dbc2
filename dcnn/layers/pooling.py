"""Max and average pooling (torch.nn.MaxPool2d / AvgPool2d semantics: floor sizes,
for max the first maximum wins) and global average pooling.

The work is the backend's ``max_pool2d``, ``avg_pool2d`` and ``global_avg_pool2d``
(see backends/ops/pool.py).
"""
from backends import backend_of
from .base import Layer, check_rank


def _check_pool_args(pool_size, stride):
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"pool_size must be a positive int; got {pool_size!r}")
    stride = pool_size if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int; got {stride!r}")
    return pool_size, stride


class MaxPool2D(Layer):
    def __init__(self, pool_size: int = 2, stride: int | None = None):
        super().__init__()
        self.pool_size, self.stride = _check_pool_args(pool_size, stride)

    def describe(self) -> str:
        return f"MaxPool2D({self.pool_size}, stride={self.stride})"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        k, s = self.pool_size, self.stride
        if h < k or w < k:
            raise ValueError(f"{self.describe()}: input {h}x{w} is smaller than the pool")
        return (c, (h - k) // s + 1, (w - k) // s + 1)

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        self.output_shape(tuple(x.shape[1:]))
        return backend_of(x).max_pool2d(x, self.pool_size, self.stride)

    def backprop(self, dy, saved):
        return backend_of(dy).max_pool2d_backward(dy, saved)


class AvgPool2D(MaxPool2D):
    """torch.nn.AvgPool2d(pool_size, stride): the mean of each window (no padding)."""

    def describe(self) -> str:
        return f"AvgPool2D({self.pool_size}, stride={self.stride})"

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        self.output_shape(tuple(x.shape[1:]))
        return backend_of(x).avg_pool2d(x, self.pool_size, self.stride)

    def backprop(self, dy, saved):
        return backend_of(dy).avg_pool2d_backward(dy, saved)


class GlobalAvgPool2D(Layer):
    """Each feature map's mean: (N, C, H, W) -> (N, C), as torch.nn.AdaptiveAvgPool2d(1)
    followed by torch.nn.Flatten (no Flatten needed before a Dense); ``keepdims=True``
    keeps the map axes: (N, C, 1, 1), as torch.nn.AdaptiveAvgPool2d(1) alone (for a
    squeeze-and-excitation gate multiplied back onto the maps)."""

    def __init__(self, keepdims: bool = False):
        super().__init__()
        if not isinstance(keepdims, bool):
            raise ValueError(f"{type(self).__name__}: keepdims must be True or False; got {keepdims!r}")
        self.keepdims = keepdims

    def describe(self) -> str:
        return f"{type(self).__name__}({'keepdims=True' if self.keepdims else ''})"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} expects (channels, height, width) inputs; got {input_shape}")
        return (input_shape[0], 1, 1) if self.keepdims else (input_shape[0],)

    def _pool(self, backend, x):
        return backend.global_avg_pool2d(x)

    def _unpool(self, backend, dy, saved):
        return backend.global_avg_pool2d_backward(dy, saved)

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        backend = backend_of(x)
        y, saved = self._pool(backend, x)
        if self.keepdims:
            y = backend.xp.reshape(y, (x.shape[0], x.shape[1], 1, 1))
        return y, saved

    def backprop(self, dy, saved):
        backend = backend_of(dy)
        if self.keepdims:
            dy = backend.xp.reshape(dy, tuple(dy.shape[:2]))
        return self._unpool(backend, dy, saved)
