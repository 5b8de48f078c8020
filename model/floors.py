"""The non-learned floors: embeddings of a drawing that counting gives for free.

Every learned embedding is judged beside them, and the joint embedding can append
them as blocks. They are models without weights, so they live with the models; all
are numpy and read only the two encodings (the GF matrices and the DeepDXF rows).

==============  ===========================================================  ============
block           what it counts                                               columns
==============  ===========================================================  ============
``hist``        ``log(1 + count)`` of each DeepDXF entity type               12
``gf_raw``      the raw GF matrices (node features and adjacency) flattened  210
``layout``      ``log(1 + count)`` per entity type on a GRID x GRID grid     12 * 64
``layout_rot``  the grid summed over the 8 turns and flips of the square     12 * 10
==============  ===========================================================  ============

Before comparing, a block is made comparable with :func:`zscore_l2`: each column is
z-scored with the statistics of a reference set (the gallery, or the training
archive), then each row is L2-normalized, so that every block weighs the same in a
cosine similarity (:func:`standardize`).

The layout grids place each entity at a reference point taken from its quantized
DeepDXF coordinates (0..255, normalized to the drawing's extent with the aspect ratio
kept; the parameter table is in ``dataset/dxf_process_DeepDXF.py``), the mean of the
listed slot pairs that are not -1:

===========  =========================================================
LINE         start (1-2) and end (3-4): the midpoint
CIRCLE, ARC  centre (1-2)
LWPOLYLINE   vertex box corners (3-4, 5-6): the box centre
TEXT, MTEXT  insert point (1-2)
HATCH        extent corners (3-4, 5-6): the extent centre
DIMENSION    first definition point (1-2)
LEADER       first vertex (2-3)
INSERT       insert point (1-2)
SPLINE       control point box corners (5-6, 7-8): the box centre
SOLID        corners 1..3 (1-2, 3-4, 5-6): their mean
===========  =========================================================

The grid is a square centred on the box of the reference points, its side the
longer side of that box, so that a drawing turned by 90°/180° or mirrored maps its
cells onto the turned/mirrored cells; ``layout_rot`` is therefore the same for a
drawing and its turned or mirrored copy.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from dataset.formats import DEEPDXF_TYPES, GF_CLASSES, N_TYPES, REF_SLOTS

GRID = 8
_EPS = 1e-12
_C = len(GF_CLASSES)

#: columns of each floor block
BLOCK_DIMS: dict[str, int] = {"hist": N_TYPES, "gf_raw": _C * (_C + 1) + _C * _C, "layout": N_TYPES * GRID * GRID,
                              "layout_rot": N_TYPES * ((GRID + 1) // 2) * ((GRID + 1) // 2 + 1) // 2}
#: the non-learned search embeddings (``SimDeepDXF.py --embedding``) and their blocks
FLOOR_KINDS: dict[str, tuple[str, ...]] = {"features": ("hist", "gf_raw"), "hist_std": ("hist",),
                                           "gf_std": ("gf_raw",), "layout": ("layout",),
                                           "layout_rot": ("layout_rot",)}
#: what each floor is called in tables
FLOOR_LABELS: dict[str, str] = {
    "hist": "entity-type histogram log(1+count)",
    "hist_std": "standardized entity-type histogram",
    "gf_raw": "raw GF matrices",
    "gf_std": "standardized raw GF matrices",
    "features": "standardized histogram + raw GF",
    "layout": "layout: entity types on an 8x8 grid",
    "layout_rot": "layout, rotation-robust (grid pooled over 90° turns and flips)",
}

_MAX_PAIRS = max(len(v) for v in REF_SLOTS.values())
# [N_TYPES, _MAX_PAIRS] column indices of x and y (0 = unused: column 0 is the type)
_REF_X = np.zeros((N_TYPES, _MAX_PAIRS), dtype=np.int64)
_REF_Y = np.zeros((N_TYPES, _MAX_PAIRS), dtype=np.int64)
for _t, _name in enumerate(DEEPDXF_TYPES):
    for _k, (_x, _y) in enumerate(REF_SLOTS[_name]):
        _REF_X[_t, _k], _REF_Y[_t, _k] = _x, _y


# ----------------------------------------------------------------- the blocks
def histogram_embedding(type_counts: np.ndarray) -> np.ndarray:
    """``log(1 + count)`` of each entity type: ``type_counts [n, 12]`` -> float64 ``[n, 12]``."""
    return np.log1p(np.asarray(type_counts, dtype=np.float64))


def raw_gf_embedding(features: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """The raw GF matrices flattened: ``features [n, 10, >= 11]`` (only the 11 GF columns
    are used: layout columns after them are left out), ``adjacency [n, 10, 10]`` ->
    float64 ``[n, 210]``."""
    f = np.asarray(features, dtype=np.float64)[:, :, :_C + 1]
    a = np.asarray(adjacency, dtype=np.float64)
    return np.concatenate([f.reshape(len(f), -1), a.reshape(len(a), -1)], axis=1)


def reference_points(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference point of every entity.

    Args:
        rows: DeepDXF rows int ``[L, 14]``.
    Returns:
        ``(types [m], xy float64 [m, 2])`` for the ``m <= L`` entities with at least one
        usable slot pair (entities whose slots are all -1 are left out).
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or len(rows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    types = rows[:, 0].astype(np.int64)
    ok_type = (types >= 0) & (types < N_TYPES)
    rows, types = rows[ok_type], types[ok_type]
    cx, cy = _REF_X[types], _REF_Y[types]  # [L, P]
    x = np.take_along_axis(rows, cx, axis=1).astype(np.float64)
    y = np.take_along_axis(rows, cy, axis=1).astype(np.float64)
    use = (cx > 0) & (x >= 0) & (y >= 0)
    n = use.sum(1)
    keep = n > 0
    xm = (x * use).sum(1)[keep] / n[keep]
    ym = (y * use).sum(1)[keep] / n[keep]
    return types[keep], np.stack([xm, ym], axis=1)


def grid_cells(xy: np.ndarray, grid: int) -> np.ndarray:
    """The cell ``(x cell, y cell)`` int64 ``[m, 2]`` of each point of ``xy: [m, 2]`` on a
    ``grid x grid`` square centred on the points' box, its side the box's longer side."""
    if len(xy) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    lo, hi = xy.min(0), xy.max(0)
    centre = (lo + hi) / 2.0
    half = max(float((hi - lo).max()) / 2.0, 0.5)
    u = (xy - centre) / (2.0 * half) + 0.5  # in [0, 1]
    return np.clip(np.floor(u * grid), 0, grid - 1).astype(np.int64)


def layout_grid(rows: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Entities per type and cell of one drawing.

    Args:
        rows: DeepDXF rows int ``[L, 14]``.
        grid: cells per side.
    Returns:
        int32 ``[12, grid, grid]``, indexed ``[type, y cell, x cell]``.
    """
    types, xy = reference_points(rows)
    out = np.zeros(N_TYPES * grid * grid, dtype=np.int64)
    if len(types):
        cell = grid_cells(xy, grid)
        flat = types * grid * grid + cell[:, 1] * grid + cell[:, 0]
        out = np.bincount(flat, minlength=N_TYPES * grid * grid)
    return out.reshape(N_TYPES, grid, grid).astype(np.int32)


