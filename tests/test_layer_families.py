"""The layer families of issue 20 against PyTorch, one test per layer (more random draws in
tests/test_random_oracle.py): forward, every gradient, buffers, three optimiser steps, in
float32 and float64; and their construction errors."""
import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is the oracle; install it with pip install -e '.[test]'")

from dcnn.layers.pooling import GlobalAvgPool2D  # noqa: E402
from torch_compare import compare_layers, compare_training  # noqa: E402

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_avg_pool(dtype, keepdims):
    compare_layers([GlobalAvgPool2D(keepdims=keepdims)], (3, 5, 4), dtype)
    assert GlobalAvgPool2D(keepdims=keepdims).output_shape((3, 5, 4)) == ((3, 1, 1) if keepdims else (3,))
    compare_training([GlobalAvgPool2D(keepdims=keepdims)], (3, 5, 4), dtype)


def test_global_avg_pool_keepdims_must_be_a_bool():
    with pytest.raises(ValueError, match="GlobalAvgPool2D: keepdims must be True or False"):
        GlobalAvgPool2D(keepdims="yes")
