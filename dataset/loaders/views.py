"""Every view of both models, drawn in one place with one seeding scheme.

A view is a random variant of a drawing that a contrastive loss asks the model to
recognise as the same drawing. The data loaders (``dataset/loaders/``) draw them while
they build a batch; the models (``model/``) only take the drawn views.

GF (a view of a batch of graphs, :func:`gf_view`): feature columns masked, edges
dropped, absent edges between real nodes added (GRACE), at the rates of the config
(:class:`GFViewRates`). :func:`gf_pair_views` draws the two views of both graphs of
each pair (the GF loss's input), :func:`gf_two_views` two views of each graph (the
joint group term's input).

DeepDXF (a view of one drawing's rows, :func:`deepdxf_view`): the optional
revision-like edits of :func:`revision_view` (90°/180° turns and mirror of the
quantized coordinates, deleted and duplicated entities, a random turn or mirror of the
square), then random handle-ordered
windows of at most C entities, entity dropout, quantization jitter, a shift and hidden
slots. :func:`deepdxf_two_views` draws two views of each drawing of a batch and pads them.

Seeding: a batch of the joint loader draws every view of both models from the seed of
its part, ``(seed, epoch, part)`` (:func:`part_generators`), so a batch looks the same
whatever the number of processes, accumulation steps or DataLoader workers.
Validation and test views are drawn from :data:`VAL_SEED` (the same every epoch).
The single-model trainers draw from one seeded stream per loader
(``dataset/loaders/gf.py``, ``dataset/loaders/deepdxf.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from config.DeepDXF_config import DeepDXFConfig
from dataset.dxf_process_DeepDXF import KIND_MATRIX
from dataset.formats import BOX_SLOTS, N_PARAMS, TYPE_INDEX
from model.DeepDXF_embedding import N_D4, chunk_rows, d4_transform_rows
from model.DeepDXF_model import DeepDXFBatch
from model.GF_model import GraphBatch, PairViews

#: validation and test views (and the dropout masks of their DeepDXF views): the same every epoch
VAL_SEED = 12345

Chunk = tuple[np.ndarray, np.ndarray, int]  # rows [l, 14], index in drawing [l], drawing length


# --------------------------------------------------------------------------- seeding

def part_generators(view_seed: Sequence[int]) -> tuple[np.random.Generator, torch.Generator]:
    """The generators of one joint batch, both from its part's seed ``(seed, epoch, part)``:
    ``(DeepDXF numpy generator, GF torch generator on the CPU)``."""
    state = np.random.SeedSequence(list(view_seed)).generate_state(1)[0]
    gf_state = np.random.SeedSequence([*view_seed, 1]).generate_state(1)[0]
    return np.random.default_rng(int(state)), torch.Generator().manual_seed(int(gf_state))


# --------------------------------------------------------------------------- GF views

@dataclass(frozen=True)
class GFViewRates:
    """How much a GF view changes a graph (``GF_feature_mask_rate``, ``GF_edge_drop_rate``,
    ``GF_edge_add_rate`` of the config)."""

    feature_mask: float
    edge_drop: float
    edge_add: float

    @classmethod
    def of(cls, cfg: Any) -> "GFViewRates":
        """The rates of a ``GFConfig`` (or ``JointConfig``)."""
        return cls(cfg.GF_feature_mask_rate, cfg.GF_edge_drop_rate, cfg.GF_edge_add_rate)


def gf_view(x: Tensor, adj: Tensor, mask: Tensor, rates: GFViewRates,
            generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """One random view of a batch of graphs, drawn on the tensors' device.

    - feature masking: each feature column of each graph is zeroed with
      probability ``rates.feature_mask`` (the same columns for all nodes of a graph,
      as in GRACE);
    - edge drop: each existing undirected edge is removed with probability
      ``rates.edge_drop``;
    - edge add: each absent undirected edge between two real, distinct nodes is
      added with probability ``rates.edge_add``.

    Args:
        x: ``[B, N, F]``; adj: ``[B, N, N]`` symmetric 0/1; mask: ``[B, N]`` bool.
        generator: a ``torch.Generator`` on ``x.device`` (None: the global one).

    Returns:
        ``(x_view [B, N, F], adj_view [B, N, N])``, adj_view symmetric, zero diagonal.
    """
    B, N, Fdim = x.shape
    dev, dt = x.device, x.dtype
    keep_cols = torch.rand(B, 1, Fdim, device=dev, generator=generator) >= rates.feature_mask
    x_view = x * keep_cols.to(dt)

    r = torch.rand(B, N, N, device=dev, generator=generator)
    r = torch.triu(r, diagonal=1)
    r = r + r.transpose(1, 2)  # one draw per undirected pair
    valid = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    valid = valid & ~torch.eye(N, dtype=torch.bool, device=dev)
    edge = adj > 0
    keep = edge & (r >= rates.edge_drop)
    add = ~edge & valid & (r < rates.edge_add)
    adj_view = (keep | add).to(dt)
    return x_view, adj_view

def gf_pair_views(g1: GraphBatch, g2: GraphBatch, rates: GFViewRates,
                  generator: Optional[torch.Generator] = None) -> PairViews:
    """Two views of each graph of ``B`` pairs ``(g1[i], g2[i])``, drawn in the order
    g1 view a, g1 view b, g2 view a, g2 view b (the GF loss's input)."""
    views = [gf_view(g.x, g.adj, g.mask, rates, generator) for g in (g1, g1, g2, g2)]
    return PairViews(torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views]), g1.mask, g2.mask)


