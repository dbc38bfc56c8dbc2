"""The multi-node optimiser: average the gradients over the ranks, then take the usual step.

All gradients travel in one flat buffer, so a step costs one all-reduce (latency paid once),
not one per parameter.  ``allreduce_gradients`` is the one place that packs and unpacks it.
"""
from __future__ import annotations

import time

from backends import backend_of

_OWN = ("optimizer", "comm", "allreduce_seconds", "allreduce_calls")


def allreduce_gradients(comm, entries, weight: float, riders=()):
    """Sum ``weight * gradient`` over the ranks in one flat buffer.

    ``entries`` are (key, param, grad) triples; returns new triples whose gradients are views
    into the reduced buffer, and the summed ``riders`` (0-d arrays sent along in the same
    buffer, e.g. this step's loss and hit count, already weighted by the caller).
    """
    grads = [g for _, _, g in entries]
    backend = backend_of(grads[0] if grads else riders[0])
    xp = backend.xp
    dtype = grads[0].dtype if grads else xp.float32
    flat = xp.concat([xp.reshape(g, (-1,)) for g in grads] +
                     [xp.reshape(xp.astype(r, dtype), (1,)) for r in riders], axis=0)
    total = flat.shape[0] - len(riders)
    if weight != 1:
        flat[:total] *= weight
    comm.allreduce_sum(flat)
    out, offset = [], 0
    for (key, param, grad) in entries:
        size = 1
        for d in grad.shape:
            size *= int(d)
        out.append((key, param, xp.reshape(flat[offset:offset + size], grad.shape)))
        offset += size
    return out, [flat[total + i] for i in range(len(riders))]


class DistributedOptimizer:
    """Wraps an ``Optimizer``: ``step`` all-reduces the gradients, then updates as one process would.

    Everything else (``lr``, ``state``, ``steps``, checkpoint state) is the wrapped optimiser's,
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

    def step(self, entries, weight: float | None = None, riders=()):
        """Average ``entries``' gradients over the ranks, then update.

        ``weight``: this rank's share of the global batch (default 1/ranks, equal shards); the
        global-batch gradient is the sum over ranks of weight * local mean gradient.
        Returns the summed ``riders``.
        """
        entries = list(entries)
        t0 = time.perf_counter()
        entries, riders = allreduce_gradients(self.comm, entries, 1.0 / self.comm.size if weight is None else weight,
                                              riders)
        self.allreduce_seconds += time.perf_counter() - t0
        self.allreduce_calls += 1
        self.optimizer.step(entries)
        return riders

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer.name}, {self.comm!r})"
