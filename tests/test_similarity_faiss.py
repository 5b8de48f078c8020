"""The faiss search path gives the same top-k as the numpy one (skipped without faiss)."""
from __future__ import annotations

import numpy as np
import pytest

from utils.retrieval import rank_topk
from utils.search import search

faiss = pytest.importorskip("faiss")


@pytest.mark.parametrize("method", ["cosine", "euclidean"])
def test_faiss_and_numpy_rank_alike(method):
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(500, 32)).astype(np.float32)
    query = rng.normal(size=32).astype(np.float32)
    idx, score = search(query, gallery, 10, method=method)
    ref_idx, ref_score = rank_topk(query, gallery, 10, method=method)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(score, ref_score, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(score) <= 1e-6)  # best first
