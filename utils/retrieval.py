"""Retrieval quality: the judge of every model, and the non-learned floors.

Protocol: ``groups`` is a list of
groups of drawing names that people consider similar. Every drawing of a group
with at least two members (present among ``names``) is a query; the other members
of its group(s) are its positives; the gallery is all other ``n - 1`` drawings
(group members and distractors). Metrics are averaged over the queries.

Floors: every evaluation prints, beside a model, the embeddings a model must beat:
random vectors, the entity-type histogram ``log(1 + count)``, the raw GF matrices
(features + adjacency, flattened), their standardized concatenation, and the
layout-aware counts of :mod:`utils.floors` (a per-type spatial grid and its
rotation-robust form). The strongest floor is named as the one to beat
(:func:`compare_table`).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

Method = Literal["cosine", "euclidean"]
_EXTENSIONS = re.compile(r"\.(dxf|h5|hdf5|npz)$", re.IGNORECASE)
_EPS = 1e-12
METRIC_KEYS = ("mAP", "P@1", "P@5", "R@10", "nDCG@10", "MRR")


# --------------------------------------------------------------------- names
def normalize_name(name: str) -> str:
    """A drawing name without a ``.dxf`` / ``.h5`` / ``.npz`` extension or folder."""
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    return _EXTENSIONS.sub("", name)


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
    """Map groups of names to groups of indices into ``names``.

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


# -------------------------------------------------------------------- scores
def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x: [n, d]`` scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def similarity_matrix(a: np.ndarray, b: np.ndarray, method: Method = "cosine") -> np.ndarray:
    """Similarity of every row of ``a: [q, d]`` with every row of ``b: [n, d]`` -> ``[q, n]``.

    cosine: dot product of L2-normalized rows; euclidean: minus the distance.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if method == "cosine":
        return l2_normalize(a) @ l2_normalize(b).T
    if method == "euclidean":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return -np.sqrt(np.maximum(sq, 0.0))
    raise ValueError(f"unknown similarity method {method!r}: use 'cosine' or 'euclidean'")


def rank_topk(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    k: int,
    method: Method = "cosine",
    gallery_normalized: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar gallery rows of each query, best first.

    Args:
        query_emb: ``[d]`` or ``[q, d]``.
        gallery_emb: ``[n, d]`` (float32 is fastest).
        k: how many (clipped to ``n``).
        method: ``cosine`` or ``euclidean``.
        gallery_normalized: the gallery rows are already unit length (cosine only):
            skips normalizing ``n`` rows per call.
    Returns:
        ``(indices, scores)``, each ``[k]`` for one query or ``[q, k]``.
    """
    single = np.ndim(query_emb) == 1
    q = np.atleast_2d(np.asarray(query_emb, dtype=np.float32))
    g = np.asarray(gallery_emb)
    if g.dtype != np.float32 and g.dtype != np.float64:
        g = g.astype(np.float32)
    n = g.shape[0]
    k = int(min(max(k, 0), n))
    if method == "cosine":
        qn = l2_normalize(q).astype(g.dtype, copy=False)
        scores = qn @ g.T
        if not gallery_normalized:  # divide by the row norms instead of copying the gallery
            scores /= np.maximum(np.sqrt(np.einsum("nd,nd->n", g, g)), _EPS)[None, :]
    elif method == "euclidean":
        g_sq = np.einsum("nd,nd->n", g, g)
        sq = (q * q).sum(1)[:, None] + g_sq[None, :] - 2.0 * (q.astype(g.dtype) @ g.T)
        scores = -np.sqrt(np.maximum(sq, 0.0))
    else:
        raise ValueError(f"unknown similarity method {method!r}: use 'cosine' or 'euclidean'")
    if k == 0:
        empty = np.zeros((q.shape[0], 0))
        return (empty.astype(np.int64)[0], empty[0]) if single else (empty.astype(np.int64), empty)
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), (q.shape[0], n))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    top = np.take_along_axis(part_scores, order, axis=1)
    return (idx[0], top[0]) if single else (idx, top)


