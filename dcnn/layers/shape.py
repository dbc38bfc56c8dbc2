"""Reshape (each sample to ``target_shape``) and Identity."""
import numpy as np

from backends import backend_of

from .base import Layer


class Reshape(Layer):
    """Each sample to ``target_shape`` (the batch axis stays; one entry may be -1), in C order as
    torch's ``x.reshape(N, *target_shape)``."""

    def __init__(self, target_shape):
        super().__init__()
        shape = tuple(target_shape) if isinstance(target_shape, (tuple, list)) else (target_shape,)
        if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or (d < 1 and d != -1)
                            for d in shape) or shape.count(-1) > 1:
            raise ValueError(f"Reshape: target_shape must be positive ints, at most one of them -1; "
                             f"got {target_shape!r}")
        self.target_shape = tuple(int(d) for d in shape)

    def describe(self) -> str:
        return f"Reshape({self.target_shape})"

    def output_shape(self, input_shape):
        size = int(np.prod(input_shape))
        known = int(np.prod([d for d in self.target_shape if d != -1]))
        if (-1 in self.target_shape and size % known) or (-1 not in self.target_shape and size != known):
            raise ValueError(f"{self.describe()}: cannot reshape samples of shape {tuple(input_shape)} "
                             f"({size} values) to {self.target_shape}")
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def apply(self, x):
        shape = self.output_shape(tuple(x.shape[1:]))
        return backend_of(x).xp.reshape(x, (x.shape[0],) + shape), tuple(x.shape)

    def backprop(self, dy, shape):
        return backend_of(dy).xp.reshape(dy, shape) if self.needs_input_grad else None


class Identity(Layer):
    """y = x (torch.nn.Identity): a placeholder, e.g. a skipped branch."""

    def apply(self, x):
        return x, ()

    def backprop(self, dy, saved):
        return dy if self.needs_input_grad else None
