"""Backend selection from DCNN_BACKEND, its errors, and moving models between backends."""
import os
import subprocess
import sys

import numpy as np
import pytest

import backends
from dcnn import Conv2D, DCNNetwork, Dense, Flatten, ReLU


def run_python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def cupy_usable():
    try:
        backends.resolve("cupy")
        return True
    except backends.BackendError:
        return False


@pytest.mark.parametrize("value", ["numpy", "NumPy", " numpy "])
def test_env_var_selects_numpy_case_insensitively(value):
    out = run_python("import backends; print(backends.get_backend().name)", DCNN_BACKEND=value)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy"


def test_unknown_backend_lists_valid_names():
    out = run_python("import dcnn, backends; backends.get_backend()", DCNN_BACKEND="tensorflow")
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "BackendError" in last and "'tensorflow'" in last
    for name in backends.VALID_NAMES:
        assert name in last


def test_unknown_backend_from_python():
    with pytest.raises(backends.BackendError, match="valid backends are: numpy, cupy, auto"):
        backends.use("jax")


@pytest.mark.skipif(cupy_usable(), reason="this machine has a usable GPU")
def test_explicit_cupy_without_gpu_says_why():
    with pytest.raises(backends.BackendError, match="'cupy' was requested .* cannot be used: CuPy"):
        backends.resolve("cupy")


@pytest.mark.skipif(cupy_usable(), reason="this machine has a usable GPU")
def test_auto_falls_back_to_numpy_with_a_reason():
    out = run_python("import backends; b = backends.get_backend(); print(b.name); print(b.reason)",
                     DCNN_BACKEND="auto")
    assert out.returncode == 0, out.stderr
    name, reason = out.stdout.strip().splitlines()
    assert name == "numpy" and "fell back to NumPy because" in reason


def test_importing_dcnn_writes_no_files_and_imports_no_cupy(tmp_path):
    code = ("import sys, dcnn, backends; print('cupy' in sys.modules)")
    out = run_python(code, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), DCNN_BACKEND="numpy")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert list(tmp_path.iterdir()) == []


def test_use_switches_backend(numpy_backend):
    previous = backends.get_backend()
    try:
        assert backends.use("numpy") is numpy_backend
        assert backends.get_backend().xp.__name__.endswith("numpy")
    finally:
        backends.use(previous)


def test_model_moves_between_backends_and_keeps_its_outputs(other_backend, numpy_backend, rng):
    net = DCNNetwork([Conv2D(3, 3), ReLU(), Flatten(), Dense(4)], input_shape=(1, 6, 6), backend=numpy_backend)
    net.compile("sgd", lr=0.1, momentum=0.9)
    x = rng.random((5, 1, 6, 6), dtype=np.float32)
    y = rng.integers(0, 4, 5)
    net.fit(x, y, epochs=1, batch_size=5, verbose=0)       # creates momentum buffers
    before = net.predict(x)
    net.to(other_backend)
    assert all(other_backend.owns(v) for v in net.model.state().values())
    np.testing.assert_allclose(net.predict(x), before, rtol=1e-5, atol=1e-6)
    net.fit(x, y, epochs=1, batch_size=5, verbose=0)       # and trains there
    net.to(numpy_backend)
    assert isinstance(net.model.state()["0.weight"], np.ndarray)


def test_same_seed_same_initial_weights_on_every_backend(other_backend, numpy_backend):
    layers = lambda: [Conv2D(3, 3), Flatten(), Dense(2)]
    a = DCNNetwork(layers(), input_shape=(2, 5, 5), seed=3, backend=numpy_backend).build().state_dict()
    b = DCNNetwork(layers(), input_shape=(2, 5, 5), seed=3, backend=other_backend).build().state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
