"""Max pooling (torch.nn.MaxPool2d semantics: floor, first maximum wins).

The work is the backend's ``max_pool2d`` (see backends/ops/pool.py).
"""
from backends import backend_of
from .base import Layer, check_rank


class MaxPool2D(Layer):
    def __init__(self, pool_size: int = 2, stride: int | None = None):
        super().__init__()
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int; got {pool_size!r}")
        self.pool_size = pool_size
        self.stride = pool_size if stride is None else stride
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride must be a positive int; got {stride!r}")

    def describe(self) -> str:
        return f"MaxPool2D({self.pool_size}, stride={self.stride})"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        k, s = self.pool_size, self.stride
        if h < k or w < k:
            raise ValueError(f"{self.describe()}: input {h}x{w} is smaller than the pool")
        return (c, (h - k) // s + 1, (w - k) // s + 1)

    def forward(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        self.output_shape(tuple(x.shape[1:]))
        y, self._saved = backend_of(x).max_pool2d(x, self.pool_size, self.stride)
        return y

    def backward(self, dy):
        return backend_of(dy).max_pool2d_backward(dy, self.saved())
