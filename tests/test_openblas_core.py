"""backends.openblas.corename: the kernels NumPy's OpenBLAS runs, as the backend's description names them."""
import os
import subprocess
import sys

import numpy as np
import pytest

from backends import openblas

pytestmark = pytest.mark.skipif(openblas.corename() is None, reason="NumPy is not linked to OpenBLAS")


def test_corename_is_the_core_numpys_openblas_reports():
    from threadpoolctl import threadpool_info
    reported = [i["architecture"] for i in threadpool_info() if i.get("internal_api") == "openblas"]
    assert openblas.corename() in reported


def test_openblas_coretype_decides_the_core_and_the_description_names_it():
    # A fresh process, since OpenBLAS reads OPENBLAS_CORETYPE once, as NumPy loads it.
    code = ("import backends; from backends import openblas; from backends.numpy_backend import NumpyBackend; "
            "print(openblas.corename()); print(backends.resolve('numpy').describe()); print(NumpyBackend('').describe())")
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", DCNN_BACKEND="numpy")
    core, *described = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                      check=True).stdout.splitlines()
    assert core == "Haswell"
    for describe in described:                  # the Numba backend's, and pure NumPy's
        assert describe.startswith(f"numpy {np.__version__}") and describe.endswith(", OpenBLAS Haswell)")
