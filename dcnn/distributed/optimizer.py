"""The multi-node optimiser: average the gradients over the ranks, then take the usual step.

All gradients travel in one flat buffer, so a step costs one all-reduce (latency paid once),
not one per parameter.  ``allreduce_gradients`` is the one place that packs and unpacks it.
"""
from __future__ import annotations

import time

from backends import backend_of

_OWN = ("optimizer", "comm", "allreduce_seconds", "allreduce_calls")


def allreduce_gradients(comm, grads, weight: float, riders=()):
    """Sum ``weight * gradient`` over the ranks in one flat buffer.

    ``grads``: the flat gradient, or the gradients in the parameters' order (they are packed
    in the same copy that appends the riders).  ``riders``: 0-d arrays sent along in the same
    buffer, e.g. this step's loss and hit count, already weighted by the caller.
    Returns (the reduced flat gradient, the summed riders), views of one buffer.
    """
    parts = [grads] if hasattr(grads, "shape") else list(grads)
    xp = backend_of(parts[0] if parts else riders[0]).xp
    dtype = parts[0].dtype if parts else xp.float32
    flat = xp.concat([xp.reshape(g, (-1,)) for g in parts] +
                     [xp.reshape(xp.astype(r, dtype), (1,)) for r in riders], axis=0)
    total = flat.shape[0] - len(riders)
    if weight != 1:
        flat[:total] *= weight
    comm.allreduce_sum(flat)
    return flat[:total], [flat[total + i] for i in range(len(riders))]


class DistributedOptimizer:
    """Wraps an ``Optimizer``: ``step`` all-reduces the gradient, then updates as one process would.

    Everything else (``lr``, state, ``steps``, checkpoint state) is the wrapped optimiser's,
    so schedules and checkpoints see no difference.
    """

    def __init__(self, optimizer, comm):
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "comm", comm)
        object.__setattr__(self, "allreduce_seconds", 0.0)   # time inside the all-reduce (for benchmarks)
        object.__setattr__(self, "allreduce_calls", 0)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def __setattr__(self, name, value):
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.optimizer, name, value)

    def step(self, params, grad, weight: float | None = None, riders=()):
        """Average ``grad`` (flat, or a list in ``params``' order) over the ranks, then update ``params``.

        ``weight``: this rank's share of the global batch (default 1/ranks, equal shards); the
        global-batch gradient is the sum over ranks of weight * local mean gradient.
        Returns the summed ``riders``.
        """
        t0 = time.perf_counter()
        grad, riders = allreduce_gradients(self.comm, grad, 1.0 / self.comm.size if weight is None else weight, riders)
        self.allreduce_seconds += time.perf_counter() - t0
        self.allreduce_calls += 1
        self.optimizer.step(params, grad)
        return riders

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer.name}, {self.comm!r})"
