"""Optimiser updates over one flat parameter buffer (torch.optim's rules), generic versions.

All arguments named ``param``, ``grad`` and the slots are 1-D arrays of the same
length, updated in place: one call per step for the whole model, not one per
parameter.  Hyper-parameters are Python numbers.
"""
from __future__ import annotations


class OptimOps:
    def sgd_update(self, param, grad, momentum_buffer, *, lr: float, momentum: float, nesterov: bool,
                   weight_decay: float) -> None:
        """torch.optim.SGD; ``momentum_buffer`` starts at zeros (so its first value is the gradient)."""
        if weight_decay:
            grad = grad + weight_decay * param
        if momentum:
            momentum_buffer *= momentum
            momentum_buffer += grad
            grad = grad + momentum * momentum_buffer if nesterov else momentum_buffer
        param -= lr * grad

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, *, lr: float, beta1: float, beta2: float, eps: float,
                    weight_decay: float, decoupled: bool, step: int) -> None:
        """torch.optim.Adam, or AdamW when ``decoupled`` (weight decay applied to the
        parameter, not added to the gradient)."""
        xp = self.xp
        if weight_decay and decoupled:
            param *= 1 - lr * weight_decay
        elif weight_decay:
            grad = grad + weight_decay * param
        exp_avg *= beta1
        exp_avg += (1 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * (grad * grad)
        denom = xp.sqrt(exp_avg_sq) / ((1 - beta2 ** step) ** 0.5) + eps
        param -= (lr / (1 - beta1 ** step)) * (exp_avg / denom)
