"""The DeepDXF model: a chunked transformer encoder over handle-ordered entities, and its API.

A drawing of L entities (handle order) is cut into ceil(L / C) chunks of C
entities; each chunk is encoded by pre-norm transformer layers
(``model/layers/transformer_encoder.py``: attention within the chunk, key-padding
mask), and the entity states of *all* chunks of a drawing are pooled into one
vector, so the embedding covers every entity of long drawings while memory stays
bounded (chunks are encoded in mini-batches at inference).

Pooling (``pooling``):

* ``mean``:  e = (1/L) sum_i h_i
* ``count``: e = [ (1/L) sum_i h_i ;  W_s s ],  s = [log1p L, log1p n_1 .. log1p n_12]
* ``grid``:  e = [F ; R] (``model/layers/grid_pooling.py``): F, log1p of the entities
  per type and cell of grids of several scales (the non-learned layout floor, fixed), and
  R, a learned residual read out of the token states summed per cell, small at
  initialisation, so that the model starts from the floor and adds to it

so ``count`` keeps the drawing's size and composition, which mean pooling throws
away, and ``grid`` keeps the layout as well. The projection head ``g([e ; s])`` (``s`` only when
``hist_in_head``) is used by the loss only; similarity uses ``e``.

Besides the class: :func:`build_deepdxf_model` (``DeepDXFConfig`` -> fresh model),
:func:`deepdxf_model_from_config` (a plain config dict, e.g. a checkpoint's; the weights
are loaded by ``utils.train.checkpoint.load_trained_models``), :func:`deepdxf_step_loss`
(the NT-Xent loss of one :class:`DeepDXFBatch` of two views, callable from any loop) and
:func:`embed_sequences` (whole drawings -> one embedding each, every entity, chunks
encoded in bounded mini-batches; with ``turns``, the mean over the 8 turns and mirrors).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from config.DeepDXF_config import DeepDXFConfig
from config.cli import config_from_dict
from model.DeepDXF_embedding import (N_D4, N_SIZE_FEATURES, ChunkBatch, DeepDXFEmbedding, chunk_rows,
                                     d4_transform_rows, split_into_chunks)
from model.DeepDXF_loss import nt_xent_loss
from model.layers.grid_pooling import DEFAULT_SCALES, GridPooling
from model.layers.transformer_encoder import PreNormEncoderLayer, ProjectionHead


@dataclass
class DeepDXFBatch:
    """Two views of N drawings: the DeepDXF loss's input. ``view1``/``view2`` are ``ChunkBatch``
    of the same N drawings (row i = drawing ``index[i]``); ``n_entities`` counts the real
    entities of both views."""

    view1: ChunkBatch
    view2: ChunkBatch
    index: torch.Tensor

    @property
    def n_drawings(self) -> int:
        return int(self.index.numel())

    @property
    def n_entities(self) -> int:
        return int(self.view1.mask.sum() + self.view2.mask.sum())

    def to(self, device: torch.device | str) -> "DeepDXFBatch":
        return DeepDXFBatch(self.view1.to(device), self.view2.to(device), self.index.to(device))


class DeepDXFModel(nn.Module):
    """Chunked transformer encoder over entity sequences with a projection head.

    Args:
        d_model, layers, heads, ff_mult, dropout: transformer shape.
        chunk_len: C, entities per chunk.
        global_pos_bins: coarse whole-drawing position buckets (0 = off).
        pooling: ``mean``, ``count`` or ``grid`` (see the module docstring).
        size_dim: width of the size block of ``count`` pooling.
        grid_scales: cells per side of the grids of ``grid`` pooling.
        grid_channels: learned channels per cell of ``grid`` pooling.
        grid_dim: width of the learned residual R of ``grid`` pooling.
        hist_in_head: feed the size features into the projection head.
        proj_dim: projection head output size.
        max_embed_len: embed only the first N entities of a drawing (0 = all).
        embed_chunk_batch: chunks encoded at a time when embedding whole drawings.
    """

    def __init__(
        self,
        d_model: int = 64,
        layers: int = 2,
        heads: int = 4,
        ff_mult: int = 2,
        dropout: float = 0.1,
        chunk_len: int = 256,
        global_pos_bins: int = 16,
        pooling: str = "count",
        size_dim: int = 16,
        hist_in_head: bool = True,
        proj_dim: int = 64,
        max_embed_len: int = 0,
        embed_chunk_batch: int = 64,
        grid_scales: Sequence[int] = DEFAULT_SCALES,
        grid_channels: int = 8,
        grid_dim: int = 64,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "count", "grid"):
            raise ValueError(f"unknown pooling {pooling!r}: expected 'mean', 'count' or 'grid'")
        self.chunk_len = chunk_len
        self.pooling = pooling
        self.hist_in_head = hist_in_head
        self.max_embed_len = max_embed_len
        self.embed_chunk_batch = embed_chunk_batch
        self.embedding = DeepDXFEmbedding(d_model, chunk_len, global_pos_bins, dropout)
        self.layers = nn.ModuleList(
            [PreNormEncoderLayer(d_model, heads, ff_mult * d_model, dropout) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(d_model)
        self.size_proj = nn.Linear(N_SIZE_FEATURES, size_dim) if pooling == "count" else None
        self.embed_dim = d_model + (size_dim if pooling == "count" else 0)
        self.grid_pool = None
        if pooling == "grid":  # built last: the other poolings' seeded initialisation stays as it was
            self.grid_pool = GridPooling(d_model, grid_scales, grid_channels, grid_dim, hidden=4 * d_model)
            self.embed_dim = self.grid_pool.out_dim_total
        head_in = self.embed_dim + (N_SIZE_FEATURES if hist_in_head else 0)
        self.head = ProjectionHead(head_in, d_model, proj_dim)

    def encode_chunks(self, batch: ChunkBatch) -> torch.Tensor:
        """Entity states of every chunk. Returns h: [M, C, d_model] (zeros at padding)."""
        x = self.embedding(batch)
        for layer in self.layers:
            x = layer(x, batch.mask)
        return self.norm(x) * batch.mask.unsqueeze(-1)

    def _encoded_parts(self, batch: ChunkBatch, chunk_batch: int = 0
                       ) -> Iterator[tuple[slice, ChunkBatch, torch.Tensor]]:
        """The chunks encoded ``chunk_batch`` at a time (0 = all at once): yields ``(chunks,
        part, h)``, ``chunks`` the slice of the batch's chunks, ``part`` those chunks and
        ``h [m', C, d_model]`` their entity states."""
        m = batch.types.shape[0]
        step = m if chunk_batch <= 0 else chunk_batch
        for s in range(0, m, step):
            part = batch if step >= m else batch.select_chunks(slice(s, s + step))
            yield slice(s, s + step), part, self.encode_chunks(part)

    def _grid_embed(self, batch: ChunkBatch, chunk_batch: int = 0) -> torch.Tensor:
        """``grid`` pooling: the cells of the whole batch first, then each chunk mini-batch's
        states added into its drawings' grids. Returns e = [F ; R]: [N, embed_dim]."""
        pool = self.grid_pool
        cells = pool.cells(batch.types, batch.params, batch.mask, batch.drawing, batch.n_drawings)
        grids = pool.empty_grids(cells.n_drawings, batch.mask.device)
        for chunks, _, h in self._encoded_parts(batch, chunk_batch):
            grids = pool.add_tokens(grids, h, cells.select(chunks))
        return torch.cat([pool.floor(cells), pool.residual(grids)], dim=1)

    def _chunk_sums(self, batch: ChunkBatch, chunk_batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of entity states and entity count per drawing, over all chunks.

        Args:
            batch: M chunks of N drawings.
            chunk_batch: encode at most this many chunks at a time (0 = all at once).
        Returns:
            sums: [N, d_model] float32, counts: [N] float32.
        """
        n = batch.n_drawings
        sums = None
        for _, part, h in self._encoded_parts(batch, chunk_batch):
            h = h.float().sum(dim=1)  # [m', d]
            if sums is None:
                sums = h.new_zeros(n, h.shape[-1])
            sums = sums.index_add(0, part.drawing, h)
        counts = torch.zeros(n, device=batch.mask.device).index_add(0, batch.drawing, batch.mask.sum(1).float())
        return sums, counts

    def pool(self, sums: torch.Tensor, counts: torch.Tensor, size_features: torch.Tensor) -> torch.Tensor:
        """Drawing embedding from pooled entity states. Returns e: [N, embed_dim]."""
        e = sums / counts.clamp_min(1.0).unsqueeze(-1)
        if self.size_proj is not None:
            e = torch.cat([e, self.size_proj(size_features.to(e.dtype)).float()], dim=-1)
        return e

    def embed(self, batch: ChunkBatch, chunk_batch: int = 0) -> torch.Tensor:
        """The drawing embedding used for similarity (before the head). Returns [N, embed_dim]."""
        if self.grid_pool is not None:
            return self._grid_embed(batch, chunk_batch)
        sums, counts = self._chunk_sums(batch, chunk_batch)
        return self.pool(sums, counts, batch.size_features)

    def project(self, e: torch.Tensor, size_features: torch.Tensor) -> torch.Tensor:
        """Projection head input [e ; s] (s when hist_in_head). Returns z: [N, proj_dim]."""
        u = torch.cat([e, size_features.to(e.dtype)], dim=-1) if self.hist_in_head else e
        return self.head(u)

    def forward(self, batch: ChunkBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (e [N, embed_dim], z [N, proj_dim]) for the N drawings of the batch."""
        e = self.embed(batch)
        return e, self.project(e, batch.size_features)


def build_deepdxf_model(cfg: DeepDXFConfig) -> DeepDXFModel:
    """A freshly initialised model of the shape given by ``cfg`` (on the CPU)."""
    return DeepDXFModel(
        d_model=cfg.DeepDXF_d_model,
        layers=cfg.DeepDXF_layers,
        heads=cfg.DeepDXF_heads,
        ff_mult=cfg.DeepDXF_ff_mult,
        dropout=cfg.DeepDXF_dropout,
        chunk_len=cfg.DeepDXF_chunk_len,
        global_pos_bins=cfg.DeepDXF_global_pos_bins,
        pooling=cfg.DeepDXF_pooling,
        size_dim=cfg.DeepDXF_size_dim,
        hist_in_head=cfg.DeepDXF_hist_in_head,
        proj_dim=cfg.DeepDXF_proj_dim,
        max_embed_len=cfg.DeepDXF_max_embed_len,
        embed_chunk_batch=cfg.DeepDXF_embed_chunk_batch,
        grid_scales=cfg.DeepDXF_grid_scales,
        grid_channels=cfg.DeepDXF_grid_channels,
        grid_dim=cfg.DeepDXF_grid_dim,
    )


def deepdxf_model_from_config(config: dict[str, Any]) -> DeepDXFModel:
    """The DeepDXF model of a plain config dict (a ``DeepDXFConfig`` or a flat ``JointConfig``
    as saved in a checkpoint; keys that are not ``DeepDXFConfig`` fields are ignored). Fresh weights."""
    return build_deepdxf_model(config_from_dict(DeepDXFConfig, config))


def deepdxf_step_loss(
    model: DeepDXFModel, batch: DeepDXFBatch, cfg: DeepDXFConfig, return_embeddings: bool = False
) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """NT-Xent loss of one two-view batch (no backward, no optimizer: any loop can call it).

    Args:
        model: the model (its train/eval mode decides whether dropout is on).
        batch: a ``DeepDXFBatch`` of N drawings already on the model's device.
        cfg: gives the temperature.
        return_embeddings: also return the pooled embeddings ``(e1, e2)``, ``[N, embed_dim]`` each.
    Returns:
        loss (float32 scalar, also under autocast), or ``(loss, (e1, e2))``.
    """
    e1, z1 = model(batch.view1)
    e2, z2 = model(batch.view2)
    loss = nt_xent_loss(z1, z2, cfg.DeepDXF_temperature)
    return (loss, (e1, e2)) if return_embeddings else loss


@torch.no_grad()
def embed_sequences(
    model: DeepDXFModel,
    rows_list: Sequence[np.ndarray],
    device: str | torch.device | None = None,
    drawings_per_batch: int = 16,
    chunk_batch: int | None = None,
    max_len: int | None = None,
    turns: bool = False,
) -> np.ndarray:
    """One embedding per drawing: the encoder's pooled output over all its entities.

    Args:
        model: a DeepDXF model (put in eval mode here; its mode is restored after).
        rows_list: n drawings, int ``[L_i, 14]`` each (``L_i >= 1``).
        device: where to compute (default: the model's device).
        drawings_per_batch: drawings whose chunks are gathered together.
        chunk_batch: chunks encoded at a time (bounds memory; default from the model).
        max_len: embed only the first entities (0 = all; default from the model).
        turns: the mean of the embeddings of the 8 turned and mirrored copies of each
            drawing (``d4_transform_rows``): the same for a drawing and its turned copies.
    Returns:
        float32 ``[n, embed_dim]``, row i for ``rows_list[i]``.
    """
    if len(rows_list) == 0:
        return np.zeros((0, model.embed_dim), dtype=np.float32)
    if turns:
        copies = [embed_sequences(model, [d4_transform_rows(r, k) for r in rows_list], device, drawings_per_batch,
                                  chunk_batch, max_len) for k in range(N_D4)]
        return np.mean(copies, axis=0, dtype=np.float64).astype(np.float32)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    chunk_batch = chunk_batch if chunk_batch is not None else model.embed_chunk_batch
    max_len = max_len if max_len is not None else model.max_embed_len
    was_training = model.training
    model.eval()
    out = []
    order = np.argsort([r.shape[0] for r in rows_list], kind="stable")  # similar lengths together
    try:
        for s in range(0, len(order), drawings_per_batch):
            idx = order[s:s + drawings_per_batch]
            batch = chunk_rows([split_into_chunks(rows_list[i], model.chunk_len, max_len) for i in idx],
                               model.chunk_len).to(device)
            out.append(model.embed(batch, chunk_batch=chunk_batch).float().cpu().numpy())
    finally:
        model.train(was_training)
    emb = np.concatenate(out)
    result = np.empty_like(emb)
    result[order] = emb
    return result


__all__ = ["DeepDXFBatch", "DeepDXFModel", "build_deepdxf_model", "deepdxf_model_from_config", "deepdxf_step_loss",
           "embed_sequences"]
