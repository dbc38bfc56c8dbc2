"""Merge layers of the functional API: Add, Subtract, Multiply, Average (NumPy broadcasting) and
Concatenate.  Each takes a list of tensors, ``Add()([a, b])``, and has no weights.

Broadcasting is NumPy's and PyTorch's over the non-batch axes, with equal ranks (add a Reshape
to change one); backward sums the gradient over the axes an input was broadcast along.
"""
from __future__ import annotations

from backends import backend_of

from .base import Layer


def unbroadcast(xp, g, shape: tuple):
    """``g`` summed down to ``shape`` (an input's shape, batch axis included) over broadcast axes."""
    if tuple(g.shape) == tuple(shape):
        return g
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    return xp.sum(g, axis=axes, keepdims=True)


class _Merge(Layer):
    takes_many = True
    arity: int | None = None          # the exact number of inputs, where there is one

    def describe(self) -> str:
        return f"{type(self).__name__}()"

    def _check_count(self, shapes) -> None:
        if not isinstance(shapes, (list, tuple)) or not all(isinstance(s, tuple) for s in shapes):
            raise ValueError(f"{type(self).__name__} takes a list of inputs; got one of shape {shapes}")
        wanted = self.arity or 2
        if len(shapes) < wanted or (self.arity is not None and len(shapes) != self.arity):
            count = f"exactly {self.arity}" if self.arity is not None else "two or more"
            raise ValueError(f"{type(self).__name__} takes {count} inputs; got {len(shapes)}")

    def output_shape(self, shapes):
        self._check_count(shapes)
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"{type(self).__name__} needs inputs of one rank (add a Reshape); got shapes "
                             + ", ".join(str(("N",) + s).replace("'", "") for s in shapes))
        out = []
        for sizes in zip(*shapes):
            big = {n for n in sizes if n != 1}
            if len(big) > 1:
                raise ValueError(f"{type(self).__name__}: shapes "
                                 + ", ".join(str(("N",) + s).replace("'", "") for s in shapes)
                                 + " do not broadcast (each axis must match or be 1)")
            out.append(big.pop() if big else 1)
        return tuple(out)

    def _input_grads(self, dy, grads):
        return grads if self.needs_input_grad else [None] * len(grads)


class Add(_Merge):
    """The sum of its inputs: ``Add()([x, shortcut])``."""

    def apply(self, xs):
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        return y, [tuple(x.shape) for x in xs]

    def backprop(self, dy, shapes):
        xp = backend_of(dy).xp
        return self._input_grads(dy, [unbroadcast(xp, dy, s) for s in shapes])


class Subtract(_Merge):
    """``a - b`` for exactly two inputs."""
    arity = 2

    def apply(self, xs):
        return xs[0] - xs[1], [tuple(x.shape) for x in xs]

    def backprop(self, dy, shapes):
        xp = backend_of(dy).xp
        return self._input_grads(dy, [unbroadcast(xp, dy, shapes[0]), -unbroadcast(xp, dy, shapes[1])])


class Average(_Merge):
    """The mean of its inputs."""

    def apply(self, xs):
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        return y * (1.0 / len(xs)), [tuple(x.shape) for x in xs]

    def backprop(self, dy, shapes):
        xp = backend_of(dy).xp
        share = dy * (1.0 / len(shapes))
        return self._input_grads(dy, [unbroadcast(xp, share, s) for s in shapes])


class Multiply(_Merge):
    """The elementwise product, e.g. squeeze-and-excitation: ``Multiply()([maps, gates])`` with
    gates of shape (N, C, 1, 1)."""

    def apply(self, xs):
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y = y * x
        return y, list(xs)

    def backprop(self, dy, xs):
        xp = backend_of(dy).xp
        if not self.needs_input_grad:
            return [None] * len(xs)
        grads = []
        for i, x in enumerate(xs):
            others = [o for j, o in enumerate(xs) if j != i]
            g = dy * others[0]
            for o in others[1:]:
                g = g * o
            grads.append(unbroadcast(xp, g, tuple(x.shape)))
        return grads


class Concatenate(Layer):
    """Inputs joined along ``axis`` (1, the channels, by default; any axis but the batch axis),
    as ``torch.cat(dim=axis)``.  The other axes must match."""
    takes_many = True

    def __init__(self, axis: int = 1):
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ValueError(f"Concatenate's axis is an int other than 0 (the batch axis); got {axis!r}")
        self.axis = axis

    def describe(self) -> str:
        return f"Concatenate(axis={self.axis})"

    def _axis(self, rank: int) -> int:
        """The axis within a shape that excludes the batch axis."""
        axis = self.axis if self.axis > 0 else rank + 1 + self.axis
        if not 1 <= axis <= rank:
            raise ValueError(f"Concatenate(axis={self.axis}) does not fit inputs of rank {rank + 1}")
        return axis - 1

    def output_shape(self, shapes):
        if not isinstance(shapes, (list, tuple)) or len(shapes) < 2 or not all(isinstance(s, tuple) for s in shapes):
            raise ValueError(f"Concatenate takes a list of two or more inputs; got {shapes}")
        fmt = ", ".join(str(("N",) + s).replace("'", "") for s in shapes)
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"Concatenate needs inputs of one rank; got {fmt}")
        axis = self._axis(len(shapes[0]))
        rest = {s[:axis] + s[axis + 1:] for s in shapes}
        if len(rest) != 1:
            raise ValueError(f"Concatenate(axis={self.axis}): shapes {fmt} differ off the joined axis")
        return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]

    def apply(self, xs):
        axis = self._axis(xs[0].ndim - 1) + 1
        return backend_of(xs[0]).concat(list(xs), axis), (axis, [int(x.shape[axis]) for x in xs])

    def backprop(self, dy, saved):
        axis, sizes = saved
        if not self.needs_input_grad:
            return [None] * len(sizes)
        grads, start = [], 0
        for size in sizes:
            index = (slice(None),) * axis + (slice(start, start + size),)
            grads.append(dy[index + (...,)])
            start += size
        return grads


__all__ = ["Add", "Average", "Concatenate", "Multiply", "Subtract", "unbroadcast"]
