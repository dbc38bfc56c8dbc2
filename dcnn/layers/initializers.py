"""Initial weights, drawn on the host from one seeded NumPy generator.

Drawing in one place (not with each backend's own RNG) means the same seed
gives the same initial model on NumPy and on CuPy.
"""
import numpy as np


def he_normal(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def glorot_uniform(rng: np.random.Generator, shape, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def torch_uniform(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """PyTorch's default for Conv2d and Linear: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    limit = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-limit, limit, shape).astype(np.float32)


INITIALIZERS = ("he", "glorot", "torch")


def initial_weight(kind: str, rng: np.random.Generator, shape, fan_in: int, fan_out: int) -> np.ndarray:
    if kind == "he":
        return he_normal(rng, shape, fan_in)
    if kind == "glorot":
        return glorot_uniform(rng, shape, fan_in, fan_out)
    if kind == "torch":
        return torch_uniform(rng, shape, fan_in)
    raise ValueError(f"unknown initialiser {kind!r}; valid ones are: {', '.join(map(repr, INITIALIZERS))}")


def initial_bias(kind: str, rng: np.random.Generator, size: int, fan_in: int) -> np.ndarray:
    """Zeros, except for ``torch``: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch draws biases."""
    if kind == "torch":
        return torch_uniform(rng, (size,), fan_in)
    return np.zeros(size, np.float32)
