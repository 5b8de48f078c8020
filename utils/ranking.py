"""How vectors rank a gallery, and how a ranking is scored: shared by training's
retrieval check (``utils/train``) and by retrieval (``utils/retrieval``). numpy only.

- :func:`similarity_matrix`, :func:`topk` (the one exact top-k; :func:`topk_blocks`
  streams a gallery too large for memory block by block), :func:`percentile_among`;
- the protocol of every evaluation: ``groups`` is a list of groups of drawing names
  (a groups file holds one as JSON: :func:`read_groups`)
  that people (or a revision generator) consider similar. Every drawing of a group
  with at least two members among ``names`` is a query; the other members of its
  group(s) are its positives; the gallery is all other ``n - 1`` drawings.
  :func:`retrieval_metrics` averages mAP (over the whole ranking), P@1, P@5, R@10,
  nDCG@10 and MRR over the queries; :func:`bootstrap_interval` and
  :func:`paired_interval` resample queries.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence

import numpy as np

Method = Literal["cosine", "euclidean"]
METRIC_KEYS = ("mAP", "P@1", "P@5", "R@10", "nDCG@10", "MRR")
_EXTENSIONS = re.compile(r"\.(dxf|h5|hdf5|npz)$", re.IGNORECASE)
_EPS = 1e-12


# -------------------------------------------------------------------- scores
def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x: [n, d]`` scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def similarity_matrix(a: np.ndarray, b: np.ndarray, method: Method = "cosine") -> np.ndarray:
    """Similarity of every row of ``a: [q, d]`` with every row of ``b: [n, d]`` -> float64 ``[q, n]``.

    cosine: dot product of L2-normalized rows; euclidean: minus the distance (larger is
    always more similar).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if method == "cosine":
        return l2_normalize(a) @ l2_normalize(b).T
    if method == "euclidean":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return -np.sqrt(np.maximum(sq, 0.0))
    raise ValueError(f"unknown similarity method {method!r}: use 'cosine' or 'euclidean'")


def topk_blocks(query: np.ndarray, blocks: Iterable[np.ndarray], k: int, method: Method = "cosine"
                ) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-``k`` of each query over a gallery given as consecutive row blocks.

    Args:
        query: ``[q, d]``.
        blocks: ``[n_b, d]`` arrays (e.g. memory-mapped shards); their rows are numbered
            consecutively, block after block.
        k: how many (clipped to the number of rows).
        method: ``cosine`` or ``euclidean`` (scores: minus the distance).
    Returns:
        ``(rows int64 [q, k'], scores float64 [q, k'])``, best first; ties keep row order.
    """
    q = np.atleast_2d(np.asarray(query, dtype=np.float64))
    best_r = np.zeros((len(q), 0), dtype=np.int64)
    best_s = np.zeros((len(q), 0), dtype=np.float64)
    base = 0
    for block in blocks:
        if len(block) == 0:
            continue
        s = similarity_matrix(q, block, method)
        take = min(k, s.shape[1])
        if take <= 0:
            break
        part = np.argpartition(-s, take - 1, axis=1)[:, :take] if take < s.shape[1] else \
            np.broadcast_to(np.arange(s.shape[1]), s.shape)
        cand_r = np.concatenate([best_r, part + base], axis=1)
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        order = np.lexsort((cand_r, -cand_s), axis=1)[:, :k]  # best score first, then lower row
        best_r = np.take_along_axis(cand_r, order, axis=1)
        best_s = np.take_along_axis(cand_s, order, axis=1)
        base += len(block)
    return best_r, best_s


def topk(query: np.ndarray, gallery: np.ndarray, k: int, method: Method = "cosine"
         ) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-``k`` gallery rows of ``query: [d]`` (or ``[q, d]``) among ``gallery: [n, d]``.

    Returns:
        ``(indices, scores)``, each ``[k']`` for one query or ``[q, k']``, best first,
        ``k' = min(k, n)``; euclidean scores are minus the distance.
    """
    single = np.ndim(query) == 1
    idx, scores = topk_blocks(np.atleast_2d(query), [np.asarray(gallery)], max(int(k), 0), method)
    if idx.shape[1] == 0:
        idx = np.zeros((idx.shape[0], 0), dtype=np.int64)
    return (idx[0], scores[0]) if single else (idx, scores)


def percentile_among(score: float, query: np.ndarray, reference: np.ndarray, method: Method = "cosine") -> float:
    """Where ``score`` falls among the scores of ``query: [d]`` with every row of
    ``reference: [m, d]``: the percentage of reference rows scoring strictly lower
    (ties count half). NaN for an empty reference."""
    if len(reference) == 0:
        return float("nan")
    return percentile_of(score, similarity_matrix(np.atleast_2d(query), reference, method)[0])


