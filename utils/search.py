"""Top-k search over a gallery of embeddings: faiss when installed, numpy otherwise.

Both give the same ranking (``tests/test_similarity_faiss.py``); faiss is faster on
large galleries. Scores are cosine similarities, or minus the euclidean distance, so
that larger is always more similar.
"""
from __future__ import annotations

import numpy as np

from utils.retrieval import Method, rank_topk, similarity_matrix


def search(query: np.ndarray, gallery: np.ndarray, k: int, method: Method = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``query: [d]`` among ``gallery: [n, d]``, best first.

    faiss (exact inner product on normalized rows, or L2) when installed, numpy
    (``utils.retrieval.rank_topk``) otherwise.

    Returns:
        ``(idx [k], score [k])`` with ``k`` clipped to ``n``; euclidean scores are minus the distance.
    """
    try:
        import faiss  # type: ignore
    except ImportError:
        faiss = None
    if faiss is None or len(gallery) == 0:
        return rank_topk(query, gallery, k, method=method)
    q = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
    g = np.ascontiguousarray(gallery, dtype=np.float32)
    k = min(k, len(g))
    if method == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        index = faiss.IndexFlatIP(g.shape[1])
        index.add(g)
        scores, idx = index.search(q, k)
        return idx[0].astype(np.int64), scores[0].astype(np.float64)
    index = faiss.IndexFlatL2(g.shape[1])
    index.add(g)
    sq, idx = index.search(q, k)
    return idx[0].astype(np.int64), -np.sqrt(np.maximum(sq[0], 0.0)).astype(np.float64)


def percentile_among(score: float, query: np.ndarray, reference: np.ndarray, method: Method = "cosine") -> float:
    """Where ``score`` falls among the scores of ``query: [d]`` with every row of
    ``reference: [m, d]``: the percentage of reference rows scoring strictly lower
    (ties count half). NaN for an empty reference."""
    if len(reference) == 0:
        return float("nan")
    s = similarity_matrix(np.atleast_2d(query), reference, method)[0]
    below = float((s < score - 1e-9).sum()) + 0.5 * float((np.abs(s - score) <= 1e-9).sum())
    return 100.0 * below / len(s)


__all__ = ["search", "percentile_among"]