def gf_two_views(graphs: GraphBatch, rates: GFViewRates, generator: Optional[torch.Generator] = None) -> GraphBatch:
    """Two views of each of ``B`` graphs as one batch of ``2B``: every first view, then
    every second view (the joint group term's input)."""
    views = [gf_view(graphs.x, graphs.adj, graphs.mask, rates, generator) for _ in range(2)]
    return GraphBatch(torch.cat([v[0] for v in views]), torch.cat([v[1] for v in views]),
                      torch.cat([graphs.mask, graphs.mask]))


# --------------------------------------------------------------------------- DeepDXF views

# Slot kinds (see dataset/dxf_process_DeepDXF.py): 1 X, 2 Y, 3 L, 4 A, 5 N, 6 S.
_CONTINUOUS = np.isin(KIND_MATRIX, (1, 2, 3, 4, 6))  # [N_TYPES, N_PARAMS]: jitter these
_IS_X = KIND_MATRIX == 1
_IS_Y = KIND_MATRIX == 2
_IS_ANGLE = KIND_MATRIX == 4
_BOX_SLOTS = BOX_SLOTS  # their corners must be re-sorted after a turn or mirror
#: 0-based parameter indices of the ARC start/end angles (a mirror swaps them).
_ARC_ANGLES = (3, 4)
_ANGLE_QUARTER = 64  # 90° in the 0..255 angle quantization


