"""Joining tensors, generic versions: Concatenate's copy and the sum of the gradients of a tensor
that feeds several calls (a U-Net's skip: the max-pool down and the Concatenate up)."""
from __future__ import annotations


class MergeOps:
    def concat(self, xs, axis: int):
        """The arrays ``xs`` joined along ``axis`` (torch.cat)."""
        return self.xp.concat(list(xs), axis=axis)

    def add(self, a, b):
        """``a + b``, a new array, for ``a`` and ``b`` of one shape and dtype (never written into:
        either may be another consumer's gradient)."""
        return a + b
