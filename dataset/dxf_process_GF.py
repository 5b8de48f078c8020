"""GF encoding of a drawing: a 10-node graph, one node per entity class.

Per drawing, from its modelspace entities (old-style POLYLINE counts as LWPOLYLINE):

* ``O[i][j]``: number of overlapping box pairs (a in class i, b in class j), i != j.
  Two boxes *overlap* when they share at least one point (closed intervals) and
  neither contains the other; ``O[i][i] = 0``.
* ``F[i]``: number of class-i entities whose box overlaps no entity of another class
  (entities without a box count as free).
* Node features ``[10, 11]``: row i = ``[F[i], O[i][0..9]]``; column 0 divided by its
  sum over the 10 rows, columns 1..10 divided by the row sum; a zero sum leaves zeros.
* Adjacency ``[10, 10]``: with entities sorted by handle, every two consecutive
  entities of different classes connect their classes (symmetric, no self loops).

Beside these (which stay exactly as specified), ``layout`` ``[10, LAYOUT_DIM]`` holds a
rotation-robust spatial occupancy per class (:func:`layout_features`), for models that
use it (``GF_layout_features``). Files written before it existed lack the key; readers
use zeros for them and say so.

Overlaps are counted with a vectorized sweep along one axis (no Python loop over
pairs): 50,000 entities take well under a second on one core.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from dataset.files import atomic_write
from dataset.formats import GF_CLASSES, LAYOUT_DIM, LAYOUT_GRID, LAYOUT_RINGS

#: Upper bound on candidate pairs held in memory at once by :func:`count_overlaps`.
PAIR_CHUNK = 4_000_000
#: Box coordinates closer than this share of the drawing's size (the larger of its
#: extent and its largest coordinate) count as equal when testing overlap and
#: containment: floating-point noise of a rotation, a units change or a move (1e-16
#: relative) must not turn touching boxes into separate ones or a contained box
#: into an overlapping one.
BOX_TOLERANCE = 1e-9


def box_tolerance(boxes: np.ndarray) -> float:
    """The absolute tolerance of :data:`BOX_TOLERANCE` for ``boxes: [n, 4]`` (finite rows)."""
    finite = boxes[np.isfinite(boxes).all(axis=1)]
    if len(finite) == 0:
        return 0.0
    extent = max(finite[:, 2].max() - finite[:, 0].min(), finite[:, 3].max() - finite[:, 1].min())
    return BOX_TOLERANCE * max(float(extent), float(np.abs(finite).max()))


def class_indices(types: list[str], classes: tuple[str, ...] = GF_CLASSES) -> np.ndarray:
    """Map DXF type names to class indices; -1 for types outside ``classes``. ``[n]``."""
    lookup = {name: i for i, name in enumerate(classes)}
    return np.fromiter((lookup.get(t, -1) for t in types), dtype=np.int64, count=len(types))


def _sweep_candidates(lo: np.ndarray, hi: np.ndarray, eps: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sort by ``lo``; for each box, the range of later boxes whose ``lo`` is within its
    interval widened by ``eps``. Returns ``(order, counts)``: box ``order[k]`` pairs with
    ``order[k+1 .. k+counts[k]]``."""
    order = np.argsort(lo, kind="stable")
    lo_sorted = lo[order]
    ends = np.searchsorted(lo_sorted, hi[order] + eps, side="right")
    counts = ends - np.arange(len(order)) - 1
    return order, np.maximum(counts, 0)


