"""Grid pooling: a drawing embedding that contains the counting floor and learns a residual.

Every entity is placed at its reference point (``model.floors.reference_points``: the
mean of its usable slot pairs, :data:`dataset.formats.REF_SLOTS`) and into a cell of an
``s x s`` grid per scale ``s``: the square centred on the box of the *drawing's*
reference points, its side the box's longer side (``model.floors.grid_cells``). The
embedding of drawing ``n`` is ``e_n = [F_n ; R_n]``:

* ``F`` (the floor, no parameters): per scale, ``log1p`` of the entities per type and
  cell ``[12, s, s]``, flattened, scales side by side. Scale 1 is the log type histogram
  (every entity); at scale 8 the block is ``log1p(model.floors.layout_grid(rows, 8))``.
* ``R`` (the learned residual): token states ``h [M, C, d]`` -> ``Linear(d, k)`` ->
  summed per cell ``[k, s, s]`` -> ``sign(x) log1p(|x|)`` -> flattened, scales side by
  side -> LayerNorm -> MLP -> ``[d_r]``. Its last layer starts small (not zero: an
  exactly-zero block is a stationary point of any similarity loss), so that an untrained
  model ranks by cosine almost exactly as ``F`` does.

The layer takes the tensors of a ``model.DeepDXF_embedding.ChunkBatch`` (``types [M, C]``,
``params [M, C, 12]``, ``mask [M, C]``, ``drawing [M]``). A drawing's chunks may lie
anywhere in the batch; boxes are taken per drawing (``drawing``, ``scatter_reduce``),
and the cells are computed once for the whole batch (:func:`grid_cells`), so the token
states of chunk mini-batches can be added into the per-drawing grids one mini-batch at a
time (:meth:`GridPooling.add_tokens`): the result does not depend on the mini-batch size
nor on how a drawing is chunked (given the token states).
Padding entities (``mask`` False) contribute nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from dataset.formats import DEEPDXF_TYPES, N_TYPES, REF_SLOTS

#: the default grid scales (cells per side)
DEFAULT_SCALES: tuple[int, ...] = (1, 4, 8, 16)
#: size of the learned residual ``R`` at initialisation (L2 norm, about the same on any
#: drawing: its input is layer-normalized). ``|F|`` (scales 1, 4, 8, 16) is about 6..15 for
#: drawings of 20..100 entities and 15..50 for 100..1500, so ``R`` starts at about 2..8 %
#: of ``F`` (more on drawings of a handful of entities).
R_INIT_NORM: float = 1.0

_MAX_PAIRS = max(len(v) for v in REF_SLOTS.values())


def _ref_slot_table() -> torch.Tensor:
    """long ``[N_TYPES, _MAX_PAIRS, 2]``: 0-based parameter indices of the (x, y) slots of each
    reference pair of each type, -1 where a type has fewer pairs."""
    table = torch.full((N_TYPES, _MAX_PAIRS, 2), -1, dtype=torch.long)
    for t, name in enumerate(DEEPDXF_TYPES):
        for j, (x, y) in enumerate(REF_SLOTS[name]):
            table[t, j, 0], table[t, j, 1] = x - 1, y - 1
    return table


_REF_TABLE = _ref_slot_table()


def entity_reference_points(types: torch.Tensor, params: torch.Tensor, mask: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference point of every entity, as ``model.floors.reference_points`` takes it from rows.

    Args:
        types: long ``[M, C]`` entity types.
        params: long ``[M, C, 12]`` quantized parameters (-1 = unused).
        mask: bool ``[M, C]``, True for real entities.
    Returns:
        ``(real [M, C] bool: a real entity of a known type, ok [M, C] bool: ``real`` and it has
        a reference point, xy float64 [M, C, 2]: the point, 0 where not ok)``.
    """
    real = mask & (types >= 0) & (types < N_TYPES)
    slots = _REF_TABLE.to(types.device)[types.clamp(0, N_TYPES - 1)]  # [M, C, P, 2]
    m, c, p, _ = slots.shape
    vals = params.gather(-1, slots.clamp(min=0).view(m, c, p * 2)).view(m, c, p, 2).double()
    use = (slots[..., 0] >= 0) & (vals >= 0).all(-1)  # [M, C, P]
    n = use.sum(-1)
    ok = real & (n > 0)
    xy = (vals * use.unsqueeze(-1)).sum(-2) / n.clamp(min=1).unsqueeze(-1).double()
    return real, ok, xy * ok.unsqueeze(-1)


