"""The Layer protocol: ``forward`` caches what ``backward`` needs.

Parameters and buffers are named as in the equivalent ``torch.nn`` module
(``weight``, ``bias``, ``running_mean``...), so a model's state dict has the
keys and layouts of the equivalent ``torch.nn.Sequential``.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from backends import Backend, backend_of


# Every Layer subclass by class name, for rebuilding a saved model from its spec (dcnn.spec).
LAYER_CLASSES: dict[str, type] = {}


class Layer:
    """Base class.  Subclasses implement ``forward``, ``backward`` and, when they
    own weights, ``build``; shapes exclude the batch axis.

    Each subclass's constructor arguments are kept (``init_args()``), so that any model,
    built-in layers or yours, can be written as a JSON spec and built again (dcnn.spec).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        known = LAYER_CLASSES.get(cls.__name__)
        if known is None or not known.__module__.startswith("dcnn."):   # dcnn's own names are never shadowed
            LAYER_CLASSES[cls.__name__] = cls
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            if "_init_args" not in self.__dict__:   # the outermost constructor wins (subclasses call super)
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                self._init_args = {k: v for k, v in list(bound.arguments.items())[1:]}
            init(self, *args, **kw)

        cls.__init__ = recording_init

    def init_args(self) -> dict:
        """The arguments this layer was constructed with (defaults filled in)."""
        return dict(self.__dict__.get("_init_args", {}))

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
            raise RuntimeError(f"{self.describe()}.backward() was called before forward(): backward uses what "
                               "forward keeps, so call forward(x) first (in training mode), then backward(dy)")
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
