"""Per-map standardisation (the seed's) and batch normalisation."""
import numpy as np

from backends import backend_of
from .base import Layer, check_channels, check_rank


def _standardize_backward(xp, dy, xhat, inv_std, axes):
    """dx for xhat = (x - mean) * inv_std with mean and var taken over ``axes``."""
    mean_dy = xp.mean(dy, axis=axes, keepdims=True)
    mean_dy_xhat = xp.mean(dy * xhat, axis=axes, keepdims=True)
    return inv_std * (dy - mean_dy - xhat * mean_dy_xhat)


class FeatureMapNorm(Layer):
    """Each sample's each feature map to mean 0, std 1: the seed's normalisation.

    Same as torch.nn.InstanceNorm2d(C) (no affine, no running stats).
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def describe(self) -> str:
        return "FeatureMapNorm()"

    def forward(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        xp = backend_of(x).xp
        mean = xp.mean(x, axis=(2, 3), keepdims=True)
        centered = x - mean
        inv_std = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=(2, 3), keepdims=True) + self.eps)
        xhat = centered * inv_std
        self._cache = (xp, xhat, inv_std)
        return xhat

    def backward(self, dy):
        xp, xhat, inv_std = self._cache
        return _standardize_backward(xp, dy, xhat, inv_std, (2, 3))


class BatchNorm2D(Layer):
    """torch.nn.BatchNorm2d: batch statistics in training, running statistics in eval."""

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum = momentum
        self.eps = eps

    def describe(self) -> str:
        return "BatchNorm2D()"

    def build(self, input_shape, rng, backend):
        c = input_shape[0]
        self.params["weight"] = backend.from_numpy(np.ones(c, np.float32))
        self.params["bias"] = backend.from_numpy(np.zeros(c, np.float32))
        self.buffers["running_mean"] = backend.from_numpy(np.zeros(c, np.float32))
        self.buffers["running_var"] = backend.from_numpy(np.ones(c, np.float32))
        self.buffers["num_batches_tracked"] = backend.from_numpy(np.zeros((), np.int64))
        super().build(input_shape, rng, backend)

    def forward(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        c = self.params["weight"].shape[0]
        check_channels(self, x, c)
        xp = backend_of(x).xp
        gamma = xp.reshape(self.params["weight"], (1, c, 1, 1))
        beta = xp.reshape(self.params["bias"], (1, c, 1, 1))
        if self.training:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            if count < 2:
                raise ValueError(f"{self.describe()} needs more than one value per channel in training; "
                                 f"got input shape {tuple(x.shape)}")
            mean = xp.mean(x, axis=(0, 2, 3), keepdims=True)
            centered = x - mean
            var = xp.mean(centered * centered, axis=(0, 2, 3), keepdims=True)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            m = self.momentum
            b = self.buffers
            b["running_mean"] = (1 - m) * b["running_mean"] + m * xp.reshape(mean, (c,))
            b["running_var"] = (1 - m) * b["running_var"] + m * xp.reshape(var, (c,)) * (count / (count - 1))
            b["num_batches_tracked"] += 1
            xhat = centered * inv_std
        else:
            inv_std = xp.reshape(1.0 / xp.sqrt(self.buffers["running_var"] + self.eps), (1, c, 1, 1))
            xhat = (x - xp.reshape(self.buffers["running_mean"], (1, c, 1, 1))) * inv_std
        self._cache = (xp, xhat, inv_std, gamma, self.training)
        return xhat * gamma + beta

    def backward(self, dy):
        xp, xhat, inv_std, gamma, training = self._cache
        self.grads["weight"] = xp.sum(dy * xhat, axis=(0, 2, 3))
        self.grads["bias"] = xp.sum(dy, axis=(0, 2, 3))
        if not self.needs_input_grad:
            return None
        if training:
            return _standardize_backward(xp, dy * gamma, xhat, inv_std, (0, 2, 3))
        return dy * (gamma * inv_std)
