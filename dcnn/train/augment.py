"""Random shifts and flips of a training batch, on the device (``dcnn train --augment``)."""
from __future__ import annotations

import numpy as np


class RandomShiftFlip:
    """Augmentation on the device: a random shift of up to ``pad`` pixels (zero fill) and,
    optionally, a random left-right flip, per image.

    The Python loops run over the 2*pad+1 possible shifts, never over images or pixels.
    The random numbers are drawn on the device (no per-batch upload) from the backend's
    generator, whose state is checkpointed where the backend can save it (the CPU).
    """

    def __init__(self, backend, seed: int, pad: int = 2, flip: bool = True):
        self.backend, self.pad, self.flip = backend, int(pad), bool(flip)
        stream_seed = int(np.random.SeedSequence([int(seed), 0xA06]).generate_state(1, np.uint64)[0])
        self.generator = backend.random_generator(stream_seed)

    @property
    def state(self):
        return self.generator.state

    @state.setter
    def state(self, value):
        self.generator.state = value

    def __call__(self, x):
        b, xp = self.backend, self.backend.xp
        n, c, h, w = x.shape
        draws = self.generator.random((3, n, 1, 1, 1), x.dtype)    # flip, row shift, column shift
        if self.flip:
            x = xp.where(draws[0, ...] < 0.5, xp.flip(x, axis=3), x)
        p = self.pad
        if p:
            # Shift s in [-p, p] with equal chances: s = floor(u * (2p + 1)) - p.
            shifts = xp.astype(xp.floor(draws[1:, ...] * (2 * p + 1)), xp.int64) - p
            padded = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype, device=b.device)
            padded[:, :, p:p + h, p:p + w] = x
            rows = padded[:, :, p:p + h, :]
            for s in range(-p, p + 1):
                if s:
                    rows = xp.where(shifts[0, ...] == s, padded[:, :, p + s:p + s + h, :], rows)
            x = rows[:, :, :, p:p + w]
            for s in range(-p, p + 1):
                if s:
                    x = xp.where(shifts[1, ...] == s, rows[:, :, :, p + s:p + s + w], x)
        return x
