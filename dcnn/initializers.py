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


def initial_weight(kind: str, rng: np.random.Generator, shape, fan_in: int, fan_out: int) -> np.ndarray:
    if kind == "he":
        return he_normal(rng, shape, fan_in)
    if kind == "glorot":
        return glorot_uniform(rng, shape, fan_in, fan_out)
    raise ValueError(f"unknown initialiser {kind!r}; valid ones are: 'he', 'glorot'")
