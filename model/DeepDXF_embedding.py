"""Input embedding of the DeepDXF model.

One entity row ``[type, p_1 .. p_12, dim_value]`` (int32, handle order) becomes one
``d_model`` vector:

    e = E_type[type] + sum_k E_k[p_k + 1] + E_pos[position in chunk]
        + E_global[bucket of position in the whole drawing]
        + [type == DIMENSION] * W_v * (sign(v) * log1p(|v|)),   v = dim_value / 1000

Each parameter slot ``k`` has its own table ``E_k`` of 256 values plus the padding
entry for ``p_k = -1`` (unused slot, i.e. ``p_k + 1 = 0``), whose vector is zero and
never trained (as DeepCAD). The 12 tables are stored end to end in one weight behind
one shared zero row so the lookup is a single ``embedding_bag`` sum.
The coarse global position lets a chunk know where in the drawing it lies, since
attention only runs within a chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataset.formats import BOX_SLOTS, DEEPDXF_TYPES, N_COLUMNS, N_PARAMS, N_TYPES, PARAM_TABLE, TYPE_INDEX, VALUE_COLUMN

DIMENSION_TYPE: int = list(DEEPDXF_TYPES).index("DIMENSION")
N_QUANT: int = 256  # quantized values 0..255
N_SIZE_FEATURES: int = N_TYPES + 1  # log1p(entity count), log1p(count of each type)
N_D4: int = 8  # the turns and mirrors of the square: d4_transform_rows' k

# [N_TYPES, N_PARAMS]: X slots (each followed by its Y slot) and angle slots of each type
_IS_X = np.zeros((N_TYPES, N_PARAMS), dtype=bool)
_IS_ANGLE = np.zeros((N_TYPES, N_PARAMS), dtype=bool)
for _name, _kinds in PARAM_TABLE.items():
    _IS_X[TYPE_INDEX[_name], :len(_kinds)] = [k == "X" for k in _kinds]
    _IS_ANGLE[TYPE_INDEX[_name], :len(_kinds)] = [k == "A" for k in _kinds]
_Q_MAX = N_QUANT - 1  # the largest quantized value: x -> _Q_MAX - x mirrors about the centre
_ANGLE_QUARTER = N_QUANT // 4  # 90 degrees in the angle quantization
_ANGLE_HALF = N_QUANT // 2
_ARC_ANGLES = (3, 4)  # 0-based parameter indices of an ARC's start and end angles


@dataclass
class ChunkBatch:
    """Entities of N drawings (or views) cut into M handle-ordered chunks of <= C rows.

    Attributes:
        types: [M, C] long, entity type 0..N_TYPES-1 (0 at padding).
        params: [M, C, N_PARAMS] long, quantized parameters -1..255 (-1 = unused or padding).
        values: [M, C] float, DIMENSION value in drawing units (0 elsewhere).
        gpos: [M, C] float, position of the entity in its whole drawing, in [0, 1).
        mask: [M, C] bool, True for real entities.
        drawing: [M] long, index (0..N-1) of the drawing each chunk belongs to.
        size_features: [N, N_SIZE_FEATURES] float, log1p of the entity count and of
            each type's count, of the entities this batch holds for each drawing.
    """

    types: torch.Tensor
    params: torch.Tensor
    values: torch.Tensor
    gpos: torch.Tensor
    mask: torch.Tensor
    drawing: torch.Tensor
    size_features: torch.Tensor

    @property
    def n_drawings(self) -> int:
        return int(self.size_features.shape[0])

    def to(self, device: torch.device | str) -> "ChunkBatch":
        return ChunkBatch(**{k: getattr(self, k).to(device, non_blocking=True) for k in self.__dataclass_fields__})

    def select_chunks(self, idx: torch.Tensor | slice) -> "ChunkBatch":
        """The same batch restricted to the chunks ``idx`` (size features kept)."""
        kw = {k: getattr(self, k)[idx] for k in ("types", "params", "values", "gpos", "mask", "drawing")}
        return ChunkBatch(size_features=self.size_features, **kw)


def size_features(rows: np.ndarray) -> np.ndarray:
    """log1p(entity count) and log1p(count of each type) of one drawing or view.

    Args:
        rows: int [L, N_COLUMNS].
    Returns:
        float32 [N_SIZE_FEATURES].
    """
    counts = np.bincount(rows[:, 0].astype(np.int64), minlength=N_TYPES)[:N_TYPES]
    return np.log1p(np.concatenate([[rows.shape[0]], counts])).astype(np.float32)


def chunk_rows(
    pieces: list[list[tuple[np.ndarray, np.ndarray, int]]],
    chunk_len: int,
    pad_to_chunk_len: bool = False,
) -> ChunkBatch:
    """Pack the chunks of several drawings into one padded ``ChunkBatch``.

    Args:
        pieces: per drawing, a list of chunks ``(rows int [l, N_COLUMNS], index int [l],
            n_total)`` with ``1 <= l <= chunk_len``; ``index`` is each row's position in
            the whole drawing of ``n_total`` entities.
        chunk_len: C, the maximum rows per chunk.
        pad_to_chunk_len: pad every chunk to C instead of the longest chunk here.
    Returns:
        The batch; chunks are padded to the longest chunk (or C).
    """
    flat = [(d, r, i, n) for d, chunks in enumerate(pieces) for (r, i, n) in chunks]
    if not flat:
        raise ValueError("chunk_rows needs at least one chunk")
    width = chunk_len if pad_to_chunk_len else max(r.shape[0] for _, r, _, _ in flat)
    m = len(flat)
    rows = np.full((m, width, N_COLUMNS), -1, dtype=np.int64)
    rows[:, :, 0] = 0
    gpos = np.zeros((m, width), dtype=np.float32)
    mask = np.zeros((m, width), dtype=bool)
    for j, (_, r, i, n) in enumerate(flat):  # one copy per chunk, not per entity
        l = r.shape[0]
        if l > width:
            raise ValueError(f"chunk of {l} rows is longer than chunk_len={width}")
        rows[j, :l] = r
        gpos[j, :l] = i / max(n, 1)
        mask[j, :l] = True
    feats = np.stack([
        size_features(np.concatenate([r for r, _, _ in chunks])) for chunks in pieces
    ])
    types = rows[:, :, 0]
    is_dim = mask & (types == DIMENSION_TYPE)
    values = np.where(is_dim, rows[:, :, VALUE_COLUMN], 0).astype(np.float32) / 1000.0
    return ChunkBatch(
        types=torch.from_numpy(types),
        params=torch.from_numpy(rows[:, :, 1:1 + N_PARAMS].copy()),
        values=torch.from_numpy(values),
        gpos=torch.from_numpy(gpos),
        mask=torch.from_numpy(mask),
        drawing=torch.tensor([d for d, _, _, _ in flat], dtype=torch.long),
        size_features=torch.from_numpy(feats),
    )


def split_into_chunks(rows: np.ndarray, chunk_len: int, max_len: int = 0) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Cut a whole drawing into consecutive handle-ordered chunks (for embedding).

    Args:
        rows: int [L, N_COLUMNS], L >= 1.
        chunk_len: C.
        max_len: keep only the first ``max_len`` rows (0 = all).
    Returns:
        ``ceil(L / C)`` chunks ``(rows [l, N_COLUMNS], index [l], L)``.
    """
    if rows.ndim != 2 or rows.shape[1] != N_COLUMNS:
        raise ValueError(f"expected entity rows of shape [L, {N_COLUMNS}], got {tuple(rows.shape)}")
    if rows.shape[0] == 0:
        raise ValueError("a drawing without entities cannot be embedded")
    if max_len > 0:
        rows = rows[:max_len]
    n = rows.shape[0]
    index = np.arange(n)
    return [(rows[s:s + chunk_len], index[s:s + chunk_len], n) for s in range(0, n, chunk_len)]


