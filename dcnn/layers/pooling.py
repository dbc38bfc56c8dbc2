"""Max pooling (torch.nn.MaxPool2d semantics: floor, first maximum wins).

The work is the backend's ``max_pool`` on channels-last memory (the layout the
convolutions produce); the result is handed on as an NCHW view.
"""
from backends import backend_of
from .base import Layer, check_rank


class MaxPool2D(Layer):
    def __init__(self, pool_size: int = 2, stride: int | None = None):
        super().__init__()
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int; got {pool_size!r}")
        self.pool_size = pool_size
        self.stride = pool_size if stride is None else stride
        if not isinstance(self.stride, int) or self.stride < 1:
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
        backend = backend_of(x)
        xp = backend.xp
        y, saved = backend.max_pool(xp.permute_dims(x, (0, 2, 3, 1)), self.pool_size, self.stride)
        self._cache = (backend, saved)
        return xp.permute_dims(y, (0, 3, 1, 2))

    def backward(self, dy):
        backend, saved = self._cache
        xp = backend.xp
        dx = backend.max_pool_backward(xp.permute_dims(dy, (0, 2, 3, 1)), saved, self.pool_size, self.stride)
        return xp.permute_dims(dx, (0, 3, 1, 2))
