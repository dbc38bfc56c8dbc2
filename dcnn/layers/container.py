"""Containers: Sequential (layers in order), Residual (body(x) + shortcut(x)); the seed's ConvBlock."""
from .activations import ReLU
from .base import Layer
from .conv import Conv2D
from .normalization import BatchNorm2D, FeatureMapNorm
from .pooling import MaxPool2D


class Sequential(Layer):
    """A chain of layers.  State keys are ``"<index>.<name>"``, nested for
    nested containers, exactly as in torch.nn.Sequential."""

    def __init__(self, layers=()):
        super().__init__()
        self.layers: list[Layer] = []
        for layer in layers:
            self.add(layer)

    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"expected a dcnn Layer, got {type(layer).__name__}")
        if self.built:
            raise RuntimeError("cannot add layers to a model that is already built")
        self.layers.append(layer)

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def describe(self) -> str:
        return f"{type(self).__name__}({', '.join(l.describe() for l in self.layers)})"

    def output_shape(self, input_shape):
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape

    def build(self, input_shape, rng, backend):
        shape = tuple(input_shape)
        for layer in self.layers:
            layer.build(shape, rng, backend)
            shape = layer.output_shape(shape)
        super().build(input_shape, rng, backend)

    def apply(self, x):
        return apply_steps(run_order(self.layers), x)

    def backprop(self, dy, saved):
        return backprop_steps(dy, saved)

    def set_needs_input_grad(self, value: bool) -> None:
        # Only the first layer can skip its input gradient: later ones feed their predecessors.
        self.needs_input_grad = value
        if self.layers:
            self.layers[0].set_needs_input_grad(value)

    def forward_stages(self, x, key: str = ""):
        for i, layer in enumerate(self.layers):
            for stage in layer.forward_stages(x, f"{key}.{i}" if key else str(i)):
                yield stage
            x = stage[2]


