"""Backend selection: which array library and device dcnn computes on.

``DCNN_BACKEND=numpy|cupy|auto`` (case-insensitive, default ``auto``) picks the
backend the first time one is needed; ``use(name)`` switches at run time.  The
CPU backend runs Numba kernels where Numba imports; ``DCNN_NUMBA=0`` keeps it to
pure NumPy (the reference fast paths).
Nothing is imported from CuPy, and nothing is written, until a backend is asked for.
"""
from __future__ import annotations

import os

from .base import Backend
from .cupy_backend import BackendUnavailable

ENV_VAR = "DCNN_BACKEND"
NUMBA_ENV_VAR = "DCNN_NUMBA"
VALID_NAMES = ("numpy", "cupy", "auto")

_active: Backend | None = None
_instances: dict[str, Backend] = {}
_failures: dict[str, BackendUnavailable] = {}


class BackendError(ValueError):
    """An unknown backend name, or a backend that cannot run here."""


def _create(name: str, reason: str) -> Backend:
    if name == "numpy":
        return _cpu_backend(reason)
    if name == "cupy":
        from .cupy_backend import CupyBackend
        return CupyBackend(reason)
    if name == "array_api_strict":
        from .strict_backend import StrictBackend
        return StrictBackend(reason)
    raise AssertionError(name)


def _cpu_backend(reason: str) -> Backend:
    """NumPy with the Numba kernels, or pure NumPy where Numba is missing or ``DCNN_NUMBA=0``."""
    if os.environ.get(NUMBA_ENV_VAR, "1").strip() != "0":
        try:
            from .numba_backend import NumbaBackend
        except ImportError as exc:
            reason += f" (pure NumPy: Numba is not importable: {exc})"
        else:
            return NumbaBackend(reason)
    else:
        reason += f" (pure NumPy: {NUMBA_ENV_VAR}=0)"
    from .numpy_backend import NumpyBackend
    return NumpyBackend(reason)


def _named(name: str, reason: str) -> Backend:
    """One instance per backend; a backend that failed to start is not retried."""
    if name in _failures:
        raise _failures[name]
    if name not in _instances:
        try:
            _instances[name] = _create(name, reason)
        except BackendUnavailable as exc:
            _failures[name] = exc
            raise
    return _instances[name]


def resolve(name: str | None = None) -> Backend:
    """The backend for ``name`` (or ``$DCNN_BACKEND``), without activating it."""
    source = "argument"
    if name is None:
        name, source = os.environ.get(ENV_VAR, "auto"), ENV_VAR
    key = name.strip().lower().replace("-", "_")
    if key == "auto":
        try:
            return _named("cupy", "auto: CuPy imported and a CUDA device passed the smoke test")
        except BackendUnavailable as exc:
            return _named("numpy", f"auto: fell back to NumPy because {exc}")
    if key not in ("numpy", "cupy", "array_api_strict"):
        where = f"{ENV_VAR}={name!r}" if source == ENV_VAR else f"backend {name!r}"
        raise BackendError(f"unknown {where}; valid backends are: {', '.join(VALID_NAMES)}")
    try:
        return _named(key, f"chosen by {source}")
    except BackendUnavailable as exc:
        raise BackendError(f"backend {key!r} was requested ({source}) but cannot be used: {exc}") from exc


def get_backend() -> Backend:
    """The active backend, chosen from ``$DCNN_BACKEND`` on first use."""
    global _active
    if _active is None:
        _active = resolve()
    return _active


def use(name: str | Backend) -> Backend:
    """Make ``name`` (or a Backend instance) the active backend and return it."""
    global _active
    _active = name if isinstance(name, Backend) else resolve(name)
    return _active


def backend_of(array) -> Backend:
    """The backend that owns ``array``; layers use it to find ``xp`` and the device."""
    candidates = [_active] if _active is not None else []
    candidates += [b for b in _instances.values() if b is not _active]
    for backend in candidates:
        if backend.owns(array):
            return backend
    for name in ("numpy", "cupy", "array_api_strict"):
        if name in _instances or name in _failures:
            continue
        try:
            backend = _named(name, "owner of an input array")
        except BackendUnavailable:
            continue
        if backend.owns(array):
            return backend
    raise TypeError(f"expected an array from numpy, cupy or array_api_strict, got {type(array).__name__}")


def available() -> list[str]:
    """Names of the backends that work on this machine."""
    names = []
    for name in ("numpy", "cupy"):
        try:
            _named(name, "probed")
            names.append(name)
        except BackendUnavailable:
            pass
    return names


__all__ = ["Backend", "BackendError", "BackendUnavailable", "ENV_VAR", "VALID_NAMES",
           "available", "backend_of", "get_backend", "resolve", "use"]
