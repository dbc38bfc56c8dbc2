"""The Layer protocol: ``forward`` caches what ``backward`` needs.

Parameters and buffers are named as in the equivalent ``torch.nn`` module
(``weight``, ``bias``, ``running_mean``...), so a model's state dict has the
keys and layouts of the equivalent ``torch.nn.Sequential``.
"""
from __future__ import annotations

import numpy as np

from backends import Backend, backend_of


class Layer:
    """Base class.  Subclasses implement ``forward``, ``backward`` and, when they
    own weights, ``build``; shapes exclude the batch axis."""

    def __init__(self):
        self.params: dict = {}       # trainable arrays, torch names
        self.grads: dict = {}        # same keys as params, filled by backward
        self.buffers: dict = {}      # non-trainable state saved with the weights
        self.trainable = True
        self.training = True
        self.needs_input_grad = True  # False for the first layer: skip dx
        self.input_shape: tuple | None = None
        self.built = False
        self._saved = None            # what forward keeps for backward

    # --- building ----------------------------------------------------------
    def build(self, input_shape: tuple, rng: np.random.Generator, backend: Backend) -> None:
        self.input_shape = tuple(input_shape)
        self.built = True

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def __call__(self, x):
        if not self.built:
            self.build(tuple(x.shape[1:]), np.random.default_rng(0), backend_of(x))
        return self.forward(x)

    # --- computing ---------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def saved(self):
        """What the last forward kept for backward; an error if there is none."""
        if self._saved is None:
            raise RuntimeError(f"{self.describe()}.backward() needs a forward() first: call forward "
                               "(in training mode, or before the caches were released) then backward")
        return self._saved

    def release(self) -> None:
        """Drop what forward kept for backward (after inference)."""
        self._saved = None
        for layer in self.sublayers():
            layer.release()

    # --- state -------------------------------------------------------------
    def sublayers(self) -> list["Layer"]:
        return []

    def state(self) -> dict:
        """Parameters then buffers, by torch name, as stored (device arrays)."""
        return {**self.params, **self.buffers}

    def set_state(self, name: str, value) -> None:
        target = self.params if name in self.params else self.buffers
        target[name] = value

    def param_count(self) -> int:
        return int(sum(np.prod(p.shape) for p in self.params.values()))

    def train(self, mode: bool = True) -> None:
        self.training = mode
        for layer in self.sublayers():
            layer.train(mode)

    def describe(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return self.describe()


def check_rank(layer: Layer, x, rank: int, what: str) -> None:
    if x.ndim != rank:
        hint = " (add a Flatten layer before it)" if rank == 2 and x.ndim == 4 else ""
        raise ValueError(f"{layer.describe()} expects {what}, a {rank}-D array; got shape {tuple(x.shape)}{hint}")


def check_channels(layer: Layer, x, expected: int) -> None:
    if x.shape[1] != expected:
        raise ValueError(f"{layer.describe()} was built for {expected} input channels; got {x.shape[1]} "
                         f"(input shape {tuple(x.shape)})")