def layout_embedding(grids: np.ndarray) -> np.ndarray:
    """``log(1 + count)`` of ``grids [n, 12, G, G]`` flattened -> float64 ``[n, 12 * G * G]``."""
    g = np.asarray(grids, dtype=np.float64)
    return np.log1p(g.reshape(len(g), -1))


def _orbit_sizes(grid: int) -> np.ndarray:
    """``[G, G]``: the number of distinct cells in each cell's D4 orbit."""
    idx = np.arange(grid * grid).reshape(grid, grid)
    images = np.stack([np.rot90(m, k) for m in (idx, idx.T) for k in range(4)])  # [8, G, G]
    return np.array([len(np.unique(images[:, c // grid, c % grid])) for c in range(grid * grid)],
                    dtype=np.float64).reshape(grid, grid)


def layout_rot_embedding(grids: np.ndarray) -> np.ndarray:
    """The rotation- and mirror-robust layout: ``grids [n, 12, G, G]`` summed over the 8
    symmetries of the square, one value per orbit of cells (``i <= j`` in one quadrant),
    ``log(1 + count)``.

    Returns:
        float64 ``[n, 12 * K]`` with ``K`` orbits (10 for G = 8).
    """
    g = np.asarray(grids, dtype=np.float64)
    sym = np.zeros_like(g)
    for flipped in (g, np.swapaxes(g, -1, -2)):
        for k in range(4):
            sym += np.rot90(flipped, k, axes=(-2, -1))
    ii, jj = np.triu_indices((g.shape[-1] + 1) // 2)
    # each orbit's count once: divide by how many of the 8 maps fix the representative
    pooled = sym[..., ii, jj] / (8.0 / _orbit_sizes(g.shape[-1])[ii, jj])
    return np.log1p(pooled.reshape(len(g), -1))


def floor_block(name: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """One raw (not yet standardized) floor block of stacked encodings.

    Args:
        name: ``hist``, ``gf_raw`` (``gf`` is accepted too), ``layout`` or ``layout_rot``.
        arrays: ``type_counts [n, 12]``; ``gf_features [n, 10, 11]`` and ``gf_adjacency
            [n, 10, 10]`` (for ``gf_raw``); ``layout [n, 12, 8, 8]`` (the layout blocks).
    Returns:
        float64 ``[n, BLOCK_DIMS[name]]``.
    """
    if name == "hist":
        return histogram_embedding(arrays["type_counts"])
    if name in ("gf_raw", "gf"):
        return raw_gf_embedding(arrays["gf_features"], arrays["gf_adjacency"])
    if name == "layout":
        return layout_embedding(arrays["layout"])
    if name == "layout_rot":
        return layout_rot_embedding(arrays["layout"])
    raise ValueError(f"unknown floor block {name!r}: {', '.join(BLOCK_DIMS)}")


def floor_raw(kind: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The raw blocks of a non-learned kind (:data:`FLOOR_KINDS`) side by side: float64
    ``[n, sum of its BLOCK_DIMS]``."""
    if kind not in FLOOR_KINDS:
        raise ValueError(f"{kind!r} is not a non-learned embedding ({', '.join(FLOOR_KINDS)})")
    return np.concatenate([floor_block(b, arrays) for b in FLOOR_KINDS[kind]], axis=1)


# ------------------------------------------------------------ standardization
def zscore_l2(block: np.ndarray, reference: Optional[np.ndarray]) -> np.ndarray:
    """One floor block made comparable: each column of ``block: [n, d]`` z-scored with the
    mean/std of ``reference: [m, d]`` (zero std -> 1; None or fewer than 2 rows: not
    z-scored), then each row L2-normalized (zero rows stay zero). float64 ``[n, d]``."""
    x = np.asarray(block, dtype=np.float64)
    if reference is not None and len(reference) >= 2:
        ref = np.asarray(reference, dtype=np.float64)
        std = ref.std(0)
        x = (x - ref.mean(0)) / np.where(std > _EPS, std, 1.0)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def standardize(raw: np.ndarray, reference: Optional[np.ndarray], sizes: Sequence[int]) -> np.ndarray:
    """Blocks of columns side by side, each through :func:`zscore_l2` with the matching
    columns of ``reference``: ``raw [n, sum(sizes)]``, ``reference [m, sum(sizes)]`` or
    None -> float64 ``[n, sum(sizes)]``; every block has unit length."""
    x = np.asarray(raw, dtype=np.float64)
    out, start = [], 0
    for size in sizes:
        cols = slice(start, start + size)
        out.append(zscore_l2(x[:, cols], None if reference is None else np.asarray(reference)[:, cols]))
        start += size
    return np.concatenate(out, axis=1) if out else np.zeros((len(x), 0))


def floor_embeddings(arrays: dict[str, np.ndarray], fit_rows: Optional[Sequence[int]] = None
                     ) -> dict[str, Optional[np.ndarray]]:
    """Every floor of a set of drawings, ready to compare, by :data:`FLOOR_LABELS` key.

    Args:
        arrays: ``type_counts [n, 12]``; optional ``gf_features``/``gf_adjacency`` with
            ``has_gf [n]`` (all present when absent); optional ``layout [n, 12, G, G]``.
        fit_rows: rows whose statistics z-score the standardized floors (default all).
    Returns:
        ``hist`` and ``gf_raw`` as they are; ``hist_std``, ``gf_std``, ``features``,
        ``layout``, ``layout_rot`` standardized (each block z-scored, then L2-normalized);
        None where ``arrays`` lacks what a floor needs.
    """
    hist = histogram_embedding(arrays["type_counts"])
    n = len(hist)
    fit = np.arange(n) if fit_rows is None else np.asarray(fit_rows, dtype=np.int64)
    out: dict[str, Optional[np.ndarray]] = dict.fromkeys(FLOOR_LABELS)
    out["hist"] = hist
    has_gf = np.asarray(arrays.get("has_gf", np.ones(n, dtype=bool))).astype(bool)
    if "gf_features" in arrays and has_gf.all():
        out["gf_raw"] = raw_gf_embedding(arrays["gf_features"], arrays["gf_adjacency"])
    available = {"hist": True, "gf_raw": out["gf_raw"] is not None,
                 "layout": arrays.get("layout") is not None, "layout_rot": arrays.get("layout") is not None}
    for kind, blocks in FLOOR_KINDS.items():
        if all(available[b] for b in blocks):
            raw = floor_raw(kind, arrays)
            out[kind] = standardize(raw, raw[fit], [BLOCK_DIMS[b] for b in blocks])
    return out


def random_embedding(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian vectors ``[n, dim]``: the chance level."""
    return np.random.default_rng(seed).standard_normal((n, dim))


__all__ = ["GRID", "BLOCK_DIMS", "FLOOR_KINDS", "FLOOR_LABELS", "REF_SLOTS", "histogram_embedding",
           "raw_gf_embedding", "reference_points", "grid_cells", "layout_grid", "layout_embedding",
           "layout_rot_embedding", "floor_block", "floor_raw", "zscore_l2", "standardize", "floor_embeddings",
           "random_embedding"]
