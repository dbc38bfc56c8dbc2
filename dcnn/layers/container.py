"""Sequential: layers applied in order; the seed's composite ConvBlock builds on it."""
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

    def sublayers(self):
        return self.layers

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

    def forward(self, x):
        for layer in run_order(self.layers):
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(run_order(self.layers)):
            dy = layer.backward(dy)
            if dy is None:
                break
        return dy

    def set_needs_input_grad(self, value: bool) -> None:
        # Only the first layer can skip its input gradient: later ones feed their predecessors.
        self.needs_input_grad = value
        if self.layers:
            first = self.layers[0]
            if isinstance(first, Sequential):
                first.set_needs_input_grad(value)
            else:
                first.needs_input_grad = value

    def named_layers(self, prefix: str = ""):
        """(key prefix, leaf layer) pairs in order."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Sequential):
                yield from layer.named_layers(f"{prefix}{i}.")
            else:
                yield f"{prefix}{i}.", layer

    def state(self):
        return {prefix + name: value
                for prefix, layer in self.named_layers() for name, value in layer.state().items()}

    def param_count(self) -> int:
        return sum(layer.param_count() for layer in self.layers)


def run_order(layers) -> list:
    """The steps in which ``layers`` compute.  Two rewrites, each exact:

    - a BatchNorm2D directly followed by a ReLU runs as one step, the backend's
      ``batch_norm`` with the ReLU fused in (one pass over the maps, not two);
    - a ReLU directly followed by a MaxPool2D runs after the pool instead:
      max-pool then ReLU equals ReLU then max-pool, forward and backward (ties
      included), because ReLU and its cap are monotone: the window's first
      maximum is unchanged, or the gradient is zero either way.  The ReLU then
      touches a quarter of the values (for 2x2 pools).

    Each step has ``forward`` and ``backward``; the layers keep their own state.
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
    return order


class BatchNormReLU:
    """A BatchNorm2D and the ReLU after it, run as one fused step."""

    def __init__(self, norm: BatchNorm2D, relu: ReLU):
        self.norm, self.relu = norm, relu

    def forward(self, x):
        return self.norm.forward(x, relu_cap=self.relu.cap)

    def backward(self, dy):
        return self.norm.backward(dy)

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
