"""A network from its JSON spec (``dcnn.layers.spec`` writes and reads the layers; this builds the network)."""
from __future__ import annotations

from ..layers.spec import FORMAT, VERSION, SpecError, build_layer, layer_spec, model_spec  # noqa: F401
from .network import DCNNetwork


def build_network(spec: dict, *, backend=None, seed: int = 0):
    """A built DCNNetwork from ``model_spec``'s output (weights still initial)."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise SpecError(f"not a dcnn model spec (format {spec.get('format') if isinstance(spec, dict) else spec!r})")
    if spec.get("version") != VERSION:
        raise SpecError(f"a version {spec.get('version')!r} model spec; this dcnn reads version {VERSION}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError("a model spec needs a non-empty list 'layers'")
    built = [build_layer(s, f"layers[{i}]") for i, s in enumerate(layers)]
    net = DCNNetwork(built, input_shape=spec.get("input_shape"), seed=seed, backend=backend)
    return net.build() if net.input_shape is not None else net