def percentile_of(score: float, scores: np.ndarray) -> float:
    """:func:`percentile_among` from the reference's ``scores: [m]`` already computed (one
    query's scores, reused for each of its matches). NaN when ``scores`` is empty."""
    if len(scores) == 0:
        return float("nan")
    below = float((scores < score - 1e-9).sum()) + 0.5 * float((np.abs(scores - score) <= 1e-9).sum())
    return 100.0 * below / len(scores)


# --------------------------------------------------------------------- names
def normalize_name(name: str) -> str:
    """A drawing name without a ``.dxf`` / ``.h5`` / ``.npz`` extension or folder."""
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    return _EXTENSIONS.sub("", name)


def _name_index(names: Sequence[str]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Exact normalized name -> index, and last ``__`` component -> indices (for names
    that preprocessing prefixed with their sub-folder, ``sub__stem``)."""
    exact: dict[str, int] = {}
    tail: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        norm = normalize_name(n)
        if norm in exact:
            raise ValueError(f"drawing name {norm!r} appears twice in the gallery")
        exact[norm] = i
        tail.setdefault(norm.rsplit("__", 1)[-1], []).append(i)
    return exact, tail


def resolve_groups(names: Sequence[str], groups: Iterable[Iterable[str]]) -> tuple[list[list[int]], list[str]]:
    """Map groups of names to groups of indices into ``names`` (a member may be given by
    its bare stem when that is unique among the ``sub__stem`` names).

    Returns:
        (index groups, names of group members not found among ``names``).
    """
    exact, tail = _name_index(names)
    out: list[list[int]] = []
    missing: list[str] = []
    for group in groups:
        idx: list[int] = []
        for member in group:
            norm = normalize_name(member)
            if norm in exact:
                idx.append(exact[norm])
            elif len(tail.get(norm, [])) == 1:
                idx.append(tail[norm][0])
            else:
                missing.append(norm)
        out.append(sorted(set(idx)))
    return out, missing


class GroupsError(ValueError):
    """A groups file that cannot be used (missing, not JSON, not a list of lists of names)."""


def read_groups(path: str | Path) -> list[list[str]]:
    """A JSON list of groups of similar drawing names, e.g. ``[["a", "b"], ["c", "d"]]``.

    Raises:
        GroupsError: the file is missing or does not hold such a list (the message says which).
    """
    p = Path(path)
    if not p.is_file():
        raise GroupsError(f"no groups file at {p}: give a JSON list of groups of drawing names")
    try:
        groups = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise GroupsError(f"{p} is not valid JSON ({err}): expected a list of groups of drawing names") from err
    if not isinstance(groups, list) or not all(isinstance(g, list) and all(isinstance(n, str) for n in g)
                                               for g in groups):
        raise GroupsError(f"{p} must hold a JSON list of lists of drawing names, e.g. [[\"a\", \"b\"], [\"c\", \"d\"]]")
    return groups


# ------------------------------------------------------------------- metrics
def _ranked_relevance(sim: np.ndarray, positives: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Relevance of the gallery in ranked order: ``sim [q, n]`` similarities of the query
    rows with every drawing, ``positives [q, n]`` bool, ``queries [q]`` the query drawings
    (left out of their own gallery) -> bool ``[q, n - 1]`` (ties broken by index)."""
    s = np.array(sim, dtype=np.float64)
    s[np.arange(len(queries)), queries] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :-1]  # the query itself is last
    return np.take_along_axis(positives, order, axis=1)


