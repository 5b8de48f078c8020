"""Transformer encoder, chunk pooling and projection head of DeepDXF.

A drawing of L entities (handle order) is cut into ceil(L / C) chunks of C
entities; each chunk is encoded by pre-norm transformer layers (attention within
the chunk, key-padding mask), and the entity states of *all* chunks of a drawing
are pooled into one vector, so the embedding covers every entity of long drawings
while memory stays bounded (chunks are encoded in mini-batches at inference).

Pooling (``pooling``):

* ``mean``:  e = (1/L) sum_i h_i
* ``count``: e = [ (1/L) sum_i h_i ;  W_s s ],  s = [log1p L, log1p n_1 .. log1p n_12]

so ``count`` keeps the drawing's size and composition, which mean pooling throws
away. The projection head ``g([e ; s])`` (``s`` only when
``hist_in_head``) is used by the loss only; similarity uses ``e``.

The layers are written on ``torch.nn.functional.scaled_dot_product_attention``
rather than ``nn.TransformerEncoderLayer``: the boolean mask has one meaning
(True = attend) in one place, and there is no inference fast path that returns
different values (nested tensors zero the padded rows) than training does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.DeepDXF_embedding import N_SIZE_FEATURES, ChunkBatch, DeepDXFEmbedding


class PreNormEncoderLayer(nn.Module):
    """x = x + Drop(MHA(LN(x))); x = x + Drop(FF(LN(x))), attention masked by key padding.

    Args:
        d_model: width.
        heads: attention heads (d_model divisible by heads).
        ff_dim: hidden width of the feed-forward block.
        dropout: dropout on the residual branches and inside the feed-forward block. Not on
            the attention weights: that would force the unfused attention path, about
            10x slower on CPU, and the residual dropout already makes two views differ.
    """

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, C, d]; mask: [B, C] bool (True = real entity). Returns [B, C, d]."""
        b, c, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, c, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = mask[:, None, None, :]  # [B, 1, 1, C]: every query sees the real keys only
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, c, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class ProjectionHead(nn.Module):
    """z = W_2 GELU(W_1 u): maps the pooled embedding (and size features) to the loss space."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: [N, in_dim] -> [N, out_dim]."""
        return self.net(u)


class DeepDXFModel(nn.Module):
    """Chunked transformer encoder over entity sequences with a projection head.

    Args:
        d_model, layers, heads, ff_mult, dropout: transformer shape.
        chunk_len: C, entities per chunk.
        global_pos_bins: coarse whole-drawing position buckets (0 = off).
        pooling: ``mean`` or ``count`` (see the module docstring).
        size_dim: width of the size block of ``count`` pooling.
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
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "count"):
            raise ValueError(f"unknown pooling {pooling!r}: expected 'mean' or 'count'")
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
        head_in = self.embed_dim + (N_SIZE_FEATURES if hist_in_head else 0)
        self.head = ProjectionHead(head_in, d_model, proj_dim)

    def encode_chunks(self, batch: ChunkBatch) -> torch.Tensor:
        """Entity states of every chunk. Returns h: [M, C, d_model] (zeros at padding)."""
        x = self.embedding(batch)
        for layer in self.layers:
            x = layer(x, batch.mask)
        return self.norm(x) * batch.mask.unsqueeze(-1)

    def _chunk_sums(self, batch: ChunkBatch, chunk_batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of entity states and entity count per drawing, over all chunks.

        Args:
            batch: M chunks of N drawings.
            chunk_batch: encode at most this many chunks at a time (0 = all at once).
        Returns:
            sums: [N, d_model] float32, counts: [N] float32.
        """
        n = batch.n_drawings
        m = batch.types.shape[0]
        step = m if chunk_batch <= 0 else chunk_batch
        sums = None
        for s in range(0, m, step):
            part = batch if step >= m else batch.select_chunks(slice(s, s + step))
            h = self.encode_chunks(part).float().sum(dim=1)  # [m', d]
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


__all__ = ["DeepDXFModel", "PreNormEncoderLayer", "ProjectionHead"]
