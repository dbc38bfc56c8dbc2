"""The Layer protocol: ``apply(x) -> (y, saved)`` and ``backprop(dy, saved) -> dx``.

What one call keeps for its backward pass (``saved``) belongs to the caller, not to the
layer: a graph node or a container holds it and hands it back to ``backprop``, so one
layer can be called at several places in a model (a shared layer), and its parameter
gradients are summed over those calls (``add_grad``).  ``forward(x)`` / ``backward(dy)``
are the one-call conveniences of the seed's API: they keep the last call's ``saved`` on
the layer itself.

Parameters and buffers are named as in the equivalent ``torch.nn`` module
(``weight``, ``bias``, ``running_mean``...), so a model's state dict has the
keys and layouts of the equivalent ``torch.nn`` module tree.

A layer that holds other layers says so once, in ``children()``; everything that
walks the tree (parameters, gradients, buffers, train/eval, device moves, state-dict
keys, summaries, checkpoints, stage pictures) goes through ``named_modules()``,
as torch.nn.Module does.  No code looks for particular container types.
"""
from __future__ import annotations

import functools
import inspect
import re

import numpy as np

from backends import Backend, backend_of

from .symbolic import call_symbolic, is_symbolic

# Every Layer subclass by class name, for rebuilding a saved model from its spec (dcnn.layers.spec, dcnn.model.spec).
LAYER_CLASSES: dict[str, type] = {}