def metrics_from_relevance(rel: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query metrics from ranked binary relevance ``rel: [q, m]`` (every query has at
    least one positive in its row): ``AP`` over the whole ranking, ``P@1``, ``P@5``,
    ``R@10``, ``nDCG@10``, ``RR``; arrays ``[q]``."""
    rel = rel.astype(np.float64)
    q, m = rel.shape
    n_pos = rel.sum(1)
    ranks = np.arange(1, m + 1, dtype=np.float64)
    hits = np.cumsum(rel, axis=1)
    ap = (hits / ranks * rel).sum(1) / n_pos
    discounts = 1.0 / np.log2(ranks[: min(10, m)] + 1.0)
    dcg = (rel[:, :10] * discounts).sum(1)
    ideal = np.array([discounts[: int(min(p, 10))].sum() for p in n_pos])
    first = np.argmax(rel > 0, axis=1)
    return {"AP": ap, "P@1": rel[:, :1].sum(1), "P@5": rel[:, :5].sum(1) / 5.0, "R@10": rel[:, :10].sum(1) / n_pos,
            "nDCG@10": dcg / ideal, "RR": 1.0 / (first + 1.0)}


def retrieval_metrics(embeddings: np.ndarray, names: Sequence[str], groups: Iterable[Iterable[str]],
                      method: Method = "cosine") -> dict:
    """Retrieval quality of ``embeddings: [n, d]`` against groups of similar drawings (the
    protocol of this module's docstring). Names may carry ``.dxf``/``.h5`` extensions.

    Returns:
        ``mAP, P@1, P@5, R@10, nDCG@10, MRR`` (means over queries), ``n_queries``,
        ``n_gallery``, ``queries`` (names), ``per_query_ap`` and ``per_query`` (per-query
        lists of every metric), ``missing`` (group members not found).
    Raises:
        ValueError: a shape that does not match ``names``, or NaN/inf in an embedding.
    """
    emb = np.asarray(embeddings)
    names = list(names)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise ValueError(f"embeddings must be [n, d] with n = len(names) = {len(names)}, got {emb.shape}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} embedding(s) contain NaN/inf, e.g. {names[int(np.argmax(bad))]!r}")
    idx_groups, missing = resolve_groups(names, groups)
    positives: dict[int, set[int]] = {}
    for g in idx_groups:
        if len(g) >= 2:
            for i in g:
                positives.setdefault(i, set()).update(j for j in g if j != i)
    queries = np.array(sorted(positives), dtype=np.int64)
    result: dict = {"n_queries": int(len(queries)), "n_gallery": len(names), "missing": missing}
    if len(queries) == 0:
        result.update({k: float("nan") for k in METRIC_KEYS})
        result.update({"queries": [], "per_query_ap": [], "per_query": {}})
        return result
    pos = np.zeros((len(queries), len(names)), dtype=bool)
    for row, qi in enumerate(queries):
        pos[row, list(positives[int(qi)])] = True
    per = metrics_from_relevance(_ranked_relevance(similarity_matrix(emb[queries], emb, method), pos, queries))
    renamed = {"mAP": per["AP"], "P@1": per["P@1"], "P@5": per["P@5"], "R@10": per["R@10"],
               "nDCG@10": per["nDCG@10"], "MRR": per["RR"]}
    result.update({k: float(v.mean()) for k, v in renamed.items()})
    result["queries"] = [names[i] for i in queries]
    result["per_query_ap"] = per["AP"].tolist()
    result["per_query"] = {k: v.tolist() for k, v in renamed.items()}
    return result


def bootstrap_interval(values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                       clusters: Optional[Sequence[int]] = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling queries);
    NaN, NaN when empty.

    ``clusters``: [n] an id per value (e.g. its query's group): whole clusters are resampled
    and each draw's mean is taken over the values it holds (a cluster bootstrap), since the
    queries of one group succeed or fail together and resampling them one by one gives too
    narrow an interval."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if clusters is None:
        means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    else:
        _, ids = np.unique(np.asarray(clusters), return_inverse=True)
        sums = np.bincount(ids, weights=v)  # [k] per cluster
        sizes = np.bincount(ids).astype(np.float64)
        draw = rng.integers(0, len(sizes), size=(n_boot, len(sizes)))
        means = sums[draw].sum(1) / sizes[draw].sum(1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_interval(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05, clusters: Optional[Sequence[int]] = None) -> tuple[float, float]:
    """Bootstrap interval of the mean per-query difference ``a - b`` (the same queries in
    the same order, e.g. two embeddings' ``per_query_ap``); NaN, NaN when they differ in length.

    ``clusters``: [n] an id per query (e.g. its group): whole clusters are resampled
    (:func:`bootstrap_interval`)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or a.shape != b.shape:
        return float("nan"), float("nan")
    return bootstrap_interval(a - b, n_boot, seed, alpha, clusters)


def query_clusters(queries: Sequence[str], groups: Sequence[Sequence[str]]) -> np.ndarray:
    """[len(queries)] int: the index of the first group of ``groups`` that holds each query
    (``retrieval_metrics``' ``queries``; members matched as :func:`resolve_groups` matches
    them), the cluster of :func:`paired_interval`; a query in no group is a cluster alone."""
    out = -1 - np.arange(len(queries), dtype=np.int64)
    index_groups, _ = resolve_groups(queries, groups)
    for k in range(len(index_groups) - 1, -1, -1):  # the first group that holds a query wins
        out[np.asarray(index_groups[k], dtype=np.int64)] = k
    return out


def best_by_map(rows: Sequence[tuple[str, Optional[dict]]]) -> Optional[tuple[str, dict]]:
    """The ``(label, metrics)`` with the highest finite mAP among ``rows`` (None entries and
    NaN skipped); None when there is none."""
    best: Optional[tuple[str, dict]] = None
    for label, m in rows:
        if m is None or not np.isfinite(m.get("mAP", np.nan)):
            continue
        if best is None or m["mAP"] > best[1]["mAP"]:
            best = (label, m)
    return best


__all__ = ["Method", "METRIC_KEYS", "GroupsError", "read_groups", "l2_normalize", "similarity_matrix", "topk",
           "topk_blocks", "percentile_among", "percentile_of", "normalize_name", "resolve_groups",
           "metrics_from_relevance", "retrieval_metrics", "bootstrap_interval", "paired_interval", "query_clusters",
           "best_by_map"]