@dataclass
class GridCells:
    """The cell of every entity of a ``ChunkBatch`` at each scale.

    Attributes:
        scales: cells per side, one per entry of ``index``/``valid``.
        index: per scale, long ``[M, C]``: ``drawing * s * s + y cell * s + x cell`` (0 where
            not valid), i.e. a row of the drawings' flattened ``[N * s * s]`` grids.
        valid: per scale, bool ``[M, C]``: the entity counts at that scale (scale 1: every
            real entity; finer scales: real entities with a reference point).
        types: long ``[M, C]`` the entity types (clamped to 0..11).
        n_drawings: N.
    """

    scales: tuple[int, ...]
    index: list[torch.Tensor]
    valid: list[torch.Tensor]
    types: torch.Tensor
    n_drawings: int

    def select(self, idx: torch.Tensor | slice) -> "GridCells":
        """The cells of the chunks ``idx`` (as ``ChunkBatch.select_chunks`` selects chunks)."""
        return GridCells(self.scales, [i[idx] for i in self.index], [v[idx] for v in self.valid], self.types[idx],
                         self.n_drawings)


def grid_cells(types: torch.Tensor, params: torch.Tensor, mask: torch.Tensor, drawing: torch.Tensor,
               n_drawings: int, scales: Sequence[int]) -> GridCells:
    """The cells of every entity of a chunk batch, per drawing as ``model.floors.grid_cells``.

    The box of drawing ``n`` is the box of the reference points of all its entities in the
    batch, whichever chunks hold them; vectorized, no loop over entities or drawings.

    Args:
        types: long ``[M, C]``; params: long ``[M, C, 12]``; mask: bool ``[M, C]``.
        drawing: long ``[M]``, the drawing (0..N-1) of each chunk.
        n_drawings: N.
        scales: cells per side.
    Returns:
        :class:`GridCells`.
    """
    n = n_drawings
    real, ok, xy = entity_reference_points(types, params, mask)
    drawing = drawing.view(-1, 1).expand_as(ok)
    d, x, y = drawing[ok], xy[..., 0][ok], xy[..., 1][ok]
    inf = torch.full((n,), float("inf"), dtype=torch.float64, device=xy.device)
    lo_x, lo_y = inf.scatter_reduce(0, d, x, "amin"), inf.scatter_reduce(0, d, y, "amin")
    hi_x, hi_y = (-inf).scatter_reduce(0, d, x, "amax"), (-inf).scatter_reduce(0, d, y, "amax")
    half = torch.clamp(torch.maximum(hi_x - lo_x, hi_y - lo_y) / 2.0, min=0.5)
    u_x = (x - (lo_x + hi_x)[d] / 2.0) / (2.0 * half[d]) + 0.5  # in [0, 1]
    u_y = (y - (lo_y + hi_y)[d] / 2.0) / (2.0 * half[d]) + 0.5
    index, valid = [], []
    for s in scales:
        if s == 1:
            index.append(torch.where(real, drawing, torch.zeros_like(drawing)))
            valid.append(real)
            continue
        cx = torch.clamp(torch.floor(u_x * s), 0, s - 1).long()
        cy = torch.clamp(torch.floor(u_y * s), 0, s - 1).long()
        flat = torch.zeros_like(drawing)
        flat[ok] = d * (s * s) + cy * s + cx
        index.append(flat)
        valid.append(ok)
    return GridCells(tuple(scales), index, valid, types.clamp(0, N_TYPES - 1), n)


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log1p(|x|)``, elementwise."""
    return torch.sign(x) * torch.log1p(x.abs())


class GridPooling(nn.Module):
    """Entity states of a ``ChunkBatch`` -> ``e = [F ; R]`` per drawing (see the module docstring).

    Args:
        in_dim: d, width of the token states.
        scales: cells per side of each grid (each >= 1).
        channels: k, learned channels per cell.
        out_dim: d_r, width of the learned residual ``R``.
        hidden: hidden width of the readout MLP.
    Attributes:
        floor_dim: ``12 * sum(s * s)``, width of ``F``.
        out_dim_total: ``floor_dim + out_dim``, width of ``e``.
    """

    def __init__(self, in_dim: int, scales: Sequence[int] = DEFAULT_SCALES, channels: int = 8, out_dim: int = 64,
                 hidden: int = 256) -> None:
        super().__init__()
        if not scales or min(scales) < 1:
            raise ValueError(f"grid scales must be >= 1, got {tuple(scales)}")
        self.scales = tuple(int(s) for s in scales)
        self.channels = channels
        cells = sum(s * s for s in self.scales)
        self.floor_dim = N_TYPES * cells
        self.out_dim_total = self.floor_dim + out_dim
        self.token_proj = nn.Linear(in_dim, channels)
        self.readout = nn.Sequential(nn.LayerNorm(channels * cells), nn.Linear(channels * cells, hidden), nn.GELU(),
                                     nn.Linear(hidden, out_dim))
        self._init_small_residual(out_dim, hidden)

    def _init_small_residual(self, out_dim: int, hidden: int) -> None:
        """Last layer ~ N(0, sigma^2), sigma such that ``|R|`` is about :data:`R_INIT_NORM`: the
        layer-normalized input gives hidden activations of mean square ~0.1 (GELU of a
        variance-1/3 pre-activation), so ``|R|^2 ~ out_dim * hidden * 0.1 * sigma^2``."""
        last = self.readout[-1]
        with torch.no_grad():
            last.weight.normal_(0.0, R_INIT_NORM / (out_dim * hidden * 0.1) ** 0.5)
            last.bias.zero_()

    def cells(self, types: torch.Tensor, params: torch.Tensor, mask: torch.Tensor, drawing: torch.Tensor,
              n_drawings: int) -> GridCells:
        """:func:`grid_cells` of a chunk batch at this module's scales."""
        return grid_cells(types, params, mask, drawing, n_drawings, self.scales)

    def floor(self, cells: GridCells) -> torch.Tensor:
        """``F``: float32 ``[N, floor_dim]``, per scale ``log1p`` of counts ``[12, s, s]`` flattened."""
        n, out = cells.n_drawings, []
        for s, index, valid in zip(cells.scales, cells.index, cells.valid):
            drawing, cell = index // (s * s), index % (s * s)
            flat = (drawing * N_TYPES + cells.types) * (s * s) + cell  # row of [N, 12, s, s]
            counts = torch.zeros(n * N_TYPES * s * s, dtype=torch.float64, device=index.device)
            counts.index_add_(0, flat[valid], torch.ones_like(flat[valid], dtype=torch.float64))
            out.append(torch.log1p(counts).view(n, -1))
        return torch.cat(out, dim=1).float()

    def empty_grids(self, n_drawings: int, device: torch.device | str) -> list[torch.Tensor]:
        """Zero learned grids: per scale float32 ``[N * s * s, k]``."""
        return [torch.zeros(n_drawings * s * s, self.channels, device=device) for s in self.scales]

    def add_tokens(self, grids: list[torch.Tensor], h: torch.Tensor, cells: GridCells) -> list[torch.Tensor]:
        """Add the projected token states of some chunks into the grids of their drawings.

        Args:
            grids: per scale ``[N * s * s, k]`` (not changed: autograd-safe).
            h: ``[m, C, d]`` token states of m chunks.
            cells: the cells of those m chunks (``GridCells.select``).
        Returns:
            the new grids, per scale ``[N * s * s, k]`` float32.
        """
        v = self.token_proj(h).float()  # [m, C, k]
        return [g.index_add(0, index[valid], v[valid]) for g, index, valid in zip(grids, cells.index, cells.valid)]

    def residual(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """``R``: the summed grids ``[N * s * s, k]`` per scale -> float32 ``[N, out_dim]``."""
        parts = []
        for s, g in zip(self.scales, grids):
            n = g.shape[0] // (s * s)
            parts.append(signed_log1p(g).view(n, s, s, self.channels).permute(0, 3, 1, 2).reshape(n, -1))
        return self.readout(torch.cat(parts, dim=1)).float()

    def forward(self, h: torch.Tensor, types: torch.Tensor, params: torch.Tensor, mask: torch.Tensor,
                drawing: torch.Tensor, n_drawings: int) -> torch.Tensor:
        """All chunks at once.

        Args:
            h: ``[M, C, d]`` token states; types ``[M, C]``, params ``[M, C, 12]``, mask
                ``[M, C]``, drawing ``[M]``: the chunk batch; n_drawings: N.
        Returns:
            e = [F ; R]: float32 ``[N, out_dim_total]``.
        """
        cells = self.cells(types, params, mask, drawing, n_drawings)
        grids = self.add_tokens(self.empty_grids(cells.n_drawings, h.device), h, cells)
        return torch.cat([self.floor(cells), self.residual(grids)], dim=1)


__all__ = ["DEFAULT_SCALES", "R_INIT_NORM", "GridCells", "GridPooling", "entity_reference_points", "grid_cells",
           "signed_log1p"]
