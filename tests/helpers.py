"""Shared test helpers: float64 directional gradient checks, casting, comparing."""
import numpy as np

from backends.base import Backend


def leaves(layer):
    """The layer and every layer below it (containers hold no arrays of their own)."""
    return [l for _, l in layer.named_modules()]


def cast_params(layer, backend, dtype):
    """Cast a built layer's parameters and float buffers (in place) to ``dtype``."""
    xp = backend.xp
    for leaf in leaves(layer):
        leaf.params = {k: xp.astype(v, dtype) for k, v in leaf.params.items()}
        leaf.buffers = {k: xp.astype(v, dtype) if xp.isdtype(v.dtype, "real floating") else v
                        for k, v in leaf.buffers.items()}


def to_host(backend, array):
    return backend.to_numpy(array)


def directional_check(backend, forward, inputs, params, backward, rng, directions=3, eps=1e-6, rtol=1e-6):
    """Chainer-style check: compare the backprop derivative along random directions
    with a float64 central difference.

    ``inputs`` and ``params`` are lists of float64 device arrays that ``forward()``
    reads (params are perturbed in place).  ``backward(dy)`` must return the
    gradients for ``inputs + params`` in order.
    """
    xp = backend.xp
    y = forward()
    dy = backend.from_numpy(rng.standard_normal(tuple(y.shape)))
    grads = backward(dy)
    variables = list(inputs) + list(params)
    assert len(grads) == len(variables)
    for _ in range(directions):
        dirs = [backend.from_numpy(rng.standard_normal(tuple(v.shape))) for v in variables]
        analytic = sum(float(xp.sum(g * d)) for g, d in zip(grads, dirs))

        def shifted(t):
            for v, d in zip(variables, dirs):
                v += t * d
            value = float(xp.sum(forward() * dy))
            for v, d in zip(variables, dirs):
                v -= t * d
            return value

        numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
        assert abs(analytic - numeric) <= rtol * max(1.0, abs(numeric)), \
            f"analytic {analytic!r} vs numeric {numeric!r}"


def generic(backend):
    """The same array library and device, with only the generic Backend methods (backends/ops):
    what every fused override is tested against."""
    return Backend(backend.xp, device=backend.device)


def host(backend, array):
    """``array`` as a host NumPy array (None stays None)."""
    return None if array is None else backend.to_numpy(array)
