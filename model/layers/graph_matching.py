"""The layers of CGMN-style graph matching on dense batched graphs.

After "CGMN: A Contrastive Graph Matching Network for Self-Supervised Graph
Similarity Learning" (Jin et al., IJCAI 2022), adapted to the 10-node GF graphs:

* :class:`GraphEncoder`: a normalized input projection, then :class:`DenseGGNN`
  with a residual (``[B, N, F] -> [B, N, D]``);
* :func:`masked_attention`: soft node-to-node matching over the real nodes of another graph;
* :class:`Fusion`: a node updated from its match ``mu``: ``h + ELU(W [h, h - mu])``.

The model that puts them together (views, cross-view and cross-graph fusion, the
projection head, the loss) is ``model/GF_model.py``'s ``DenseGraphMatching``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.layers.DenseGGNN import DenseGGNN


def masked_attention(q: Tensor, k: Tensor, k_mask: Tensor) -> Tensor:
    """Soft node-to-node matching: each query node's weighted mean of key nodes.

    ``w = softmax_j(q_i · k_j / sqrt(D))`` over real keys only; a query with no
    real key gets zeros.

    Args:
        q: ``[B, Nq, D]``; k: ``[B, Nk, D]``; k_mask: ``[B, Nk]`` bool.

    Returns:
        ``[B, Nq, D]``.
    """
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~k_mask.unsqueeze(1), float("-inf"))
    w = torch.softmax(scores, dim=-1)
    w = torch.nan_to_num(w, nan=0.0)  # rows without any real key
    return w @ k


class GraphEncoder(nn.Module):
    """Node encoder: ``x0 = LayerNorm(W x)``, then ``h = DenseGGNN(x0) + x0``.

    The GF features are fractions with rows summing to 1; fed to the GGNN as they
    are (zero-padded), every node starts from a nearly identical state and the
    GRU makes them more alike (mean cosine of two nodes of one drawing ~0.95 at
    initialisation on real drawings), which stalls the node-level contrast. The
    normalized input projection and the residual keep the nodes apart (~0.8).

    Args:
        in_channels: ``F``; hidden: ``D``; num_layers: GGNN steps.
    """

    def __init__(self, in_channels: int, hidden: int, num_layers: int) -> None:
        super().__init__()
        self.input = nn.Sequential(nn.Linear(in_channels, hidden), nn.LayerNorm(hidden))
        self.ggnn = DenseGGNN(hidden, hidden, num_layers)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor) -> Tensor:
        """x: ``[B, N, F]``; adj: ``[B, N, N]``; mask: ``[B, N]`` -> ``[B, N, D]``, zero at masked nodes."""
        x0 = self.input(x) * mask.unsqueeze(-1).to(x.dtype)
        return self.ggnn(x0, adj, mask) + x0


class Fusion(nn.Module):
    """Update ``h`` from its match ``μ``: ``h + ELU(W [h, h - μ])``, zero at masked nodes."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(2 * dim, dim)

    def forward(self, h: Tensor, mu: Tensor, mask: Tensor) -> Tensor:
        """h, mu: ``[B, N, D]``; mask: ``[B, N]`` -> ``[B, N, D]``."""
        out = h + F.elu(self.lin(torch.cat([h, h - mu], dim=-1)))
        return out * mask.unsqueeze(-1).to(out.dtype)


__all__ = ["GraphEncoder", "Fusion", "masked_attention"]
