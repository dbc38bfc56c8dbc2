"""Backend fixtures: one test body runs on every backend that works here.

``array_api_strict`` (on its non-default device) stands in for a GPU: it rejects
NumPy-only idioms and device mixing, so layer code that passes there is generic.
"""
import numpy as np
import pytest

import backends

ALL_BACKENDS = ("numpy", "array_api_strict", "cupy")


def _backend_or_skip(name):
    try:
        return backends.resolve(name)
    except backends.BackendError as exc:
        pytest.skip(f"{name} backend unavailable here: {exc}")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each available backend, made active for the test."""
    chosen = _backend_or_skip(request.param)
    previous = backends.get_backend()
    backends.use(chosen)
    yield chosen
    backends.use(previous)


@pytest.fixture(params=[b for b in ALL_BACKENDS if b != "numpy"])
def other_backend(request):
    """Backends compared against NumPy in the agreement tests."""
    return _backend_or_skip(request.param)


@pytest.fixture
def numpy_active(monkeypatch):
    """The NumPy backend made active for the test, and for the processes it starts (for the
    CPU-only parts: files, training jobs, the command line, MPI ranks)."""
    previous = backends.get_backend()
    backends.use("numpy")
    monkeypatch.setenv("DCNN_BACKEND", "numpy")
    yield backends.get_backend()
    backends.use(previous)


@pytest.fixture
def numpy_backend():
    return backends.resolve("numpy")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
