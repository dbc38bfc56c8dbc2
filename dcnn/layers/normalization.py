"""Per-map standardisation (the seed's) and batch normalisation (the backend's ``batch_norm``)."""
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

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        xp = backend_of(x).xp
        mean = xp.mean(x, axis=(2, 3), keepdims=True)
        centered = x - mean
        inv_std = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=(2, 3), keepdims=True) + self.eps)
        xhat = centered * inv_std
        return xhat, (xhat, inv_std)

    def backprop(self, dy, saved):
        xhat, inv_std = saved
        return _standardize_backward(backend_of(dy).xp, dy, xhat, inv_std, (2, 3))


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

    def apply(self, x, relu_cap: float | None = None):
        """``relu_cap``: a ReLU (cap ``inf``) or capped ReLU fused after the normalisation."""
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        check_channels(self, x, self.params["weight"].shape[0])
        n, _, h, w = x.shape
        if self.training and n * h * w < 2:
            raise ValueError(f"{self.describe()} needs more than one value per channel in training; "
                             f"got input shape {tuple(x.shape)}")
        b = self.buffers
        y, saved = backend_of(x).batch_norm(
            x, self.params["weight"], self.params["bias"], b["running_mean"], b["running_var"],
            training=self.training, momentum=self.momentum, eps=self.eps, relu_cap=relu_cap)
        if self.training:
            b["num_batches_tracked"] += 1
        return y, saved

    def backprop(self, dy, saved):
        dx, dweight, dbias = backend_of(dy).batch_norm_backward(dy, saved, input_grad=self.needs_input_grad)
        self.add_grad("weight", dweight)
        self.add_grad("bias", dbias)
        return dx