class Layer:
    """Base class.  Subclasses implement ``forward``, ``backward`` and, when they
    own weights, ``build``; shapes exclude the batch axis.

    Each subclass's constructor arguments are kept (``init_args()``), so that any model,
    built-in layers or yours, can be written as a JSON spec and built again (dcnn.layers.spec, dcnn.model.spec).
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

        takes_name = "name" in signature.parameters

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            # Every layer takes name= (Keras's); a constructor that does not list it never sees it.
            name = None if takes_name else kw.pop("name", None)
            if "_init_args" not in self.__dict__:   # the outermost constructor wins (subclasses call super)
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                self._init_args = {k: v for k, v in list(bound.arguments.items())[1:]}
            init(self, *args, **kw)
            if name is not None:
                self.name = name

        cls.__init__ = recording_init

    def init_args(self) -> dict:
        """The arguments this layer was constructed with (defaults filled in)."""
        return dict(self.__dict__.get("_init_args", {}))

    takes_many = False               # True for merges: they take a list of inputs (Add, Concatenate...)

    def __init__(self, *, name: str | None = None):
        self._name = None
        if name is not None:
            self.name = name
        self.params: dict = {}       # trainable arrays, torch names
        self.grads: dict = {}        # same keys as params, filled by backward
        self.buffers: dict = {}      # non-trainable state saved with the weights
        self.trainable = True
        self.training = True
        self.needs_input_grad = True  # False for the first layer: skip dx
        self.input_shape: tuple | None = None
        self.built = False
        self._saved = None            # what the last forward() kept, for backward() (not for apply)

    # --- building ----------------------------------------------------------
    def build(self, input_shape: tuple, rng: np.random.Generator, backend: Backend) -> None:
        self.input_shape = tuple(input_shape)
        self.built = True

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    @property
    def name(self) -> str:
        """The layer's name: given with ``name=``, set by the graph that uses it (``conv2d``,
        ``conv2d_1``... unique within a model), or else its class in snake case."""
        return self._name or snake_case(type(self).__name__)

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str) or not NAME.fullmatch(value):
            raise ValueError(f"a layer name is letters, digits, '_' and '-', starting with a letter or '_' "
                             f"(it becomes a state-dict key prefix, so no '.'); got {value!r}")
        self._name = value

    @property
    def has_name(self) -> bool:
        """Whether the name was given or assigned (rather than the class's default)."""
        return self._name is not None

    def __call__(self, x):
        """On a symbolic tensor (``Input(...)`` or a layer's output): record a node of a graph
        and return its output tensor.  On an array: build if needed and run ``forward``."""
        if is_symbolic(x):
            return call_symbolic(self, x)
        if not self.built:
            self.build(tuple(x.shape[1:]), np.random.default_rng(0), backend_of(x))
        return self.forward(x)

    # --- computing ---------------------------------------------------------
    def apply(self, x):
        """One call: ``(y, saved)``, where ``saved`` is what ``backprop`` needs for this call
        (the caller keeps it).  A layer written the older way, with ``forward`` storing
        ``self._saved``, is adapted here."""
        if type(self).forward is Layer.forward:
            raise NotImplementedError(f"{type(self).__name__} must define apply(x) -> (y, saved)")
        y = self.forward(x)
        saved, self._saved = self._saved, None
        return y, saved

    def backprop(self, dy, saved):
        """dL/dx for the call that returned ``saved`` (None when ``needs_input_grad`` is False);
        the parameters' gradients are added to ``self.grads`` (``add_grad``).  It must not write
        into ``dy``: a fan-out hands the same ``dy`` to several consumers."""
        if type(self).backward is Layer.backward:
            raise NotImplementedError(f"{type(self).__name__} must define backprop(dy, saved)")
        self._saved = saved
        try:
            return self.backward(dy)
        finally:
            self._saved = None

    def forward(self, x):
        """``apply`` that keeps ``saved`` on the layer, for one ``backward`` after it."""
        y, self._saved = self.apply(x)
        return y

    def backward(self, dy):
        """``backprop`` of the last ``forward``; the gradients replace earlier ones."""
        saved, self._saved = self.saved(), None     # one backward per forward, as in PyTorch
        self.zero_grad()
        return self.backprop(dy, saved)

    def add_grad(self, name: str, value) -> None:
        """Add a parameter's gradient from one call: a layer used at several nodes sums them."""
        self.grads[name] = value if name not in self.grads else self.grads[name] + value

    def zero_grad(self) -> None:
        """Forget the gradients of this layer and every layer below it (before a backward pass)."""
        for _, layer in self.named_modules():
            layer.grads = {}

    def saved(self):
        """What the last forward kept for backward; an error if there is none."""
        if self._saved is None:
            raise RuntimeError(f"{self.describe()}.backward() was called before forward(): backward uses what "
                               "forward keeps, so call forward(x) first (in training mode), then backward(dy)")
        return self._saved

    def release(self) -> None:
        """Drop what ``forward`` kept for ``backward``, here and in every sublayer."""
        for _, layer in self.named_modules():
            layer._saved = None

    def set_needs_input_grad(self, value: bool) -> None:
        """Whether backward must return dL/dx (False for a model's first layer).
        Containers pass it on to the layers that see their input."""
        self.needs_input_grad = value

    def forward_stages(self, x, key: str = ""):
        """Forward ``x``, yielding (key, layer, output) for each step worth showing;
        the last output is this layer's.  Containers yield their sublayers' steps."""
        yield key, self, self.apply(x)[0]

    # --- the layer tree ----------------------------------------------------
    def children(self):
        """(name, layer) of each directly held layer, in order; none for a plain layer."""
        return ()

    def sublayers(self) -> list["Layer"]:
        return [layer for _, layer in self.children()]

    def named_modules(self, prefix: str = ""):
        """(dotted key, layer) of this layer and every layer below it, parents first,
        as torch.nn.Module.named_modules: this one's key is ``prefix`` ("" at the root)."""
        yield prefix, self
        for name, child in self.children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else str(name))

    def named_layers(self, prefix: str = ""):
        """(key prefix ending in ".", layer) of each layer below this one that holds
        state directly or holds no layers (the leaves); the prefixes of state-dict keys."""
        for key, layer in self.named_modules(prefix.rstrip(".")):
            if layer is not self and (layer.params or layer.buffers or not any(True for _ in layer.children())):
                yield key + ".", layer

    def local_state(self) -> dict:
        """This layer's own parameters then buffers, by torch name (device arrays)."""
        return {**self.params, **self.buffers}

    def state(self) -> dict:
        """Every parameter and buffer of the tree, by dotted torch key, as stored (device arrays)."""
        return {f"{key}.{name}" if key else name: value
                for key, layer in self.named_modules() for name, value in layer.local_state().items()}

    def set_state(self, name: str, value) -> None:
        target = self.params if name in self.params else self.buffers
        target[name] = value

    def param_count(self) -> int:
        return int(sum(np.prod(p.shape) for _, layer in self.named_modules() for p in layer.params.values()))

    def train(self, mode: bool = True) -> None:
        for _, layer in self.named_modules():
            layer.training = mode

    def move_to(self, backend, move, seed: int) -> None:
        """Put this layer's own arrays on ``backend`` (``move`` copies one array there);
        layers with device-side state of their own (a random stream) extend it."""
        self.params = {k: move(v) for k, v in self.params.items()}
        self.buffers = {k: move(v) for k, v in self.buffers.items()}
        self.grads = {}

    def describe(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return self.describe()


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def snake_case(class_name: str) -> str:
    """``Conv2D`` -> ``conv2d``, ``BatchNorm2D`` -> ``batch_norm2d``, ``ReLU`` -> ``relu``: Keras-style names."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name).lower()


def check_rank(layer: Layer, x, rank: int, what: str) -> None:
    if x.ndim != rank:
        hint = " (add a Flatten layer before it)" if rank == 2 and x.ndim == 4 else ""
        raise ValueError(f"{layer.describe()} expects {what}, a {rank}-D array; got shape {tuple(x.shape)}{hint}")


def check_channels(layer: Layer, x, expected: int) -> None:
    if x.shape[1] != expected:
        raise ValueError(f"{layer.describe()} was built for {expected} input channels; got {x.shape[1]} "
                         f"(input shape {tuple(x.shape)})")
