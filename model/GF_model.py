"""The GF model: CGMN-style contrastive graph matching of 10-node class graphs.

After "CGMN: A Contrastive Graph Matching Network for Self-Supervised Graph
Similarity Learning" (Jin et al., IJCAI 2022), adapted to the GF graphs. One
training step on a batch of ``B`` pairs of graphs ``(g1, g2)``, given two views of
every graph (:class:`PairViews`, drawn by the data loader: ``dataset/loaders/views.py``):

1. all ``4B`` views encoded by one shared ``GraphEncoder`` (``model/layers/graph_matching.py``:
   a normalized input projection, then ``DenseGGNN`` with a residual);
2. cross-view fusion: each node attends over the nodes of the other view of the
   same graph (masked softmax of scaled dot products) and is updated from
   ``[h, h - mu]``;
3. cross-graph fusion: each node of a view of ``g1`` attends over the nodes of
   both views of ``g2`` (and vice versa), same update;
4. a projection head and the node-level contrastive loss (``model/GF_loss.py``, GRACE
   style) between the two views of each graph, averaged over the graphs.

Labels are not used: every drawing is its own class. The embedding used for
similarity (:meth:`DenseGraphMatching.encode`; :meth:`~DenseGraphMatching.embed` is
its no-gradient form) comes from the encoder alone: by default the node states
concatenated in node (= entity class) order, which keeps which class is which and
zeros for absent classes.

Besides the class: :func:`build_gf_model` (``GFConfig`` -> fresh model),
:func:`gf_model_from_config` (a plain config dict, e.g. a checkpoint's; the weights are
loaded by ``utils.train.checkpoint.load_trained_models``) and :func:`embed_graphs`
(``features [n,10,F]``, F = 11 or 11 + LAYOUT_DIM, ``adjacency [n,10,10]`` -> ``np.ndarray [n, D]``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from config.GF_config import SAVED_CONFIG_FALLBACKS, GFConfig
from config.cli import config_from_dict
from model.GF_loss import node_contrastive_loss
from model.layers.graph_matching import Fusion, GraphEncoder, masked_attention

POOLINGS = ("concat", "mean", "sum", "concat_input")


def node_mask(features: Tensor, adjacency: Tensor) -> Tensor:
    """Real nodes of GF graphs: classes with at least one entity.

    A class with entities has a nonzero free count or a nonzero overlap row, or
    an edge; an absent class has an all-zero row and no edges.

    Args:
        features: ``[..., N, F]``; adjacency: ``[..., N, N]``.

    Returns:
        ``[..., N]`` bool.
    """
    return (features.abs().sum(-1) > 0) | (adjacency.abs().sum(-1) > 0)


@dataclass
class GraphBatch:
    """``B`` dense GF graphs.

    Attributes:
        x: ``[B, N, F]`` node features; adj: ``[B, N, N]`` symmetric 0/1;
        mask: ``[B, N]`` bool, real nodes (:func:`node_mask`).
    """

    x: Tensor
    adj: Tensor
    mask: Tensor

    def to(self, device: torch.device | str) -> "GraphBatch":
        return GraphBatch(self.x.to(device), self.adj.to(device), self.mask.to(device))


@dataclass
class PairViews:
    """Two views of each graph of ``B`` pairs ``(g1, g2)``: the GF loss's input.

    Attributes:
        x: ``[4, B, N, F]`` in the order (g1 view a, g1 view b, g2 view a, g2 view b).
        adj: ``[4, B, N, N]``, same order.
        mask1, mask2: ``[B, N]`` bool, real nodes of g1 and g2.
    """

    x: Tensor
    adj: Tensor
    mask1: Tensor
    mask2: Tensor

    @property
    def n_pairs(self) -> int:
        return int(self.mask1.shape[0])

    def to(self, device: torch.device | str) -> "PairViews":
        return PairViews(self.x.to(device), self.adj.to(device), self.mask1.to(device), self.mask2.to(device))


class DenseGraphMatching(nn.Module):
    """CGMN contrastive graph matching over pairs of dense graphs.

    Args:
        in_channels: node feature size ``F`` (11 for GF graphs).
        hidden: node state size ``D`` of the encoder.
        num_layers: GGNN propagation steps.
        proj_dim: output size of the projection head.
        temperature: of the node-level contrastive loss.
        pooling: default graph embedding of :meth:`embed` (one of ``POOLINGS``).
    """

    def __init__(
        self,
        in_channels: int = 11,
        hidden: int = 32,
        num_layers: int = 3,
        proj_dim: int = 32,
        temperature: float = 0.2,
        pooling: str = "concat",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        self.pooling = pooling
        self.in_channels = in_channels  # node feature width F
        self.encoder = GraphEncoder(in_channels, hidden, num_layers)
        self.cross_view = Fusion(hidden)
        self.cross_graph = Fusion(hidden)
        self.projection = nn.Sequential(nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, proj_dim))
        self.temperature = temperature

    def match(self, xs: Tensor, adjs: Tensor, mask1: Tensor, mask2: Tensor) -> Tensor:
        """Encode, fuse and project four views per pair.

        Args:
            xs: ``[4, B, N, F]`` views in the order (g1 view a, g1 view b, g2 view a, g2 view b).
            adjs: ``[4, B, N, N]`` their adjacency.
            mask1, mask2: ``[B, N]`` real nodes of g1 and g2.

        Returns:
            ``[4, B, N, P]`` projected node states, same order.
        """
        V, B, N, Fdim = xs.shape
        masks = torch.stack([mask1, mask1, mask2, mask2])  # [4, B, N]
        h = self.encoder(xs.reshape(V * B, N, Fdim), adjs.reshape(V * B, N, N), masks.reshape(V * B, N))
        h = h.view(V, B, N, -1)
        D = h.shape[-1]

        # cross-view: a <-> b of the same graph
        partner = h[[1, 0, 3, 2]]
        mu = masked_attention(h.reshape(V * B, N, D), partner.reshape(V * B, N, D), masks.reshape(V * B, N))
        h = self.cross_view(h.reshape(V * B, N, D), mu, masks.reshape(V * B, N)).view(V, B, N, D)

        # cross-graph: each view of g1 attends over both views of g2, and vice versa
        keys_g2 = torch.cat([h[2], h[3]], dim=1)  # [B, 2N, D]
        keys_g1 = torch.cat([h[0], h[1]], dim=1)
        keys = torch.stack([keys_g2, keys_g2, keys_g1, keys_g1])  # [4, B, 2N, D]
        kmask = torch.stack([torch.cat([mask2, mask2], 1)] * 2 + [torch.cat([mask1, mask1], 1)] * 2)
        mu = masked_attention(h.reshape(V * B, N, D), keys.reshape(V * B, 2 * N, D), kmask.reshape(V * B, 2 * N))
        h = self.cross_graph(h.reshape(V * B, N, D), mu, masks.reshape(V * B, N))

        z = self.projection(h) * masks.reshape(V * B, N, 1).to(h.dtype)
        return z.view(V, B, N, -1)

    def loss(self, views: PairViews) -> Tensor:
        """Contrastive matching loss of one batch of ``B`` pairs, from their drawn views.

        Args:
            views: two views of each graph of the ``B`` pairs (drawn by the data loader,
                ``dataset/loaders/views.py``).

        Returns:
            scalar: node-level contrastive loss between the two views of each
            graph, averaged over the ``2B`` graphs.
        """
        z = self.match(views.x, views.adj, views.mask1, views.mask2)
        l1 = node_contrastive_loss(z[0], z[1], views.mask1, self.temperature)
        l2 = node_contrastive_loss(z[2], z[3], views.mask2, self.temperature)
        return 0.5 * (l1 + l2)

    def encode(self, x: Tensor, adj: Tensor, mask: Optional[Tensor] = None, pooling: Optional[str] = None) -> Tensor:
        """Graph embeddings from the encoder (no views, no fusion, no projection), with gradient.

        This is what the similarity embedding is made of; :meth:`embed` is the same
        without gradient. Padding (rows outside ``mask``) does not change the result.

        Args:
            x: ``[B, N, F]``; adj: ``[B, N, N]``; mask: ``[B, N]`` bool (None: :func:`node_mask`).
            pooling: None for ``self.pooling``; ``concat`` (node states in node = class order,
                ``[B, N*D]``; keeps which class is which and zeros for absent classes),
                ``mean`` or ``sum`` over real nodes (``[B, D]``), or ``concat_input``: the
                L2-normalized ``concat`` block followed by the L2-normalized raw input
                (features and adjacency flattened), ``[B, N*D + N*F + N*N]``.

        Returns:
            ``[B, D']`` in the encoder's dtype.
        """
        pooling = pooling or self.pooling
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if mask is None:
            mask = node_mask(x, adj)
        h = self.encoder(x, adj, mask)  # [B, N, D], zero at masked nodes
        if pooling == "concat":
            return h.flatten(1)
        if pooling == "sum":
            return h.sum(1)
        if pooling == "mean":
            return h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(h.dtype)
        raw = torch.cat([x.flatten(1), adj.flatten(1)], dim=1)  # concat_input
        return torch.cat([F.normalize(h.flatten(1), dim=1), F.normalize(raw, dim=1)], dim=1)

    def embed(self, x: Tensor, adj: Tensor, mask: Optional[Tensor] = None, pooling: Optional[str] = None) -> Tensor:
        """:meth:`encode` without gradient (retrieval). Same arguments; returns ``[B, D']``."""
        with torch.no_grad():
            return self.encode(x, adj, mask, pooling)


def build_gf_model(cfg: GFConfig) -> DenseGraphMatching:
    """The GF model described by ``cfg`` (fresh weights, on the CPU)."""
    return DenseGraphMatching(
        in_channels=cfg.GF_in_channels,
        hidden=cfg.GF_hidden,
        num_layers=cfg.GF_num_layers,
        proj_dim=cfg.GF_proj_dim,
        temperature=cfg.GF_temperature,
        pooling=cfg.GF_pooling,
    )


def gf_model_from_config(config: dict[str, Any]) -> DenseGraphMatching:
    """The GF model of a plain config dict (a ``GFConfig`` or a flat ``JointConfig`` as saved
    in a checkpoint; keys that are not ``GFConfig`` fields are ignored). Fresh weights.
    A config without ``GF_layout_features`` predates it: the 11 GF features alone."""
    return build_gf_model(config_from_dict(GFConfig, {**SAVED_CONFIG_FALLBACKS, **config}))


def embed_graphs(
    model: DenseGraphMatching,
    features: np.ndarray | Tensor,
    adjacency: np.ndarray | Tensor,
    pooling: Optional[str] = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """One embedding per graph, from the encoder (``DenseGraphMatching.embed``), for similarity.

    Args:
        model: a GF model (its train/eval mode is restored afterwards).
        features: ``[n, 10, F]`` GF node features (F = the model's input width: 11, or 18 with layout features); adjacency: ``[n, 10, 10]``.
        pooling: ``concat`` / ``mean`` / ``sum`` / ``concat_input``
            (see ``DenseGraphMatching.encode``); None: ``model.pooling``.
        batch_size: graphs encoded at once.

    Returns:
        ``np.ndarray [n, D]`` float32 (``[0, 0]`` for ``n = 0``).
    """
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    a = torch.as_tensor(np.asarray(adjacency, dtype=np.float32))
    was_training = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(x), batch_size):
            xb, ab = x[s:s + batch_size].to(device), a[s:s + batch_size].to(device)
            out.append(model.embed(xb, ab, node_mask(xb, ab), pooling=pooling).float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


__all__ = ["POOLINGS", "node_mask", "GraphBatch", "PairViews", "DenseGraphMatching", "build_gf_model",
           "gf_model_from_config", "embed_graphs"]
