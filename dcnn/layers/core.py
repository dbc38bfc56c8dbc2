"""Flatten, Dense, Dropout and Dropout2D."""
import numpy as np

from backends import backend_of

from .base import Layer, check_rank
from .initializers import initial_bias, initial_weight


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order, as torch.nn.Flatten."""

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def apply(self, x):
        xp = backend_of(x).xp
        return xp.reshape(x, (x.shape[0], -1)), tuple(x.shape)

    def backprop(self, dy, shape):
        return backend_of(dy).xp.reshape(dy, shape)


class Dense(Layer):
    """torch.nn.Linear: y = x @ W.T + b with W of shape (units, in_features).  The seed's FullyConnect."""

    def __init__(self, units: int, *, use_bias: bool = True, init: str = "glorot"):
        super().__init__()
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive int; got {units!r}")
        self.units = int(units)
        self.use_bias = use_bias
        self.init = init

    def describe(self) -> str:
        return f"Dense({self.units})"

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.describe()} expects flat (features,) inputs; got {input_shape} "
                             "(add a Flatten layer before it)")
        return (self.units,)

    def build(self, input_shape, rng, backend):
        self.output_shape(input_shape)
        fan_in = input_shape[0]
        w = initial_weight(self.init, rng, (self.units, fan_in), fan_in, self.units)
        self.params["weight"] = backend.from_numpy(w)
        if self.use_bias:
            self.params["bias"] = backend.from_numpy(initial_bias(self.init, rng, self.units, fan_in))
        super().build(input_shape, rng, backend)

    def apply(self, x):
        check_rank(self, x, 2, "(N, features) inputs")
        w = self.params["weight"]
        if x.shape[1] != w.shape[1]:
            raise ValueError(f"{self.describe()} was built for {w.shape[1]} input features; got {x.shape[1]}")
        backend = backend_of(x)
        y = backend.matmul_rows(x, backend.xp.matrix_transpose(w))
        if self.use_bias:
            y += self.params["bias"]
        return y, x

    def backprop(self, dy, x):
        backend = backend_of(dy)
        xp = backend.xp
        if self.trainable:
            self.add_grad("weight", backend.contract(xp.matrix_transpose(dy), x))
            if self.use_bias:
                self.add_grad("bias", xp.sum(dy, axis=0))
        if not self.needs_input_grad:
            return None
        return backend.matmul_rows(dy, self.params["weight"])


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of activations in training and rescales the rest (inverted dropout)."""

    def __init__(self, rate: float = 0.5):
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1); got {rate!r}")
        self.rate = float(rate)
        self.generator = None

    def describe(self) -> str:
        return f"Dropout({self.rate:g})"

    def build(self, input_shape, rng, backend):
        # Masks are drawn on the device; its stream is seeded from the model's seed.
        self.generator = backend.random_generator(int(rng.integers(2**63)))
        super().build(input_shape, rng, backend)

    def move_to(self, backend, move, seed: int) -> None:
        super().move_to(backend, move, seed)
        if self.generator is not None:   # a stream of the new device, seeded afresh
            self.generator = backend.random_generator(seed)

    def apply(self, x):
        if not self.training or self.rate == 0:
            return x, (None, False)
        y, mask = backend_of(x).dropout(x, self.rate, self.generator)
        return y, (mask, True)

    def backprop(self, dy, saved):
        mask, dropped = saved
        return backend_of(dy).dropout_backward(dy, mask) if dropped else dy


class Dropout2D(Dropout):
    """Zeroes whole channels (each sample's each map with probability ``rate``) in training and
    rescales the rest: torch.nn.Dropout2d.  Its masks come from a device stream as Dropout's."""

    def describe(self) -> str:
        return f"Dropout2D({self.rate:g})"

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        if not self.training or self.rate == 0:
            return x, (None, False)
        y, mask = backend_of(x).dropout2d(x, self.rate, self.generator)
        return y, (mask, True)
