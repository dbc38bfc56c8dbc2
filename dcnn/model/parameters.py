"""The trainable parameters of a model in one flat device buffer.

The layers keep views of it, so an optimiser updates the whole model with one
call per step (one fused kernel on a GPU, one parallel loop on the CPU), and a
gradient all-reduce moves one buffer.  The buffer is rebuilt when a layer's
parameter is no longer its view (weights loaded, model moved to a device).
"""
from __future__ import annotations

import math


class FlatParameters:
    def __init__(self, backend, refs):
        """``refs``: (key, holder dict, name) of each trainable parameter, in order;
        ``holder[name]`` is replaced by a view of the flat buffer."""
        xp = backend.xp
        self.backend = backend
        self.keys = [key for key, _, _ in refs]
        self.shapes = [tuple(holder[name].shape) for _, holder, name in refs]
        dtypes = {holder[name].dtype for _, holder, name in refs}
        if len(dtypes) > 1:
            raise TypeError(f"the trainable parameters have different dtypes ({sorted(map(str, dtypes))}); "
                            "cast them to one")
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.layout = tuple(zip(self.keys, self.shapes))
        parts = [xp.reshape(holder[name], (-1,)) for _, holder, name in refs]
        self.data = xp.concat(parts) if parts else xp.zeros((0,), device=backend.device)
        self.views = self.split(self.data)
        self._holders = [(holder, name) for _, holder, name in refs]
        for (holder, name), view in zip(self._holders, self.views):
            holder[name] = view

    def split(self, flat) -> list:
        """Views of ``flat`` shaped as the parameters, in order."""
        xp = self.backend.xp
        return [xp.reshape(flat[o:o + s], shape) for o, s, shape in zip(self.offsets, self.sizes, self.shapes)]

    def is_current(self, refs) -> bool:
        """True while ``refs`` are the same parameters and each is still its view."""
        return len(refs) == len(self.views) and all(
            key == k and holder[name] is view for (key, holder, name), k, view in zip(refs, self.keys, self.views))

    def gather(self, grads):
        """The gradients, in the parameters' order, as one flat array."""
        xp = self.backend.xp
        if not grads:
            return xp.zeros((0,), dtype=self.data.dtype, device=self.backend.device)
        return xp.concat([xp.reshape(g, (-1,)) for g in grads])

    def __len__(self) -> int:
        return sum(self.sizes)
