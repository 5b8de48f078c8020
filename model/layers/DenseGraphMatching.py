"""CGMN-style contrastive graph matching on dense batched graphs.

After "CGMN: A Contrastive Graph Matching Network for Self-Supervised Graph
Similarity Learning" (Jin et al., IJCAI 2022), adapted to the 10-node GF graphs.
One training step on a batch of ``B`` pairs of graphs ``(g1, g2)``:

1. two augmented views of every graph (:func:`augment_view`: feature masking,
   edge drop and edge add, drawn independently per view on the tensor's device);
2. all ``4B`` views encoded by one shared :class:`GraphEncoder` (a normalized
   input projection, then :class:`DenseGGNN` with a residual);
3. cross-view fusion: each node attends over the nodes of the other view of the
   same graph (masked softmax of scaled dot products) and is updated from
   ``[h, h - μ]``;
4. cross-graph fusion: each node of a view of ``g1`` attends over the nodes of
   both views of ``g2`` (and vice versa), same update;
5. a projection head and the node-level contrastive loss (:func:`node_contrastive_loss`,
   GRACE style) between the two views of each graph, averaged over the graphs.

Labels are not used: every drawing is its own class. The embedding used for
similarity (:meth:`DenseGraphMatching.encode`; :meth:`~DenseGraphMatching.embed` is
its no-gradient form) comes from the encoder alone: by default the node states
concatenated in node (= entity class) order, which keeps which class is which and
zeros for absent classes (a mean over nodes retrieved much worse on the lead-frame
dev set: ~0.60 vs ~0.77 mAP).

Chance level: for a graph with ``n`` real nodes each anchor has ``2n - 1``
candidates, so an encoder that knows nothing scores ``ln(2n - 1)``
(:func:`chance_level`; ``ln 19 = 2.94`` for 10 nodes).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.layers.DenseGGNN import DenseGGNN

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


def augment_view(
    x: Tensor,
    adj: Tensor,
    mask: Tensor,
    feature_mask_rate: float,
    edge_drop_rate: float,
    edge_add_rate: float,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """One random view of a batch of graphs, drawn on the tensors' device.

    - feature masking: each feature column of each graph is zeroed with
      probability ``feature_mask_rate`` (the same columns for all nodes of a graph,
      as in GRACE);
    - edge drop: each existing undirected edge is removed with probability
      ``edge_drop_rate``;
    - edge add: each absent undirected edge between two real, distinct nodes is
      added with probability ``edge_add_rate``.

    Args:
        x: ``[B, N, F]``; adj: ``[B, N, N]`` symmetric 0/1; mask: ``[B, N]`` bool.
        generator: a ``torch.Generator`` on ``x.device`` (None: the global one).

    Returns:
        ``(x_view [B, N, F], adj_view [B, N, N])``, adj_view symmetric, zero diagonal.
    """
    B, N, Fdim = x.shape
    dev, dt = x.device, x.dtype
    keep_cols = torch.rand(B, 1, Fdim, device=dev, generator=generator) >= feature_mask_rate
    x_view = x * keep_cols.to(dt)

    r = torch.rand(B, N, N, device=dev, generator=generator)
    r = torch.triu(r, diagonal=1)
    r = r + r.transpose(1, 2)  # one draw per undirected pair
    valid = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    valid = valid & ~torch.eye(N, dtype=torch.bool, device=dev)
    edge = adj > 0
    keep = edge & (r >= edge_drop_rate)
    add = ~edge & valid & (r < edge_add_rate)
    adj_view = (keep | add).to(dt)
    return x_view, adj_view


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


def node_contrastive_loss(z1: Tensor, z2: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """GRACE node-level InfoNCE between two views of each graph.

    For anchor node ``i`` of view 1 the positive is node ``i`` of view 2; the
    negatives are the other real nodes of view 2 and of view 1
    (``2 n - 2`` negatives for a graph of ``n`` real nodes). Symmetric in the two
    views; averaged over the real anchors of a graph, then over graphs with at
    least one real node. Cosine similarity divided by ``temperature``.

    Args:
        z1, z2: ``[G, N, P]`` projected node states of the two views.
        mask: ``[G, N]`` bool, real nodes.

    Returns:
        scalar loss, float32 also under autocast (computed with autocast disabled).
    """
    # autocast would run the matmuls below in half precision again: compute in float32
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1 = F.normalize(z1.float(), dim=-1)
        z2 = F.normalize(z2.float(), dim=-1)
        N = z1.shape[1]
        eye = torch.eye(N, dtype=torch.bool, device=z1.device)
        pair_ok = mask.unsqueeze(1) & mask.unsqueeze(2)  # [G, N, N] both real

        def one_side(a: Tensor, b: Tensor) -> Tensor:
            between = (a @ b.transpose(1, 2)) / temperature  # [G, N, N]
            within = (a @ a.transpose(1, 2)) / temperature
            between = between.masked_fill(~pair_ok, float("-inf"))
            within = within.masked_fill(~pair_ok | eye, float("-inf"))
            denom = torch.logsumexp(torch.cat([between, within], dim=-1), dim=-1)  # [G, N]
            pos = torch.diagonal(between, dim1=1, dim2=2)
            return torch.where(mask, denom - pos, torch.zeros_like(pos))

        per_node = 0.5 * (one_side(z1, z2) + one_side(z2, z1))  # [G, N]
        n_real = mask.sum(-1)
        graph_ok = n_real > 0
        per_graph = per_node.sum(-1) / n_real.clamp(min=1)
        return per_graph[graph_ok].mean()


def chance_level(mask: Tensor) -> float:
    """Loss of an encoder that knows nothing (all similarities equal).

    Every anchor then has ``2 n - 1`` equally likely candidates, so its loss is
    ``ln(2 n - 1)``; averaged like :func:`node_contrastive_loss` (per graph, then
    over graphs with at least one real node).

    Args:
        mask: ``[G, N]`` bool.
    """
    n = mask.sum(-1).double()
    n = n[n > 0]
    return float(torch.log(2 * n - 1).mean()) if len(n) else float("nan")


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


class DenseGraphMatching(nn.Module):
    """CGMN contrastive graph matching over pairs of dense graphs.

    Args:
        in_channels: node feature size ``F`` (11 for GF graphs).
        hidden: node state size ``D`` of the encoder.
        num_layers: GGNN propagation steps.
        proj_dim: output size of the projection head.
        temperature: of the node-level contrastive loss.
        feature_mask_rate, edge_drop_rate, edge_add_rate: view augmentation rates.
        pooling: default graph embedding of :meth:`embed` (one of ``POOLINGS``).
    """

    def __init__(
        self,
        in_channels: int = 11,
        hidden: int = 32,
        num_layers: int = 3,
        proj_dim: int = 32,
        temperature: float = 0.2,
        feature_mask_rate: float = 0.2,
        edge_drop_rate: float = 0.2,
        edge_add_rate: float = 0.1,
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
        self.feature_mask_rate = feature_mask_rate
        self.edge_drop_rate = edge_drop_rate
        self.edge_add_rate = edge_add_rate

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

    def loss(
        self,
        x1: Tensor,
        adj1: Tensor,
        mask1: Tensor,
        x2: Tensor,
        adj2: Tensor,
        mask2: Tensor,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """Contrastive matching loss of one batch of ``B`` pairs, views drawn inside.

        Args:
            x1, x2: ``[B, N, F]`` features of the first / second graph of each pair.
            adj1, adj2: ``[B, N, N]``; mask1, mask2: ``[B, N]`` bool.
            generator: a ``torch.Generator`` on the tensors' device for the views.

        Returns:
            scalar: node-level contrastive loss between the two views of each
            graph, averaged over the ``2B`` graphs.
        """
        rates = (self.feature_mask_rate, self.edge_drop_rate, self.edge_add_rate)
        views = [augment_view(x, a, m, *rates, generator=generator)
                 for x, a, m in ((x1, adj1, mask1), (x1, adj1, mask1), (x2, adj2, mask2), (x2, adj2, mask2))]
        xs = torch.stack([v[0] for v in views])
        adjs = torch.stack([v[1] for v in views])
        z = self.match(xs, adjs, mask1, mask2)
        l1 = node_contrastive_loss(z[0], z[1], mask1, self.temperature)
        l2 = node_contrastive_loss(z[2], z[3], mask2, self.temperature)
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
