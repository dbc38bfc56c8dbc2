"""Per-map standardisation (the seed's), batch normalisation (the backend's ``batch_norm``; BatchNorm2D
and BatchNorm1D), LayerNorm and GroupNorm (``layer_norm``, ``group_norm``)."""
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


class BatchNorm1D(BatchNorm2D):
    """torch.nn.BatchNorm1d for (N, F) features: the backend's ``batch_norm`` on an (N, F, 1, 1) view."""

    def describe(self) -> str:
        return "BatchNorm1D()"

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.describe()} expects flat (features,) inputs; got {tuple(input_shape)} "
                             "(use BatchNorm2D for feature maps, or add a Flatten layer before it)")
        return tuple(input_shape)

    def build(self, input_shape, rng, backend):
        self.output_shape(input_shape)
        super().build(input_shape, rng, backend)

    def apply(self, x, relu_cap=None):
        check_rank(self, x, 2, "(N, features) inputs")
        check_channels(self, x, self.params["weight"].shape[0])
        if self.training and x.shape[0] < 2:
            raise ValueError(f"{self.describe()} needs more than one sample in training; got input shape "
                             f"{tuple(x.shape)}")
        xp = backend_of(x).xp
        y, saved = super().apply(xp.reshape(x, tuple(x.shape) + (1, 1)), relu_cap)
        return xp.reshape(y, tuple(x.shape)), saved

    def backprop(self, dy, saved):
        xp = backend_of(dy).xp
        dx = super().backprop(xp.reshape(dy, tuple(dy.shape) + (1, 1)), saved)
        return None if dx is None else xp.reshape(dx, tuple(dy.shape))


def _eps(layer: str, eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{layer}: eps must be a positive number; got {eps!r}")
    return float(eps)


class LayerNorm(Layer):
    """torch.nn.LayerNorm(input_shape): each sample standardised over all its non-batch axes, then a
    ``weight`` and ``bias`` of the input's shape (C, H, W) or (F,)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = _eps("LayerNorm", eps)

    def describe(self) -> str:
        return "LayerNorm()"

    def build(self, input_shape, rng, backend):
        self.params["weight"] = backend.from_numpy(np.ones(tuple(input_shape), np.float32))
        self.params["bias"] = backend.from_numpy(np.zeros(tuple(input_shape), np.float32))
        super().build(input_shape, rng, backend)

    def apply(self, x):
        shape = tuple(self.params["weight"].shape)
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{self.describe()} was built for samples of shape {shape}; got input shape "
                             f"{tuple(x.shape)}")
        return backend_of(x).layer_norm(x, self.params["weight"], self.params["bias"], self.eps)

    def backprop(self, dy, saved):
        dx, dweight, dbias = backend_of(dy).layer_norm_backward(dy, saved, input_grad=self.needs_input_grad)
        if self.trainable:
            self.add_grad("weight", dweight)
            self.add_grad("bias", dbias)
        return dx


class GroupNorm(Layer):
    """torch.nn.GroupNorm(num_groups, C): each sample's channels in ``num_groups`` groups, each
    standardised over its channels and pixels, then a per-channel ``weight`` and ``bias``."""

    def __init__(self, num_groups: int, eps: float = 1e-5):
        super().__init__()
        if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
            raise ValueError(f"GroupNorm: num_groups must be a positive int; got {num_groups!r}")
        self.num_groups = int(num_groups)
        self.eps = _eps("GroupNorm", eps)

    def describe(self) -> str:
        return f"GroupNorm({self.num_groups})"

    def output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self.describe()} expects (channels, height, width) inputs; got {tuple(input_shape)}")
        if input_shape[0] % self.num_groups:
            raise ValueError(f"{self.describe()}: {self.num_groups} groups do not divide {input_shape[0]} channels")
        return tuple(input_shape)

    def build(self, input_shape, rng, backend):
        self.output_shape(input_shape)
        c = input_shape[0]
        self.params["weight"] = backend.from_numpy(np.ones(c, np.float32))
        self.params["bias"] = backend.from_numpy(np.zeros(c, np.float32))
        super().build(input_shape, rng, backend)

    def apply(self, x):
        check_rank(self, x, 4, "(N, C, H, W) feature maps")
        check_channels(self, x, self.params["weight"].shape[0])
        return backend_of(x).group_norm(x, self.params["weight"], self.params["bias"], self.num_groups, self.eps)

    def backprop(self, dy, saved):
        dx, dweight, dbias = backend_of(dy).group_norm_backward(dy, saved, input_grad=self.needs_input_grad)
        if self.trainable:
            self.add_grad("weight", dweight)
            self.add_grad("bias", dbias)
        return dx
