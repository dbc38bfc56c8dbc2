"""Checks for your own layers: ``check_layer(layer, x)`` compares its ``backprop`` with finite differences.

The check is Chainer's ``check_backward``: along a few random directions in the space of inputs
and parameters, the derivative that ``backprop`` gives is compared with a float64 central
difference of the forward pass.  A few forward passes per direction, not one per element, so it
runs on real sizes.  Give inputs with no ties and away from kinks (max-pool windows, ReLU at 0).
"""
from __future__ import annotations

import numpy as np

import backends


class GradientCheckError(AssertionError):
    """``backprop`` disagrees with the finite difference; the message says along which variable."""


def check_layer(layer, x, *, backend=None, training: bool = True, directions: int = 3, eps: float = 1e-6,
                rtol: float = 1e-6, seed: int = 0) -> None:
    """Raise GradientCheckError unless ``layer``'s gradients match finite differences.

    ``x``: a NumPy array (N, ...), or a list of them for a layer that takes several inputs.  The
    layer is built for ``x`` if it is not yet, and its parameters are cast to float64 for the check.
    """
    backend = backends.get_backend() if backend is None else backends.resolve(backend) \
        if isinstance(backend, str) else backend
    xp = backend.xp
    rng = np.random.default_rng(seed)
    many = isinstance(x, (list, tuple))
    inputs = [backend.from_numpy(np.asarray(v, dtype=np.float64)) for v in (x if many else [x])]
    shapes = [tuple(v.shape[1:]) for v in inputs]
    if not layer.built:
        layer.build(shapes if many else shapes[0], rng, backend)
    holders = [(sub, name) for _, sub in layer.named_modules() for name in sub.params]
    for _, sub in layer.named_modules():
        sub.params = {k: xp.astype(v, xp.float64) for k, v in sub.params.items()}
        sub.buffers = {k: xp.astype(v, xp.float64) if xp.isdtype(v.dtype, "real floating") else v
                       for k, v in sub.buffers.items()}
    layer.train(training)
    layer.set_needs_input_grad(True)
    arg = inputs if many else inputs[0]
    y, saved = layer.apply(arg)
    dy = backend.from_numpy(rng.standard_normal(tuple(y.shape)))
    layer.zero_grad()
    dx = layer.backprop(dy, saved)
    grads = (list(dx) if many else [dx]) + [sub.grads.get(name) for sub, name in holders]
    variables = inputs + [sub.params[name] for sub, name in holders]
    names = [f"input {i}" for i in range(len(inputs))] + [f"{sub.name}.{name}" for sub, name in holders]
    for what, g in zip(names, grads):
        if g is None:
            raise GradientCheckError(f"backprop gave no gradient for {what}")

    def value(t: float, direction: list) -> float:
        for v, d in zip(variables, direction):
            v += t * d
        out = float(xp.sum(layer.apply(arg)[0] * dy))
        for v, d in zip(variables, direction):
            v -= t * d
        return out

    for _ in range(directions):
        direction = [backend.from_numpy(rng.standard_normal(tuple(v.shape))) for v in variables]
        analytic = sum(float(xp.sum(g * d)) for g, d in zip(grads, direction))
        numeric = (value(eps, direction) - value(-eps, direction)) / (2 * eps)
        if abs(analytic - numeric) > rtol * max(1.0, abs(numeric)):
            # Say which variable is off: the same check along each variable alone.
            culprits = []
            for i, what in enumerate(names):
                alone = [d if j == i else d * 0 for j, d in enumerate(direction)]
                a = float(xp.sum(grads[i] * direction[i]))
                n = (value(eps, alone) - value(-eps, alone)) / (2 * eps)
                if abs(a - n) > rtol * max(1.0, abs(n)):
                    culprits.append(f"{what} (backprop {a:.6g}, finite difference {n:.6g})")
            raise GradientCheckError(f"{layer.name}: backprop disagrees with finite differences: "
                                     + ("; ".join(culprits) or f"{analytic:.6g} against {numeric:.6g}"))