class Residual(Layer):
    """``body(x) + shortcut(x)``: a residual block (He et al., 2015).

    ``body`` and ``shortcut`` are a Layer or a list of layers (made a Sequential).
    ``shortcut=None`` is the identity; a projection, when the body changes the shape,
    is typically ``projection(filters, stride)``: a 1x1 convolution with that stride
    and a BatchNorm2D.  The ReLU of a classic block goes after the Residual.
    State keys are those of a torch.nn.Module with attributes ``body`` and ``shortcut``:
    ``"3.body.0.weight"``, ``"3.shortcut.0.weight"``.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = _as_layer(body, "body")
        self.shortcut = None if shortcut is None else _as_layer(shortcut, "shortcut")

    def children(self):
        return [("body", self.body)] + ([] if self.shortcut is None else [("shortcut", self.shortcut)])

    def describe(self) -> str:
        shortcut = "identity" if self.shortcut is None else self.shortcut.describe()
        return f"Residual(body={self.body.describe()}, shortcut={shortcut})"

    def output_shape(self, input_shape):
        body = tuple(self.body.output_shape(input_shape))
        short = tuple(input_shape) if self.shortcut is None else tuple(self.shortcut.output_shape(input_shape))
        if body != short:
            hint = (" (give a projection shortcut, e.g. projection(filters, stride))" if self.shortcut is None
                    else "")
            raise ValueError(f"Residual: the body outputs {body} but the shortcut {short} for input "
                             f"{tuple(input_shape)}; they must match to be added{hint}")
        return body

    def build(self, input_shape, rng, backend):
        self.output_shape(input_shape)
        self.body.build(tuple(input_shape), rng, backend)
        if self.shortcut is not None:
            self.shortcut.build(tuple(input_shape), rng, backend)
        super().build(input_shape, rng, backend)

    def set_needs_input_grad(self, value: bool) -> None:
        self.needs_input_grad = value
        self.body.set_needs_input_grad(value)
        if self.shortcut is not None:
            self.shortcut.set_needs_input_grad(value)

    def apply(self, x):
        y, body_saved = self.body.apply(x)
        if self.shortcut is None:
            return y + x, (body_saved, None)
        short, short_saved = self.shortcut.apply(x)
        return y + short, (body_saved, short_saved)

    def backprop(self, dy, saved):
        # Both branches read dy; backprop never writes into its dy.
        body_saved, short_saved = saved
        dx = self.body.backprop(dy, body_saved)
        dshort = dy if self.shortcut is None else self.shortcut.backprop(dy, short_saved)
        if not self.needs_input_grad:
            return None
        return dx + dshort

    def forward_stages(self, x, key: str = ""):
        """The body's steps, then the sum (the shortcut's steps are not shown)."""
        join = lambda name: f"{key}.{name}" if key else name
        for stage in self.body.forward_stages(x, join("body")):
            yield stage
        short = x if self.shortcut is None else self.shortcut.apply(x)[0]
        yield key, self, stage[2] + short


def _as_layer(value, what: str) -> Layer:
    if isinstance(value, Layer):
        return value
    if isinstance(value, (list, tuple)):
        return Sequential(value)
    raise TypeError(f"Residual {what} must be a Layer or a list of layers; got {type(value).__name__}")


def projection(filters: int, stride: int = 1, batch_norm: bool = True) -> Sequential:
    """The usual projection shortcut: a 1x1 convolution with ``stride`` (no bias when a
    BatchNorm2D follows it)."""
    return Sequential([Conv2D(filters, 1, stride, use_bias=not batch_norm)] + ([BatchNorm2D()] if batch_norm else []))


def basic_block(filters: int, stride: int = 1, in_filters: int | None = None) -> list:
    """ResNet's basic block as [Residual, ReLU]: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN,
    plus the identity, or a projection when the stride or the width changes."""
    body = [Conv2D(filters, 3, stride, 1, use_bias=False), BatchNorm2D(), ReLU(),
            Conv2D(filters, 3, 1, 1, use_bias=False), BatchNorm2D()]
    shortcut = None if stride == 1 and in_filters == filters else projection(filters, stride)
    return [Residual(body, shortcut), ReLU()]


def apply_steps(steps, x):
    """Run ``steps`` in order: ``(y, saved)`` with one entry per step in ``saved``."""
    saved = []
    for step in steps:
        x, step_saved = step.apply(x)
        saved.append((step, step_saved))
    return x, saved


def backprop_steps(dy, saved):
    """Backward through what ``apply_steps`` saved, last step first; each step's saved values are
    dropped as soon as its backward has run (``saved`` is emptied), so memory falls as it goes."""
    while saved:
        step, step_saved = saved.pop()
        dy = step.backprop(dy, step_saved)
        if dy is None:
            saved.clear()
            break
    return dy


def run_order(layers) -> list:
    """The steps in which ``layers`` compute.  Three rewrites, each exact:

    - a BatchNorm2D directly followed by a ReLU runs as one step, the backend's
      ``batch_norm`` with the ReLU fused in (one pass over the maps, not two);
    - a ReLU directly followed by a MaxPool2D runs after the pool instead:
      max-pool then ReLU equals ReLU then max-pool, forward and backward (ties
      included), because ReLU and its cap are monotone: the window's first
      maximum is unchanged, or the gradient is zero either way.  The ReLU then
      touches a quarter of the values (for 2x2 pools);
    - then a Conv2D directly followed by a MaxPool2D runs as one step, the backend's
      ``conv2d_max_pool2d`` (the same two operations; fused on the CPU).

    Each step has ``apply`` and ``backprop``, as a layer has.
    """
    order = []
    i = 0
    while i < len(layers):
        if type(layers[i]) is BatchNorm2D and i + 1 < len(layers) and type(layers[i + 1]) is ReLU:
            order.append(BatchNormReLU(layers[i], layers[i + 1]))
            i += 2
        else:
            order.append(layers[i])
            i += 1
    i = 0
    while i < len(order) - 1:
        if type(order[i]) is ReLU and type(order[i + 1]) is MaxPool2D:
            order[i], order[i + 1] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    fused = []
    for step in order:
        if type(step) is MaxPool2D and fused and type(fused[-1]) is Conv2D:
            fused[-1] = ConvMaxPool(fused[-1], step)
        else:
            fused.append(step)
    return fused


class ConvMaxPool:
    """A Conv2D and the MaxPool2D after it, run as one step: the backend's ``conv2d_max_pool2d``
    (fused on the CPU, so the convolution's full-size output is never stored)."""

    def __init__(self, conv: Conv2D, pool: MaxPool2D):
        self.conv, self.pool = conv, pool

    def apply(self, x):
        return self.conv.apply_pooled(x, self.pool)

    def backprop(self, dy, saved):
        conv_saved, pool_saved = saved
        return self.conv.backprop(self.pool.backprop(dy, pool_saved), conv_saved)

    def __eq__(self, other):
        return isinstance(other, ConvMaxPool) and (self.conv, self.pool) == (other.conv, other.pool)

    def __repr__(self) -> str:
        return f"ConvMaxPool({self.conv.describe()}, {self.pool.describe()})"


class BatchNormReLU:
    """A BatchNorm2D and the ReLU after it, run as one fused step."""

    def __init__(self, norm: BatchNorm2D, relu: ReLU):
        self.norm, self.relu = norm, relu

    def apply(self, x):
        return self.norm.apply(x, relu_cap=self.relu.cap)

    def backprop(self, dy, saved):
        return self.norm.backprop(dy, saved)

    def __eq__(self, other):
        return isinstance(other, BatchNormReLU) and (self.norm, self.relu) == (other.norm, other.relu)

    def __repr__(self) -> str:
        return f"BatchNormReLU({self.norm.describe()}, {self.relu.describe()})"


class ConvBlock(Sequential):
    """The seed's composite: conv -> ReLU (optionally capped) -> [max-pool] -> per-map normalisation."""

    def __init__(self, filters: int, kernel_size=3, *, stride=1, padding=0, max_activation=None,
                 pool_size: int | None = 2, normalize: bool = True, kernel=None, trainable: bool = True):
        layers = [Conv2D(filters, kernel_size, stride, padding, kernel=kernel, trainable=trainable),
                  ReLU(max_activation)]
        if pool_size:
            layers.append(MaxPool2D(pool_size))
        if normalize:
            layers.append(FeatureMapNorm())
        super().__init__(layers)
