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
        backend = backend_of(x)
        xp = backend.xp
        n, _, h, w = x.shape
        count = n * h * w
        # Channels last, as an (N*H, W*C) matrix: a free view of what the convolutions
        # produce.  Per-channel sums are GEMVs with a ones vector (NumPy's sum over an
        # axis is ten times slower); per-channel vectors are repeated W times, so each
        # broadcast runs over W*C contiguous values rather than C at a time.
        rows = xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (n * h, w * c))
        ones = xp.ones((n * h,), dtype=x.dtype, device=backend.device)
        channel_sum = lambda a: xp.sum(xp.reshape(ones @ a, (w, c)), axis=0)
        wide = lambda v: xp.reshape(xp.broadcast_to(v, (w, c)), (w * c,))
        gamma, beta = self.params["weight"], self.params["bias"]
        if self.training:
            if count < 2:
                raise ValueError(f"{self.describe()} needs more than one value per channel in training; "
                                 f"got input shape {tuple(x.shape)}")
            mean = channel_sum(rows) / count
            centered = rows - wide(mean)
            var = channel_sum(centered * centered) / count
            m = self.momentum
            b = self.buffers
            b["running_mean"] = (1 - m) * b["running_mean"] + m * mean
            b["running_var"] = (1 - m) * b["running_var"] + m * var * (count / (count - 1))
            b["num_batches_tracked"] += 1
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            centered = None    # x - running_mean, computed in backward if asked for
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        scale = gamma * inv_std
        if centered is not None:
            y = centered * wide(scale)
            y += wide(beta)
        else:
            y = rows * wide(scale)
            y += wide(beta - mean * scale)
        self._cache = (backend, rows, centered, mean, inv_std, scale, self.training, (n, c, h, w))
        return xp.permute_dims(xp.reshape(y, (n, h, w, c)), (0, 3, 1, 2))

    def backward(self, dy):
        backend, rows, centered, mean, inv_std, scale, training, (n, c, h, w) = self._cache
        xp = backend.xp
        count = n * h * w
        g = xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (n * h, w * c))
        ones = xp.ones((n * h,), dtype=g.dtype, device=backend.device)
        channel_sum = lambda a: xp.sum(xp.reshape(ones @ a, (w, c)), axis=0)
        wide = lambda v: xp.reshape(xp.broadcast_to(v, (w, c)), (w * c,))
        if centered is None:
            centered = rows - wide(mean)
        sum_g = channel_sum(g)
        sum_g_centered = channel_sum(g * centered)
        self.grads["weight"] = sum_g_centered * inv_std          # sum(dy * xhat)
        self.grads["bias"] = sum_g
        if not self.needs_input_grad:
            return None
        dx = g * wide(scale)
        if training:
            # scale * (dy - mean(dy) - xhat * mean(dy * xhat)), with xhat = centered * inv_std
            dx -= centered * wide(scale * inv_std * inv_std * sum_g_centered / count)
            dx -= wide(scale * sum_g / count)
        return xp.permute_dims(xp.reshape(dx, (n, h, w, c)), (0, 3, 1, 2))
