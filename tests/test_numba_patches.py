"""The Numba patch-row kernels (im2col_rows, col2im_rows) against NumPy references, bit for bit:
every convolution's forward and backward reads its patch rows from them, in bands that cross
image borders, with padding, strides and a bias column of ones."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")
from backends import numba_kernels as kernels  # noqa: E402

CASES = [  # n, h, w, c, k, stride, pad, ones
    (2, 7, 9, 3, 3, 1, 1, False), (3, 8, 8, 5, 3, 2, 1, True), (2, 6, 5, 4, 5, 1, 2, True),
    (2, 9, 7, 1, 3, 2, 0, False), (1, 5, 5, 2, 1, 1, 0, True), (2, 6, 6, 3, 2, 2, 0, False),
    (2, 4, 4, 3, 3, 1, 2, False), (2, 3, 11, 16, 3, 1, 1, False),
]


def patch_matrix(x, k, stride, pad, ones):
    """NumPy's patch matrix: row (b, y, x), column (i, j, c), from sliding windows of the padded input."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * c)      # (b, y, x), (i, j, c)
    return np.concatenate([cols, np.ones((len(cols), 1), x.dtype)], axis=1) if ones else cols


def spans(rows):
    return [(0, rows), (3, rows - 2), (rows // 3, rows // 3 + 5)]


@pytest.mark.parametrize("n, h, w, c, k, stride, pad, ones", CASES)
def test_patch_rows_are_numpys_patch_matrix(n, h, w, c, k, stride, pad, ones):
    x = np.random.default_rng(1).standard_normal((n, h, w, c), dtype=np.float32)
    expected = patch_matrix(x, k, stride, pad, ones)
    for r0, r1 in spans(len(expected)):
        out = np.full((r1 - r0, expected.shape[1]), np.nan, np.float32)
        kernels.im2col_rows(x, k, stride, pad, ones, out, r0, r1)
        np.testing.assert_array_equal(out, expected[r0:r1])


@pytest.mark.parametrize("n, h, w, c, k, stride, pad, ones", CASES)
def test_patch_row_gradients_add_into_place_in_row_order(n, h, w, c, k, stride, pad, ones):
    """col2im_rows adds each row's terms in row order: np.add.at over the same (row, column) order."""
    rng = np.random.default_rng(2)
    dx0 = rng.standard_normal((n, h, w, c), dtype=np.float32)
    # Where each patch-matrix entry comes from, as flat indices of the padded input.
    padded_index = np.arange(n * (h + 2 * pad) * (w + 2 * pad) * c).reshape(n, h + 2 * pad, w + 2 * pad, c)
    source = patch_matrix(padded_index, k, stride, 0, False)
    inside = np.pad(np.ones((n, h, w, c), bool), ((0, 0), (pad, pad), (pad, pad), (0, 0))).reshape(-1)
    to_dx = np.full(inside.size, -1)
    to_dx[inside] = np.arange(dx0.size)
    for r0, r1 in spans(len(source)):
        dcols = rng.standard_normal((r1 - r0, source.shape[1]), dtype=np.float32)
        target = to_dx[source[r0:r1]]
        expected = dx0.reshape(-1).copy()
        keep = target >= 0                                  # the padding takes nothing back
        np.add.at(expected, target[keep], dcols[keep])      # row-major: row by row, as the kernel adds
        got = dx0.copy()
        kernels.col2im_rows(dcols, k, stride, pad, got, r0, r1)
        np.testing.assert_array_equal(got.reshape(-1), expected)