def _windows(n: int, cfg: DeepDXFConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Entity index ranges of one view (each at most chunk_len long)."""
    c = cfg.DeepDXF_chunk_len
    if not cfg.DeepDXF_aug_crop:  # deterministic: the first max_view_chunks chunks
        stop = min(n, c * cfg.DeepDXF_max_view_chunks)
        return [np.arange(s, min(s + c, stop)) for s in range(0, stop, c)]
    if n <= c:
        keep = int(rng.integers(max(1, math.ceil(cfg.DeepDXF_crop_fraction * n)), n + 1))
        start = int(rng.integers(0, n - keep + 1))
        return [np.arange(start, start + keep)]
    k = max(1, round(math.ceil(n / c) * cfg.DeepDXF_crop_fraction))
    k = min(k, cfg.DeepDXF_max_view_chunks)
    starts = np.sort(rng.integers(0, n - c + 1, size=k))
    return [np.arange(s, s + c) for s in starts]


def _coordinate_extent(params: np.ndarray, types: np.ndarray) -> tuple[int, int, int, int]:
    """``(xmin, ymin, xmax, ymax)`` of the used X and Y slots of ``params [L, 12]``
    (``(0, 0, 0, 0)`` when a drawing has no coordinate)."""
    is_x, is_y = _IS_X[types] & (params >= 0), _IS_Y[types] & (params >= 0)
    if not is_x.any() or not is_y.any():
        return 0, 0, 0, 0
    xs, ys = params[is_x], params[is_y]
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _resort_boxes(params: np.ndarray, types: np.ndarray) -> None:
    """In place: the box slots of ``params [L, 12]`` back to ``xmin <= xmax``, ``ymin <= ymax``."""
    for name, (a, b, c, d) in _BOX_SLOTS.items():
        sel = (types == TYPE_INDEX[name]) & (params[:, a] >= 0) & (params[:, c] >= 0)
        if sel.any():
            x0, x1 = params[sel, a], params[sel, c]
            y0, y1 = params[sel, b], params[sel, d]
            params[sel, a], params[sel, c] = np.minimum(x0, x1), np.maximum(x0, x1)
            params[sel, b], params[sel, d] = np.minimum(y0, y1), np.maximum(y0, y1)


def turn_rows(rows: np.ndarray, quarter_turns: int) -> np.ndarray:
    """The drawing turned counter-clockwise by ``quarter_turns`` x 90°, in quantized space.

    A quarter turn maps ``(x, y)`` to ``(xmin + ymax - y, ymin + x - xmin)`` (the
    drawing's used coordinate box keeps its lower-left corner, as preprocessing anchors
    a drawing at 0), adds 64 (90°) to every angle slot and re-sorts box slots. Four
    turns give the rows back. Unused slots (-1) and the DIMENSION value stay as they are.

    Args:
        rows: int ``[L, 14]`` (type, 12 parameters, value).
        quarter_turns: any integer (taken modulo 4).
    Returns:
        int64 ``[L, 14]``; values clipped to 0..255.
    """
    out = np.asarray(rows).astype(np.int64, copy=True)
    k = int(quarter_turns) % 4
    if k == 0 or len(out) == 0:
        return out
    types = out[:, 0]
    for _ in range(k):
        params = out[:, 1:1 + N_PARAMS]
        xmin, ymin, _, ymax = _coordinate_extent(params, types)
        is_x = _IS_X[types] & (params >= 0)
        x_next = np.zeros_like(params)  # for each X slot: its Y partner (the next slot)
        x_next[:, :-1] = params[:, 1:]
        y_prev = np.zeros_like(params)  # for each Y slot: its X partner (the slot before)
        y_prev[:, 1:] = params[:, :-1]
        is_y = _IS_Y[types] & (params >= 0)
        new = params.copy()
        new[is_x] = xmin + ymax - x_next[is_x]
        new[is_y] = ymin + y_prev[is_y] - xmin
        is_a = _IS_ANGLE[types] & (params >= 0)
        new[is_a] = (params[is_a] + _ANGLE_QUARTER) % 256
        _resort_boxes(new, types)
        out[:, 1:1 + N_PARAMS] = np.where(params >= 0, np.clip(new, 0, 255), params)
    return out


def mirror_rows(rows: np.ndarray) -> np.ndarray:
    """The drawing mirrored left-right in quantized space: ``x -> xmin + xmax - x``,
    angles ``a -> 128 - a`` (mod 256), ARC start/end angles swapped (an arc still runs
    counter-clockwise), box slots re-sorted. Applying it twice gives the rows back.

    Args:
        rows: int ``[L, 14]``.
    Returns:
        int64 ``[L, 14]``.
    """
    out = np.asarray(rows).astype(np.int64, copy=True)
    if len(out) == 0:
        return out
    types = out[:, 0]
    params = out[:, 1:1 + N_PARAMS]
    xmin, _, xmax, _ = _coordinate_extent(params, types)
    new = params.copy()
    is_x = _IS_X[types] & (params >= 0)
    new[is_x] = xmin + xmax - params[is_x]
    is_a = _IS_ANGLE[types] & (params >= 0)
    new[is_a] = (128 - params[is_a]) % 256
    arc = types == TYPE_INDEX["ARC"]
    s, e = _ARC_ANGLES
    new[arc, s], new[arc, e] = new[arc, e].copy(), new[arc, s].copy()
    _resort_boxes(new, types)
    out[:, 1:1 + N_PARAMS] = np.where(params >= 0, new, params)
    return out


def edit_rows(rows: np.ndarray, delete_fraction: float, duplicate_fraction: float,
              rng: np.random.Generator, shift: int = 4) -> np.ndarray:
    """Entities deleted and duplicated like a CAD revision: ``round(delete_fraction * L)``
    random rows removed (at least one row is always kept), ``round(duplicate_fraction * L)``
    random rows copied, shifted by up to ``shift`` quantization steps in x and y, and
    appended at the end (new entities get the last handles).

    Args:
        rows: int ``[L, 14]``.
    Returns:
        int64 ``[L', 14]``.
    """
    out = np.asarray(rows).astype(np.int64, copy=False)
    n = len(out)
    if n == 0:
        return out.copy()
    n_del = min(n - 1, int(round(delete_fraction * n)))
    n_dup = int(round(duplicate_fraction * n))
    keep = np.ones(n, dtype=bool)
    if n_del > 0:
        keep[rng.choice(n, size=n_del, replace=False)] = False
    kept = out[keep]
    if n_dup <= 0:
        return kept.copy()
    dup = kept[rng.integers(0, len(kept), size=n_dup)].copy()
    types = dup[:, 0]
    params = dup[:, 1:1 + N_PARAMS]
    dx, dy = (rng.integers(-shift, shift + 1, size=(2, n_dup, 1)) if shift > 0 else np.zeros((2, n_dup, 1), np.int64))
    delta = dx * _IS_X[types] + dy * _IS_Y[types]
    dup[:, 1:1 + N_PARAMS] = np.where(params >= 0, np.clip(params + delta, 0, 255), params)
    return np.concatenate([kept, dup], axis=0)


def revision_view(rows: np.ndarray, cfg: DeepDXFConfig, rng: np.random.Generator) -> np.ndarray:
    """The revision-like edits of a view, switched by the config (each off by default):

    * ``DeepDXF_aug_turn``: with probability ``DeepDXF_turn_prob`` turn by 90°, 180° or 270°;
    * ``DeepDXF_aug_mirror``: with probability 0.5 mirror left-right;
    * ``DeepDXF_turn_views``: one of the 8 turns and mirrors of the square, uniformly
      (``model.DeepDXF_embedding.d4_transform_rows``: about the square's centre, exact);
    * ``DeepDXF_aug_edit``: delete and duplicate up to ``DeepDXF_edit_fraction`` of the
      entities (each share uniform in ``[0, DeepDXF_edit_fraction]``).

    Args:
        rows: int ``[L, 14]`` of the whole drawing (before windows).
    Returns:
        int ``[L', 14]`` (the input itself when nothing is switched on).
    """
    out = rows
    if cfg.DeepDXF_aug_edit and cfg.DeepDXF_edit_fraction > 0:
        f = cfg.DeepDXF_edit_fraction
        out = edit_rows(out, rng.uniform(0, f), rng.uniform(0, f), rng)
    if cfg.DeepDXF_aug_turn and rng.random() < cfg.DeepDXF_turn_prob:
        out = turn_rows(out, int(rng.integers(1, 4)))
    if cfg.DeepDXF_aug_mirror and rng.random() < 0.5:
        out = mirror_rows(out)
    if cfg.DeepDXF_turn_views:
        out = d4_transform_rows(out, int(rng.integers(0, N_D4)))
    return out


def deepdxf_view(rows: np.ndarray, cfg: DeepDXFConfig, rng: np.random.Generator) -> list[Chunk]:
    """One augmented view of a drawing as chunks.

    Args:
        rows: int [L, 14], L >= 1, handle order.
        cfg: augmentation switches ``DeepDXF_aug_*`` and their amounts.
        rng: numpy generator (seeded by the caller).
    Returns:
        Chunks ``(rows [l, 14], index [l], L)`` with 1 <= l <= chunk_len (index and L
        refer to the drawing after :func:`revision_view`).
    """
    rows = revision_view(rows, cfg, rng)
    n = rows.shape[0]
    sx = sy = 0
    if cfg.DeepDXF_aug_shift and cfg.DeepDXF_shift > 0:
        sx, sy = (int(v) for v in rng.integers(-cfg.DeepDXF_shift, cfg.DeepDXF_shift + 1, size=2))
    chunks: list[Chunk] = []
    for idx in _windows(n, cfg, rng):
        if cfg.DeepDXF_aug_drop and cfg.DeepDXF_drop_prob > 0 and idx.size > 1:
            keep = rng.random(idx.size) >= cfg.DeepDXF_drop_prob
            if not keep.any():
                keep[rng.integers(idx.size)] = True
            idx = idx[keep]
        r = rows[idx].astype(np.int64)
        params = r[:, 1:13]
        used = params >= 0
        kinds = r[:, 0]
        delta = np.zeros_like(params)
        if cfg.DeepDXF_aug_jitter and cfg.DeepDXF_jitter > 0:
            j = rng.integers(-cfg.DeepDXF_jitter, cfg.DeepDXF_jitter + 1, size=params.shape)
            delta += j * _CONTINUOUS[kinds]
        if sx or sy:
            delta += sx * _IS_X[kinds] + sy * _IS_Y[kinds]
        if cfg.DeepDXF_aug_param_mask and cfg.DeepDXF_param_mask_prob > 0:
            used = used & (rng.random(params.shape) >= cfg.DeepDXF_param_mask_prob)
        r[:, 1:13] = np.where(used, np.clip(params + delta, 0, 255), -1)
        chunks.append((r, idx, n))
    return chunks


def deepdxf_two_views(items: Sequence[tuple[int, np.ndarray]], cfg: DeepDXFConfig, rng: np.random.Generator,
                      *, pad_to_chunk_len: bool = False) -> DeepDXFBatch:
    """Two augmented views of each drawing of a batch, padded per batch.

    Args:
        items: ``(index, rows int [L, 14])`` per drawing, L >= 1.
        cfg: view settings.
        rng: the generator of the views: first every drawing's view 1, then every view 2.
        pad_to_chunk_len: pad chunks to C instead of the longest chunk of the batch.
    Returns:
        ``DeepDXFBatch`` with ``index`` [N] the items' indices.
    """
    c = cfg.DeepDXF_chunk_len
    v1 = [deepdxf_view(rows, cfg, rng) for _, rows in items]
    v2 = [deepdxf_view(rows, cfg, rng) for _, rows in items]
    return DeepDXFBatch(
        view1=chunk_rows(v1, c, pad_to_chunk_len),
        view2=chunk_rows(v2, c, pad_to_chunk_len),
        index=torch.tensor([i for i, _ in items], dtype=torch.long),
    )


__all__ = [
    "VAL_SEED", "Chunk", "part_generators", "GFViewRates", "gf_view", "gf_pair_views", "gf_two_views", "turn_rows",
    "mirror_rows", "edit_rows", "revision_view", "deepdxf_view", "deepdxf_two_views",
]