# ------------------------------------------------------------------- metrics
def _ranked_relevance(sim: np.ndarray, positives: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Relevance of the gallery in ranked order.

    Args:
        sim: ``[q, n]`` similarities of the query rows with every drawing.
        positives: ``[q, n]`` bool, True where a drawing is a positive of the query.
        queries: ``[q]`` indices of the query drawings (excluded from their gallery).
    Returns:
        ``[q, n - 1]`` bool: relevance of rank 1, 2, ... (ties broken by index).
    """
    s = np.array(sim, dtype=np.float64)
    s[np.arange(len(queries)), queries] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :-1]  # the query itself is last
    return np.take_along_axis(positives, order, axis=1)


def metrics_from_relevance(rel: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query metrics from ranked binary relevance ``rel: [q, m]`` (every query
    has at least one positive in its row). Returns arrays ``[q]`` per metric."""
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
    return {
        "AP": ap,
        "P@1": rel[:, :1].sum(1) / 1.0,
        "P@5": rel[:, :5].sum(1) / 5.0,
        "R@10": rel[:, :10].sum(1) / n_pos,
        "nDCG@10": dcg / ideal,
        "RR": 1.0 / (first + 1.0),
    }


def retrieval_metrics(
    embeddings: np.ndarray,
    names: Sequence[str],
    groups: Iterable[Iterable[str]],
    method: Method = "cosine",
) -> dict:
    """Retrieval quality of ``embeddings: [n, d]`` against groups of similar drawings.

    Every drawing in a group with >= 2 members present among ``names`` is a query;
    the other members of its group(s) are its positives; the gallery is the other
    ``n - 1`` drawings. Names may carry ``.dxf``/``.h5`` extensions.

    Returns:
        ``mAP, P@1, P@5, R@10, nDCG@10, MRR`` (means over queries), ``n_queries``,
        ``n_gallery``, ``queries`` (names), ``per_query_ap`` and ``per_query``
        (dict of per-query lists for every metric), ``missing`` (group members
        not found).
    """
    emb = np.asarray(embeddings)
    names = list(names)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise ValueError(f"embeddings must be [n, d] with n = len(names) = {len(names)}, got {emb.shape}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} embedding(s) contain NaN/inf, e.g. {names[int(np.argmax(bad))]!r}"
        )
    idx_groups, missing = resolve_groups(names, groups)
    n = len(names)
    positives: dict[int, set[int]] = {}
    for g in idx_groups:
        if len(g) < 2:
            continue
        for i in g:
            positives.setdefault(i, set()).update(j for j in g if j != i)
    queries = np.array(sorted(positives), dtype=np.int64)
    result: dict = {"n_queries": int(len(queries)), "n_gallery": n, "missing": missing}
    if len(queries) == 0:
        result.update({k: float("nan") for k in METRIC_KEYS})
        result.update({"queries": [], "per_query_ap": [], "per_query": {}})
        return result
    pos = np.zeros((len(queries), n), dtype=bool)
    for row, qi in enumerate(queries):
        pos[row, list(positives[int(qi)])] = True
    sim = similarity_matrix(emb[queries], emb, method)  # query rows only: [q, n]
    rel = _ranked_relevance(sim, pos, queries)
    per = metrics_from_relevance(rel)
    renamed = {"mAP": per["AP"], "P@1": per["P@1"], "P@5": per["P@5"], "R@10": per["R@10"],
               "nDCG@10": per["nDCG@10"], "MRR": per["RR"]}
    result.update({k: float(v.mean()) for k, v in renamed.items()})
    result["queries"] = [names[i] for i in queries]
    result["per_query_ap"] = per["AP"].tolist()
    result["per_query"] = {k: v.tolist() for k, v in renamed.items()}
    return result


def bootstrap_interval(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling queries)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# -------------------------------------------------------------------- floors
def histogram_embedding(type_counts: np.ndarray) -> np.ndarray:
    """``log(1 + count)`` of each entity type: ``type_counts [n, 12]`` -> ``[n, 12]``."""
    return np.log1p(np.asarray(type_counts, dtype=np.float64))


def raw_gf_embedding(features: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """The raw GF matrices flattened: ``features [n, 10, 11]``, ``adjacency [n, 10, 10]``
    -> ``[n, 210]``."""
    f = np.asarray(features, dtype=np.float64)
    a = np.asarray(adjacency, dtype=np.float64)
    return np.concatenate([f.reshape(len(f), -1), a.reshape(len(a), -1)], axis=1)


def standardize_blocks(blocks: Sequence[np.ndarray], fit_rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Concatenate blocks ``[n, d_b]`` after z-scoring each column (mean/std from
    ``fit_rows``, default all rows; zero std -> 1) and L2-normalizing each block's rows.

    Returns:
        ``[n, sum d_b]``; each block has equal weight in a cosine similarity.
    """
    out = []
    for block in blocks:
        b = np.asarray(block, dtype=np.float64)
        out.append(zscore_l2(b, b if fit_rows is None else b[np.asarray(fit_rows)]))
    return np.concatenate(out, axis=1)


def zscore_l2(block: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """One floor block made comparable: each column of ``block: [n, d]`` z-scored with the
    mean/std of ``reference: [m, d]`` (zero std -> 1; None: not z-scored), then each row
    L2-normalized. float64 ``[n, d]``; the one step every standardized floor shares."""
    x = np.asarray(block, dtype=np.float64)
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        std = ref.std(0)
        x = (x - ref.mean(0)) / np.where(std > _EPS, std, 1.0)
    return l2_normalize(x)


def random_embedding(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian vectors ``[n, dim]``: the chance level."""
    return np.random.default_rng(seed).standard_normal((n, dim))


# ---------------------------------------------------------------------- data
def load_encodings(data_dir: str | Path) -> dict:
    """The encodings of every drawing present in both ``data_dir/GF/*.npz`` and
    ``data_dir/DeepDXF/*.h5``, sorted by name.

    Returns:
        ``names`` (list[str]), ``type_counts`` int64 ``[n, 12]`` (HDF5 attribute),
        ``gf_features`` float32 ``[n, 10, 11]``, ``gf_adjacency`` float32 ``[n, 10, 10]``,
        ``counts`` int64 ``[n, 10]`` (GF entities per class), ``layout`` int32
        ``[n, 12, 8, 8]`` (entities per type and grid cell, :func:`utils.floors.layout_grid`).
    """
    from dataset.dxf_process_DeepDXF import load_h5
    from dataset.dxf_process_GF import load_gf
    from utils.floors import layout_grid

    root = Path(data_dir)
    gf = {p.stem: p for p in (root / "GF").glob("*.npz")}
    dd = {p.stem: p for p in (root / "DeepDXF").glob("*.h5")}
    names = sorted(set(gf) & set(dd))
    if not names:
        raise FileNotFoundError(
            f"no drawing with both {root / 'GF'}/*.npz and {root / 'DeepDXF'}/*.h5: "
            f"run python dataset/dxf_process.py --output {root} first"
        )
    feats, adjs, counts, types, layouts = [], [], [], [], []
    for name in names:
        g = load_gf(gf[name])
        feats.append(g["features"])
        adjs.append(g["adjacency"])
        counts.append(g["counts"])
        rows, attrs = load_h5(dd[name])
        types.append(np.asarray(attrs["type_counts"], dtype=np.int64))
        layouts.append(layout_grid(rows))
    return {
        "names": names,
        "type_counts": np.stack(types),
        "gf_features": np.stack(feats).astype(np.float32),
        "gf_adjacency": np.stack(adjs).astype(np.float32),
        "counts": np.stack(counts).astype(np.int64),
        "layout": np.stack(layouts),
    }


# ------------------------------------------------------------- floor table
FLOOR_HIST = "entity-type histogram log(1+count)"
FLOOR_RAW_GF = "raw GF matrices"
FLOOR_STD = "standardized histogram + raw GF"
FLOOR_LAYOUT = "layout: entity types on an 8x8 grid"
FLOOR_LAYOUT_ROT = "layout, rotation-robust (grid pooled over 90° turns and flips)"
RANDOM_LABEL = "random vectors"


def floor_embeddings(enc: dict, fit_rows: Sequence[int] | None = None) -> dict[str, np.ndarray | None]:
    """The non-learned embeddings of a set of drawings (random excluded).

    Args:
        enc: ``type_counts [n, 12]``; optional ``gf_features [n, 10, 11]`` and
            ``gf_adjacency [n, 10, 10]`` with ``has_gf [n]`` (all present when absent),
            optional ``layout [n, 12, G, G]``.
        fit_rows: rows whose statistics z-score the standardized floors (default all).
    Returns:
        label -> ``[n, d]``, or None where ``enc`` lacks what the floor needs.
    """
    from utils.floors import layout_embedding, layout_rot_embedding

    hist = histogram_embedding(enc["type_counts"])
    out: dict[str, np.ndarray | None] = {FLOOR_HIST: hist, FLOOR_RAW_GF: None, FLOOR_STD: None}
    has_gf = np.asarray(enc.get("has_gf", np.ones(len(hist), dtype=bool))).astype(bool)
    if "gf_features" in enc and has_gf.all():
        raw = raw_gf_embedding(enc["gf_features"], enc["gf_adjacency"])
        out[FLOOR_RAW_GF] = raw
        out[FLOOR_STD] = standardize_blocks([hist, raw], fit_rows)
    if enc.get("layout") is not None:
        out[FLOOR_LAYOUT] = standardize_blocks([layout_embedding(enc["layout"])], fit_rows)
        out[FLOOR_LAYOUT_ROT] = standardize_blocks([layout_rot_embedding(enc["layout"])], fit_rows)
    else:
        out[FLOOR_LAYOUT] = out[FLOOR_LAYOUT_ROT] = None
    return out


def _random_floor(names: Sequence[str], groups: list[list[str]], method: Method, seed: int,
                  n_random: int) -> dict:
    """Metrics of seeded random vectors, averaged over ``n_random`` draws (the chance level)."""
    runs = [retrieval_metrics(random_embedding(len(names), 64, seed + i), names, groups, method)
            for i in range(max(n_random, 1))]
    rand = dict(runs[0])
    for k in METRIC_KEYS:
        rand[k] = float(np.mean([r[k] for r in runs]))
    if runs[0]["n_queries"]:
        rand["per_query_ap"] = np.mean([r["per_query_ap"] for r in runs], axis=0).tolist()
        rand["per_query"] = {k: np.mean([r["per_query"][k] for r in runs], axis=0).tolist()
                             for k in runs[0]["per_query"]}
    return rand


def floor_table(
    enc: dict,
    groups: Iterable[Iterable[str]],
    method: Method = "cosine",
    seed: int = 0,
    n_random: int = 20,
    fit_rows: Sequence[int] | None = None,
) -> list[tuple[str, dict | None]]:
    """Metrics of the floors over the drawings ``enc["names"]``: random vectors (mean of
    ``n_random`` seeded draws), then every :func:`floor_embeddings` entry (None: n/a,
    the label says why)."""
    groups = [list(g) for g in groups]
    names = list(enc["names"])
    label = RANDOM_LABEL + (f" (chance, mean of {n_random} draws)" if n_random > 1 else "")
    table: list[tuple[str, dict | None]] = [(label, _random_floor(names, groups, method, seed, n_random))]
    has_gf = np.asarray(enc.get("has_gf", np.ones(len(names), dtype=bool))).astype(bool)
    for label, emb in floor_embeddings(enc, fit_rows).items():
        if emb is not None:
            table.append((label, retrieval_metrics(emb, names, groups, method)))
        elif label in (FLOOR_RAW_GF, FLOOR_STD):
            table.append((f"{label} (n/a: {int((~has_gf).sum())} .h5 drawings without GF twin)", None))
        else:
            table.append((f"{label} (n/a: no DeepDXF rows)", None))
    return table


def format_table(rows: Sequence[tuple[str, dict | None]], n_boot: int = 1000, seed: int = 0) -> str:
    """A markdown table: embedding | mAP | 95% CI (mAP) | P@1 | P@5 | R@10 | nDCG@10 | MRR
    (a row with metrics None reads n/a)."""
    lines = ["| embedding | mAP | 95% CI (mAP) | P@1 | P@5 | R@10 | nDCG@10 | MRR |",
             "|---|---|---|---|---|---|---|---|"]
    for label, m in rows:
        if m is None:
            lines.append(f"| {label} | n/a |  |  |  |  |  |  |")
            continue
        lo, hi = bootstrap_interval(m.get("per_query_ap", []), n_boot=n_boot, seed=seed)
        ci = "–" if math.isnan(lo) else f"{lo:.3f}–{hi:.3f}"
        vals = " | ".join(f"{m[k]:.3f}" for k in METRIC_KEYS if k != "mAP")
        lines.append(f"| {label} | {m['mAP']:.3f} | {ci} | {vals} |")
    return "\n".join(lines)


def strongest_floor(rows: Sequence[tuple[str, dict | None]]) -> tuple[str, dict] | None:
    """The floor with the highest mAP among ``floor_table`` rows (random vectors left
    out); None when no floor could be computed."""
    best: tuple[str, dict] | None = None
    for label, m in rows:
        if m is None or label.startswith(RANDOM_LABEL) or math.isnan(m["mAP"]):
            continue
        if best is None or m["mAP"] > best[1]["mAP"]:
            best = (label, m)
    return best


def verdict_lines(models: Sequence[tuple[str, dict | None]], floors: Sequence[tuple[str, dict | None]],
                  n_boot: int = 1000, seed: int = 0) -> list[str]:
    """Plain sentences under a table: the floor to beat, and whether each model beats it."""
    best = strongest_floor(floors)
    if best is None:
        return ["no floor could be computed: nothing to compare with"]
    label, fm = best
    lo, hi = bootstrap_interval(fm.get("per_query_ap", []), n_boot=n_boot, seed=seed)
    lines = [f"the floor to beat: {label} (mAP {fm['mAP']:.3f})"]
    for mlabel, m in models:
        if m is None:
            continue
        diff = m["mAP"] - fm["mAP"]
        noise = "" if math.isnan(lo) or not (lo <= m["mAP"] <= hi) else \
            " (within the floor's 95% interval: not a clear difference)"
        if diff > 0:
            lines.append(f"{mlabel}: beats the floor to beat by {diff:+.3f} mAP{noise}")
        else:
            lines.append(f"{mlabel}: does NOT beat the floor to beat ({m['mAP']:.3f} vs {fm['mAP']:.3f} mAP)"
                         f"{noise}; the non-learned {label} retrieves at least as well")
    return lines


def compare_table(
    models: Sequence[tuple[str, np.ndarray | None]],
    enc: dict,
    groups: Iterable[Iterable[str]],
    method: Method = "cosine",
    n_boot: int = 1000,
    seed: int = 0,
    n_random: int = 10,
    fit_rows: Sequence[int] | None = None,
    floor_prefix: str = "floor: ",
) -> tuple[str, list[tuple[str, dict | None]]]:
    """The one evaluation table: each model's embedding ``(label, [n, D] or None for n/a)``
    beside every floor, then the floor to beat and a verdict per model.

    Args:
        models: embeddings of the drawings ``enc["names"]`` in that order.
        enc: encodings as :func:`floor_embeddings` takes them, with ``names``.
        fit_rows: rows whose statistics z-score the floors; default: drawings in no group
            (the unlabelled part of the gallery) when there are at least 2, else all.
    Returns:
        ``(text, rows)``: the table with its header and verdict lines, and the rows.
    Raises:
        ValueError: no group has two members among the names.
    """
    groups = [list(g) for g in groups]
    names = list(enc["names"])
    if fit_rows is None:
        labelled = {normalize_name(n) for g in groups for n in g}
        unlabelled = [i for i, n in enumerate(names) if normalize_name(n) not in labelled]
        fit_rows = unlabelled if len(unlabelled) >= 2 else None
    model_rows = [(label, None if emb is None else retrieval_metrics(emb, names, groups, method))
                  for label, emb in models]
    floors = floor_table(enc, groups, method, seed, n_random, fit_rows)
    verdicts = verdict_lines(model_rows, floors, n_boot, seed)
    floors = [(label if label.startswith(RANDOM_LABEL) else floor_prefix + label, m) for label, m in floors]
    first = floors[0][1]
    if first["n_queries"] == 0:
        raise ValueError("no group has two members in the gallery: nothing to evaluate "
                         "(are the names in the groups file the gallery's drawing names?)")
    rows = model_rows + floors
    head = (f"gallery: {len(names)} drawings; queries: {first['n_queries']} (every member of a group of >= 2); "
            f"similarity: {method}; 95% CI: bootstrap over queries ({n_boot} resamples)")
    text = "\n".join([head, format_table(rows, n_boot, seed), *verdicts])
    return text, rows


__all__ = [
    "METRIC_KEYS",
    "GroupsError",
    "read_groups",
    "FLOOR_HIST",
    "FLOOR_RAW_GF",
    "FLOOR_STD",
    "FLOOR_LAYOUT",
    "FLOOR_LAYOUT_ROT",
    "normalize_name",
    "resolve_groups",
    "similarity_matrix",
    "rank_topk",
    "metrics_from_relevance",
    "retrieval_metrics",
    "bootstrap_interval",
    "histogram_embedding",
    "raw_gf_embedding",
    "standardize_blocks",
    "zscore_l2",
    "l2_normalize",
    "random_embedding",
    "load_encodings",
    "floor_embeddings",
    "floor_table",
    "format_table",
    "strongest_floor",
    "verdict_lines",
    "compare_table",
]