def count_overlaps(boxes: np.ndarray, cls: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Count cross-class overlapping box pairs.

    Args:
        boxes: float ``[n, 4]`` (xmin, ymin, xmax, ymax); rows with NaN never overlap.
        cls: int ``[n]`` class index in ``0..n_classes-1``.
        n_classes: number of classes C.

    Returns:
        ``O``: int64 ``[C, C]``, symmetric, zero diagonal: overlapping pairs per class pair.
        ``overlapped``: bool ``[n]``, entities that overlap at least one entity of
        another class.
    """
    n = len(boxes)
    overlap = np.zeros((n_classes, n_classes), dtype=np.int64)
    overlapped = np.zeros(n, dtype=bool)
    has_box = np.isfinite(boxes).all(axis=1)
    idx = np.flatnonzero(has_box)
    if len(idx) < 2:
        return overlap, overlapped
    b, c = boxes[idx], cls[idx]
    eps = box_tolerance(b)
    # Sweep along the axis that yields fewer candidate pairs.
    order_x, counts_x = _sweep_candidates(b[:, 0], b[:, 2], eps)
    order_y, counts_y = _sweep_candidates(b[:, 1], b[:, 3], eps)
    order, counts = (order_x, counts_x) if counts_x.sum() <= counts_y.sum() else (order_y, counts_y)

    flat = np.zeros(n_classes * n_classes, dtype=np.int64)
    cum = np.cumsum(counts)
    start = 0
    while start < len(order):
        # take sweep positions [start, stop) whose candidate count fits in PAIR_CHUNK
        base = cum[start - 1] if start > 0 else 0
        stop = max(int(np.searchsorted(cum, base + PAIR_CHUNK, side="right")), start + 1)
        cnt = counts[start:stop]
        total = int(cnt.sum())
        if total:
            pos = np.repeat(np.arange(start, stop), cnt)
            offsets = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            i, j = order[pos], order[pos + 1 + offsets]
            bi, bj = b[i], b[j]
            intersect = ((bi[:, 0] <= bj[:, 2] + eps) & (bj[:, 0] <= bi[:, 2] + eps)
                         & (bi[:, 1] <= bj[:, 3] + eps) & (bj[:, 1] <= bi[:, 3] + eps))
            i_contains_j = ((bi[:, 0] <= bj[:, 0] + eps) & (bi[:, 1] <= bj[:, 1] + eps)
                            & (bi[:, 2] + eps >= bj[:, 2]) & (bi[:, 3] + eps >= bj[:, 3]))
            j_contains_i = ((bj[:, 0] <= bi[:, 0] + eps) & (bj[:, 1] <= bi[:, 1] + eps)
                            & (bj[:, 2] + eps >= bi[:, 2]) & (bj[:, 3] + eps >= bi[:, 3]))
            hit = intersect & ~i_contains_j & ~j_contains_i & (c[i] != c[j])
            i, j = i[hit], j[hit]
            flat += np.bincount(c[i] * n_classes + c[j], minlength=n_classes * n_classes)
            flat += np.bincount(c[j] * n_classes + c[i], minlength=n_classes * n_classes)
            overlapped[idx[i]] = True
            overlapped[idx[j]] = True
        start = stop
    overlap[:] = flat.reshape(n_classes, n_classes)
    return overlap, overlapped


def class_adjacency(cls_in_handle_order: np.ndarray, n_classes: int) -> np.ndarray:
    """Adjacency ``[C, C]`` (float32 0/1, symmetric, zero diagonal) of classes that
    follow each other in handle order. ``cls_in_handle_order``: int ``[n]``."""
    adj = np.zeros((n_classes, n_classes), dtype=np.float32)
    a, b = cls_in_handle_order[:-1], cls_in_handle_order[1:]
    differ = a != b
    adj[a[differ], b[differ]] = 1.0
    adj[b[differ], a[differ]] = 1.0
    return adj


def normalize_features(free: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """Node features ``[C, C+1]`` from free counts ``[C]`` and overlaps ``[C, C]``:
    column 0 = free counts over their sum, columns 1.. = each overlap row over its sum."""
    free = free.astype(np.float64)
    overlap = overlap.astype(np.float64)
    col0 = free / free.sum() if free.sum() > 0 else np.zeros_like(free)
    row_sum = overlap.sum(axis=1, keepdims=True)
    rows = np.divide(overlap, row_sum, out=np.zeros_like(overlap), where=row_sum > 0)
    return np.concatenate([col0[:, None], rows], axis=1).astype(np.float32)


def layout_features(boxes: np.ndarray, cls: np.ndarray, n_classes: int,
                    rings: int = LAYOUT_RINGS, grid: int = LAYOUT_GRID) -> np.ndarray:
    """Where each class sits on the sheet, unchanged by 90°/180° turns and mirrors.

    Box centres are placed in the square around the centre of the drawing's extents
    (the union of the boxes), its side the longer side of the extents. Per class:

    * ``rings`` shares: entities by distance from the centre (``|u| / sqrt(2)`` with ``u``
      in ``[-1, 1]^2``, cut into equal rings);
    * one share per orbit of the ``grid x grid`` cells under the 8 turns and flips of
      the square (for 4 x 4: corners, edge cells, inner cells), i.e. the grid pooled
      over the dihedral group D4.

    Each block is divided by the class's entity count (a class without located
    entities has zeros). Entities without a box are left out.

    Args:
        boxes: float ``[n, 4]`` (xmin, ymin, xmax, ymax), NaN rows without a box.
        cls: int ``[n]`` class index in ``0..n_classes-1``.
    Returns:
        float32 ``[n_classes, rings + n_orbits]`` (``[10, LAYOUT_DIM]`` by default).
    """
    orbit_of = np.zeros((grid, grid), dtype=np.int64)
    a = np.minimum(np.arange(grid), grid - 1 - np.arange(grid))  # distance to the nearer edge
    lo, hi = np.minimum.outer(a, a), np.maximum.outer(a, a)
    pairs = sorted({(int(x), int(y)) for x, y in zip(lo.ravel(), hi.ravel())})
    index = {p: k for k, p in enumerate(pairs)}
    for i in range(grid):
        for j in range(grid):
            orbit_of[i, j] = index[(int(lo[i, j]), int(hi[i, j]))]
    n_orbits = len(pairs)
    out = np.zeros((n_classes, rings + n_orbits), dtype=np.float64)
    b = np.asarray(boxes, dtype=np.float64)
    ok = np.isfinite(b).all(axis=1) if len(b) else np.zeros(0, dtype=bool)
    if not ok.any():
        return out.astype(np.float32)
    b, c = b[ok], np.asarray(cls)[ok]
    x_lo, y_lo = b[:, 0].min(), b[:, 1].min()
    x_hi, y_hi = b[:, 2].max(), b[:, 3].max()
    centre = np.array([(x_lo + x_hi) / 2.0, (y_lo + y_hi) / 2.0])
    half = max(x_hi - x_lo, y_hi - y_lo) / 2.0
    half = half if half > 0 else 1.0
    u = np.stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0], axis=1)
    u = np.clip((u - centre) / half, -1.0, 1.0)  # [m, 2] in [-1, 1]
    r = np.linalg.norm(u, axis=1) / np.sqrt(2.0)
    ring = np.minimum((r * rings).astype(np.int64), rings - 1)
    cell = np.minimum(((u + 1.0) / 2.0 * grid).astype(np.int64), grid - 1)
    orbit = orbit_of[cell[:, 1], cell[:, 0]]
    np.add.at(out, (c, ring), 1.0)
    np.add.at(out, (c, rings + orbit), 1.0)
    counts = np.bincount(c, minlength=n_classes).astype(np.float64)[:, None]
    out = np.divide(out, counts, out=np.zeros_like(out), where=counts > 0)
    return out.astype(np.float32)


def gf_encode(types: list[str], boxes: np.ndarray, classes: tuple[str, ...] = GF_CLASSES) -> dict[str, np.ndarray]:
    """GF encoding of entities given in handle order.

    Args:
        types: DXF type per entity ``[n]`` (already aliased: POLYLINE -> LWPOLYLINE).
        boxes: float ``[n, 4]``, NaN rows for entities without a box.
        classes: class names, the node order.

    Returns:
        dict with ``features`` float32 ``[C, C+1]``, ``adjacency`` float32 ``[C, C]``,
        ``overlap`` int64 ``[C, C]``, ``free`` int64 ``[C]``, ``counts`` int64 ``[C]``,
        ``classes`` str ``[C]``, ``layout`` float32 ``[C, LAYOUT_DIM]``
        (:func:`layout_features`) (the format of ``data/GF/<name>.npz``).
    """
    n_classes = len(classes)
    cls = class_indices(types, classes)
    keep = cls >= 0
    cls, boxes = cls[keep], np.asarray(boxes, dtype=np.float64)[keep]
    counts = np.bincount(cls, minlength=n_classes).astype(np.int64)
    overlap, overlapped = count_overlaps(boxes, cls, n_classes)
    free = np.bincount(cls[~overlapped], minlength=n_classes).astype(np.int64)
    return {
        "features": normalize_features(free, overlap),
        "adjacency": class_adjacency(cls, n_classes),
        "overlap": overlap,
        "free": free,
        "counts": counts,
        "classes": np.array(classes),
        "layout": layout_features(boxes, cls, n_classes),
    }


def save_gf(path: str | Path, encoding: dict[str, np.ndarray], **extra: np.ndarray) -> None:
    """Write an encoding to ``path`` (``.npz``) atomically."""
    atomic_write(path, lambda tmp: np.savez(tmp, **encoding, **extra))


def load_gf(path: str | Path, keys: tuple[str, ...] | list[str] | None = None) -> dict[str, np.ndarray]:
    """Read a ``data/GF/<name>.npz`` file into a dict of arrays.

    Args:
        path: the file.
        keys: read only these arrays (e.g. ``("features", "adjacency")``, the trainers'
            light read); None reads every array of the file.
    Raises:
        KeyError: a requested key is not in the file (the message names the file).
    """
    with np.load(path, allow_pickle=False) as data:
        wanted = data.files if keys is None else list(keys)
        missing = [key for key in wanted if key not in data.files]
        if missing:
            raise KeyError(f"{path}: no array {', '.join(missing)} in this GF file (it holds {', '.join(data.files)})")
        return {key: data[key] for key in wanted}


def zero_layout(*lead: int) -> np.ndarray:
    """The ``layout`` of a drawing whose GF file predates it: zeros ``float32 [*lead, C, LAYOUT_DIM]``."""
    return np.zeros((*lead, len(GF_CLASSES), LAYOUT_DIM), dtype=np.float32)


def load_gf_layout(source: str | Path | Mapping[str, np.ndarray], *, missing_ok: bool = True) -> np.ndarray:
    """The ``layout`` array ``float32 [C, LAYOUT_DIM]`` of a GF file (its path, or the arrays
    :func:`load_gf` read from it).

    Files written before preprocessing computed it have none: zeros (:func:`zero_layout`),
    or ``KeyError`` with ``missing_ok=False`` (for a caller that counts them).
    """
    if isinstance(source, Mapping):
        if "layout" in source:
            return np.asarray(source["layout"], dtype=np.float32)
        if missing_ok:
            return zero_layout()
        raise KeyError("no array layout in this GF encoding")
    try:
        return np.asarray(load_gf(source, keys=("layout",))["layout"], dtype=np.float32)
    except KeyError:
        if missing_ok:
            return zero_layout()
        raise


__all__ = [
    "BOX_TOLERANCE", "PAIR_CHUNK", "box_tolerance", "class_indices", "count_overlaps", "class_adjacency",
    "normalize_features", "layout_features", "gf_encode", "save_gf", "load_gf", "zero_layout", "load_gf_layout",
]
