"""The transformer layers of the DeepDXF model: a pre-norm encoder layer and the projection head.

The layers are written on ``torch.nn.functional.scaled_dot_product_attention``
rather than ``nn.TransformerEncoderLayer``: the boolean mask has one meaning
(True = attend) in one place, and there is no inference fast path that returns
different values (nested tensors zero the padded rows) than training does.
The model that stacks them is ``model/DeepDXF_model.py``'s ``DeepDXFModel``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


__all__ = ["PreNormEncoderLayer", "ProjectionHead"]
