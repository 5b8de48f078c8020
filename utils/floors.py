"""Layout-aware non-learned floors: where each entity type sits on the sheet.

Global counts (the entity-type histogram, the raw GF matrices) cannot tell two
drawings with the same parts list but another arrangement apart. These floors count
entities per type on a coarse spatial grid, from what the DeepDXF rows already hold:
each row's quantized coordinates (0..255, normalized to the drawing's extent with the
aspect ratio kept, see the parameter table of ``dataset/dxf_process_DeepDXF.py``).

Reference point of an entity (the mean of the listed slot pairs that are not -1):

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

The grid is a square of ``GRID x GRID`` cells centred on the box of the reference
points, its side the longer side of that box, so that a drawing turned by 90°/180°
or mirrored maps its cells onto the turned/mirrored cells.

Two embeddings:

- ``layout``: ``log(1 + count)`` per type and cell, ``[n, 12 * GRID * GRID]``;
- ``layout_rot``: the same counts summed over the 8 turns and flips of the square
  (the dihedral group D4), one value per orbit of cells: ``[n, 12 * 10]`` for an 8 x 8
  grid. It is the same for a drawing and its copy turned by 90°, 180°, 270° or
  mirrored; it loses which corner is which.

Both are z-scored with a reference set (the gallery) and L2-normalized before
comparing (:func:`utils.retrieval.standardize_blocks`).
"""
from __future__ import annotations

import numpy as np

from dataset.dxf_process_DeepDXF import DEEPDXF_TYPES, N_TYPES

GRID = 8

#: slot pairs (x column, y column) whose mean is the reference point, per type.
REF_SLOTS: dict[str, tuple[tuple[int, int], ...]] = {
    "LINE": ((1, 2), (3, 4)),
    "CIRCLE": ((1, 2),),
    "ARC": ((1, 2),),
    "LWPOLYLINE": ((3, 4), (5, 6)),
    "TEXT": ((1, 2),),
    "MTEXT": ((1, 2),),
    "HATCH": ((3, 4), (5, 6)),
    "DIMENSION": ((1, 2),),
    "LEADER": ((2, 3),),
    "INSERT": ((1, 2),),
    "SPLINE": ((5, 6), (7, 8)),
    "SOLID": ((1, 2), (3, 4), (5, 6)),
}
_MAX_PAIRS = max(len(v) for v in REF_SLOTS.values())
# [N_TYPES, _MAX_PAIRS] column indices of x and y (0 = unused: column 0 is the type)
_REF_X = np.zeros((N_TYPES, _MAX_PAIRS), dtype=np.int64)
_REF_Y = np.zeros((N_TYPES, _MAX_PAIRS), dtype=np.int64)
for _t, _name in enumerate(DEEPDXF_TYPES):
    for _k, (_x, _y) in enumerate(REF_SLOTS[_name]):
        _REF_X[_t, _k], _REF_Y[_t, _k] = _x, _y


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
        lo, hi = xy.min(0), xy.max(0)
        centre = (lo + hi) / 2.0
        half = max(float((hi - lo).max()) / 2.0, 0.5)
        u = (xy - centre) / (2.0 * half) + 0.5  # in [0, 1]
        cell = np.clip(np.floor(u * grid), 0, grid - 1).astype(np.int64)
        flat = types * grid * grid + cell[:, 1] * grid + cell[:, 0]
        out = np.bincount(flat, minlength=N_TYPES * grid * grid)
    return out.reshape(N_TYPES, grid, grid).astype(np.int32)


def layout_embedding(grids: np.ndarray) -> np.ndarray:
    """``log(1 + count)`` of ``grids [n, 12, G, G]`` flattened -> float64 ``[n, 12 * G * G]``."""
    g = np.asarray(grids, dtype=np.float64)
    return np.log1p(g.reshape(len(g), -1))


def _orbit_cells(grid: int) -> tuple[np.ndarray, np.ndarray]:
    """One cell per D4 orbit of a ``grid x grid`` square: ``i <= j`` in one quadrant
    (and the middle row/column for an odd grid)."""
    half = (grid + 1) // 2
    ii, jj = np.triu_indices(half)
    return ii, jj


def layout_rot_embedding(grids: np.ndarray) -> np.ndarray:
    """The rotation- and mirror-robust layout: ``grids [n, 12, G, G]`` summed over the 8
    symmetries of the square, one value per orbit of cells, ``log(1 + count)``.

    Returns:
        float64 ``[n, 12 * K]`` with ``K`` orbits (10 for G = 8).
    """
    g = np.asarray(grids, dtype=np.float64)
    sym = np.zeros_like(g)
    for flipped in (g, np.swapaxes(g, -1, -2)):
        for k in range(4):
            sym += np.rot90(flipped, k, axes=(-2, -1))
    ii, jj = _orbit_cells(g.shape[-1])
    # each orbit's count once: divide by how many of the 8 maps fix the representative
    stabilizer = 8.0 / _orbit_sizes(g.shape[-1])[ii, jj]
    pooled = sym[..., ii, jj] / stabilizer
    return np.log1p(pooled.reshape(len(g), -1))


def _orbit_sizes(grid: int) -> np.ndarray:
    """``[G, G]``: the number of distinct cells in each cell's D4 orbit."""
    idx = np.arange(grid * grid).reshape(grid, grid)
    images = []
    for m in (idx, idx.T):
        for k in range(4):
            images.append(np.rot90(m, k))
    stack = np.stack(images)  # [8, G, G]: where each map sends the cells
    sizes = np.zeros(grid * grid, dtype=np.float64)
    for c in range(grid * grid):
        sizes[c] = len(np.unique(stack[:, c // grid, c % grid]))
    return sizes.reshape(grid, grid)


__all__ = ["GRID", "REF_SLOTS", "reference_points", "layout_grid", "layout_embedding", "layout_rot_embedding"]
