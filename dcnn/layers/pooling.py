"""Max and average pooling (torch.nn.MaxPool2d / AvgPool2d semantics: floor sizes, padding,
for max the first maximum wins) and global average and max pooling.

The work is the backend's ``max_pool2d``, ``avg_pool2d``, ``global_avg_pool2d`` and
``global_max_pool2d`` (see backends/ops/pool.py and resample.py), after ``pad2d`` when padded.
"""
from backends import backend_of
from .base import Layer, check_rank


def _check_pool_args(pool_size, stride, padding, layer):
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"{layer}: pool_size must be a positive int; got {pool_size!r}")
    stride = pool_size if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{layer}: stride must be a positive int; got {stride!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= pool_size // 2:
        raise ValueError(f"{layer}: padding must be an int from 0 to pool_size // 2 = {pool_size // 2} (as in "
                         f"torch); got {padding!r}")
    return pool_size, stride, padding


class MaxPool2D(Layer):
    """torch.nn.MaxPool2d(pool_size, stride, padding): the maximum of each window; ``padding``
    rows and columns of -inf around the maps (at most pool_size // 2)."""

    def __init__(self, pool_size: int = 2, stride: int | None = None, padding: int = 0):
        super().__init__()
        self.pool_size, self.stride, self.padding = _check_pool_args(pool_size, stride, padding, type(self).__name__)
        self.pads = (self.padding,) * 4

    def describe(self) -> str:
        pad = f", padding={self.padding}" if self.padding else ""
        return f"{type(self).__name__}({self.pool_size}, stride={self.stride}{pad})"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects (channels, height, width) inputs; got {input_shape}")
        c, h, w = input_shape
        k, s, p = self.pool_size, self.stride, self.padding
        if h + 2 * p < k or w + 2 * p < k:
            raise ValueError(f"{self.describe()}: input {h}x{w} is smaller than the pool")
        return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    _fill = float("-inf")      # what the padding holds: never a window's maximum

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        self.output_shape(tuple(x.shape[1:]))
        backend = backend_of(x)
        if self.padding:
            x = backend.pad2d(x, self.pads, self._fill)
        return self._pool(backend, x)

    def backprop(self, dy, saved):
        if not self.needs_input_grad:
            return None
        dx = self._unpool(backend_of(dy), dy, saved)
        p = self.padding
        return dx[:, :, p:dx.shape[2] - p, p:dx.shape[3] - p] if p else dx

    def _pool(self, backend, x):
        return backend.max_pool2d(x, self.pool_size, self.stride)

    def _unpool(self, backend, dy, saved):
        return backend.max_pool2d_backward(dy, saved)


class AvgPool2D(MaxPool2D):
    """torch.nn.AvgPool2d(pool_size, stride, padding): the mean of each window, zero padding
    counted (torch's count_include_pad=True)."""

    _fill = 0.0

    def _pool(self, backend, x):
        return backend.avg_pool2d(x, self.pool_size, self.stride)

    def _unpool(self, backend, dy, saved):
        return backend.avg_pool2d_backward(dy, saved)


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


class GlobalMaxPool2D(GlobalAvgPool2D):
    """Each feature map's maximum: (N, C, H, W) -> (N, C), as torch.nn.AdaptiveMaxPool2d(1) then
    Flatten; ``keepdims=True``: (N, C, 1, 1).  The gradient goes to each map's first maximum."""

    def _pool(self, backend, x):
        return backend.global_max_pool2d(x)

    def _unpool(self, backend, dy, saved):
        return backend.global_max_pool2d_backward(dy, saved)
