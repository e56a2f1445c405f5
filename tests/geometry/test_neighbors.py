"""Exact k-nearest neighbours: both backends against brute force on awkward point sets."""

import numpy as np
import pytest
import torch

from worldstereo.geometry.neighbors import knn_points


def _brute(q: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    d = np.linalg.norm(q[:, None] - p[None], axis=-1)
    return np.sort(np.partition(d, k - 1, axis=1)[:, :k], axis=1)


def _sets():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(0, 1, (1500, 2)), np.zeros(1500)]
    yield "uniform", rng.uniform(-1, 1, (2000, 3)), None, 5
    yield "plane+outliers", np.r_[plane, [[0.5, 0.5, 3.0], [5.0, 5.0, 5.0]]], None, 17
    yield "line, far queries", np.c_[rng.uniform(0, 1, (1500, 1)), np.zeros((1500, 2))], rng.normal(size=(300, 3)) * 4, 3
    yield "duplicates", np.r_[np.zeros((200, 3)), rng.normal(size=(60, 3))], None, 4
    yield "k = 1, other cloud", rng.normal(size=(2000, 3)), rng.normal(size=(700, 3)) * 3, 1
    yield "k = N", rng.normal(size=(9, 3)), rng.normal(size=(4, 3)), 9
    yield "large offset", rng.uniform(0, 1e-3, (500, 3)) + 1e4, None, 6


@pytest.mark.parametrize("backend", ["kdtree", "grid"])
def test_knn_matches_brute_force(backend):
    for name, P, Q, k in _sets():
        Q = P if Q is None else Q
        d, i = knn_points(torch.from_numpy(Q), torch.from_numpy(P), k, backend=backend)
        ref = _brute(Q, P, k)
        assert d.shape == (len(Q), k) and i.dtype == torch.int64, name
        np.testing.assert_allclose(d.numpy(), ref, rtol=1e-6, atol=1e-9, err_msg=name)
        # the indices point at points at those distances
        np.testing.assert_allclose(np.linalg.norm(P[i.numpy()] - Q[:, None], axis=-1), ref, rtol=1e-6, atol=1e-9,
                                   err_msg=name)


def test_knn_validates_its_input():
    p = torch.rand(5, 3)
    with pytest.raises(ValueError, match="k must be"):
        knn_points(p, p, 6)
    with pytest.raises(ValueError, match=r"\(M,3\)"):
        knn_points(p[:, :2], p, 1)
    with pytest.raises(ValueError, match="non-finite"):
        knn_points(torch.tensor([[float("nan"), 0, 0]]), p, 1)
    with pytest.raises(ValueError, match="backend"):
        knn_points(p, p, 1, backend="faiss")