def d4_transform_rows(rows: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 turns and mirrors of the square applied to a drawing's rows.

    The quantized drawing lies in the 0..255 square; it is turned about the square's
    centre (127.5, 127.5), which maps the integer grid onto itself, so every transform
    is exact and :data:`N_D4` of them form the group D4:

    * mirrored first when ``k >= 4``: ``x -> 255 - x``, angles ``a -> 128 - a``, an ARC's
      start and end angles swapped (it still runs counter-clockwise);
    * then turned counter-clockwise ``k % 4`` times: ``(x, y) -> (255 - y, x)``, angles
      ``+ 64`` (mod 256);
    * box slots (:data:`dataset.formats.BOX_SLOTS`) sorted again to ``min <= max``.

    An X slot and the Y slot after it are a point (``dataset.formats.PARAM_TABLE``); a
    point with an unused (-1) half, unused slots, lengths, counts, scales and the value
    column stay as they are. A mirrored transform is its own inverse; four quarter turns
    are the identity.

    Args:
        rows: int ``[L, N_COLUMNS]`` DeepDXF rows.
        k: 0..7.
    Returns:
        int64 ``[L, N_COLUMNS]`` (a copy).
    """
    if not 0 <= int(k) < N_D4:
        raise ValueError(f"k must be in 0..{N_D4 - 1}, got {k}")
    out = np.array(rows, dtype=np.int64, copy=True)
    if k == 0 or out.size == 0:
        return out
    types = out[:, 0]
    known = (types >= 0) & (types < N_TYPES)
    t = np.clip(types, 0, N_TYPES - 1)
    params = out[:, 1:1 + N_PARAMS]
    new = params.copy()
    partner = np.full_like(params, -1)  # the Y slot after each X slot
    partner[:, :-1] = params[:, 1:]
    ri, ci = np.nonzero(_IS_X[t] & known[:, None] & (params >= 0) & (partner >= 0))
    x, y = params[ri, ci], params[ri, ci + 1]
    if k >= 4:
        x = _Q_MAX - x
    for _ in range(k % 4):
        x, y = _Q_MAX - y, x
    new[ri, ci], new[ri, ci + 1] = x, y
    angle = _IS_ANGLE[t] & known[:, None] & (params >= 0)
    a = params[angle]
    if k >= 4:
        a = _ANGLE_HALF - a
    new[angle] = (a + _ANGLE_QUARTER * (k % 4)) % N_QUANT
    if k >= 4:
        arc = types == TYPE_INDEX["ARC"]
        s, e = _ARC_ANGLES
        new[arc, s], new[arc, e] = new[arc, e].copy(), new[arc, s].copy()
    for name, (x0, y0, x1, y1) in BOX_SLOTS.items():
        box = (types == TYPE_INDEX[name]) & (params[:, [x0, y0, x1, y1]] >= 0).all(1)
        lo_x, hi_x = np.minimum(new[box, x0], new[box, x1]), np.maximum(new[box, x0], new[box, x1])
        lo_y, hi_y = np.minimum(new[box, y0], new[box, y1]), np.maximum(new[box, y0], new[box, y1])
        new[box, x0], new[box, x1], new[box, y0], new[box, y1] = lo_x, hi_x, lo_y, hi_y
    out[:, 1:1 + N_PARAMS] = new
    return out


class DeepDXFEmbedding(nn.Module):
    """Entity rows -> vectors.

    Args:
        d_model: output width.
        chunk_len: maximum position within a chunk.
        global_pos_bins: buckets of the position in the whole drawing (0 = off).
        dropout: dropout on the summed embedding.
    """

    def __init__(self, d_model: int, chunk_len: int, global_pos_bins: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.type_emb = nn.Embedding(N_TYPES, d_model)
        # One 256-row table per slot, stored end to end in one table behind a shared
        # padding row 0 (value -1): index = 1 + k * 256 + value. The lookup is one
        # embedding_bag sum over the slots; row 0 stays zero and gets no gradient.
        self.param_emb = nn.Embedding(1 + N_PARAMS * N_QUANT, d_model, padding_idx=0)
        self.register_buffer("slot_offset", 1 + torch.arange(N_PARAMS) * N_QUANT, persistent=False)
        self.pos_emb = nn.Embedding(chunk_len, d_model)
        self.global_pos_bins = global_pos_bins
        self.global_emb = nn.Embedding(global_pos_bins, d_model) if global_pos_bins > 0 else None
        self.value_proj = nn.Linear(1, d_model)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in (self.type_emb, self.param_emb, self.pos_emb, self.global_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.param_emb.weight[0] = 0.0
        nn.init.normal_(self.value_proj.weight, std=0.02)
        nn.init.zeros_(self.value_proj.bias)

    def forward(self, batch: ChunkBatch) -> torch.Tensor:
        """Embed the entities of a chunk batch.

        Args:
            batch: ``ChunkBatch`` with types [M, C], params [M, C, P], values [M, C],
                gpos [M, C], mask [M, C].
        Returns:
            x: [M, C, d_model]; padded positions hold zeros.
        """
        m, c = batch.types.shape
        p = batch.params.clamp(-1, N_QUANT - 1)  # [M, C, P], -1 = unused slot
        idx = torch.where(p >= 0, p + self.slot_offset, torch.zeros_like(p)).view(m * c, -1)
        slots = F.embedding_bag(idx, self.param_emb.weight, mode="sum", padding_idx=0).view(m, c, -1)
        x = self.type_emb(batch.types.clamp(0, N_TYPES - 1)) + slots
        pos = torch.arange(c, device=x.device)
        x = x + self.pos_emb(pos)[None]
        if self.global_emb is not None:
            bucket = (batch.gpos * self.global_pos_bins).long().clamp(0, self.global_pos_bins - 1)
            x = x + self.global_emb(bucket)
        v = batch.values
        num = (torch.sign(v) * torch.log1p(v.abs())).unsqueeze(-1).to(x.dtype)  # [M, C, 1]
        is_dim = (batch.types == DIMENSION_TYPE).unsqueeze(-1)
        x = x + self.value_proj(num) * is_dim
        x = x * batch.mask.unsqueeze(-1)
        return self.dropout(x)


__all__ = [
    "ChunkBatch",
    "DeepDXFEmbedding",
    "DIMENSION_TYPE",
    "N_D4",
    "N_COLUMNS",
    "N_PARAMS",
    "N_SIZE_FEATURES",
    "N_TYPES",
    "VALUE_COLUMN",
    "chunk_rows",
    "d4_transform_rows",
    "size_features",
    "split_into_chunks",
]
