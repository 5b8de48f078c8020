"""The joint objective: the GF loss, the DeepDXF loss and an optional cross-model term.

The two model losses come from their own modules (``DenseGraphMatching.loss`` of
``model/GF_model.py``, ``deepdxf_step_loss`` of ``model/DeepDXF_model.py``, NT-Xent of
``model/DeepDXF_loss.py``). Every view is drawn by the data loader
(``dataset/loaders/views.py``): a :class:`JointBatch` brings them, the model draws nothing.
Without more, two models that share no parameter are merely trained side by side.
The **cross-model term** ties them: small projection heads map the GF graph
embedding and the DeepDXF drawing embedding of the same drawing into one space,
and a CLIP-style symmetric InfoNCE (in float32) pulls the two embeddings of a
drawing together against the other drawings of the batch:

    a = normalize(head_GF(g)),  b = normalize(head_DeepDXF(e)),  S = a b^T / tau   [B, B]
    L_cross = (CE(S, I) + CE(S^T, I)) / 2

``g`` is the GF encoder's graph embedding (``DenseGraphMatching.encode`` with concat
pooling, with gradient) of the un-augmented graphs, ``e`` the mean of the DeepDXF pooled encoder outputs of
the two views. The heads belong to the joint model (saved in its checkpoint).

The **group term** (``group_weight`` > 0) shapes the similarity embedding itself:
the joint embedding of a drawing, ``j = [normalize(g) ; normalize(e)]`` (GF graph
embedding of a GF view, DeepDXF pooled embedding of a DeepDXF view: what
``SimDeepDXF.py --embedding joint`` compares), is pulled towards every drawing of its
group in the batch (a source and its revisions, named by ``--group_pattern``) and
away from the other groups, with the supervised contrastive loss of Khosla et al.
(2020) over the 2B views of the batch:

    L_group = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / sum_{a != i} exp(s_ia) )

``s = j j^T / tau`` and ``P(i)`` the other views of i's group (its own other view is
always one, so a batch without revisions gives plain NT-Xent on the joint embedding).
Without the term, revisions of one drawing in a batch are each other's negatives.

:class:`JointObjective` is one ``nn.Module`` holding both models and the heads, so
that one ``DistributedDataParallel`` wraps everything and every gradient flows
through its ``forward``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.DeepDXF_model import DeepDXFBatch, deepdxf_step_loss
from model.GF_model import GraphBatch, PairViews

TASKS = ("GF", "DeepDXF")


def clip_loss(a: Tensor, b: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` (CLIP), in float32.

    Args:
        a: [B, D]; b: [B, D], row i of both the same drawing.
        temperature: tau > 0.
    Returns:
        scalar float32; 0 for B < 2 (no negative, no signal).
    """
    if a.shape[0] < 2:
        return a.float().sum() * 0.0 + b.float().sum() * 0.0
    with torch.autocast(device_type=a.device.type, enabled=False):
        a = F.normalize(a.float(), dim=-1)
        b = F.normalize(b.float(), dim=-1)
        logits = a @ b.T / temperature
        labels = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def group_contrastive_loss(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised contrastive loss (SupCon, "L_out") of embeddings with group labels, in float32.

    Args:
        z: [M, D] embeddings (normalized here).
        labels: [M] int64 group ids; rows with the same id are positives of each other.
        temperature: tau > 0.
    Returns:
        scalar float32: the mean over anchors that have a positive of
        ``-mean_{p in P(i)} log softmax_{a != i}(s_ia)[p]``; 0 (with gradient) when no
        anchor has one.
    """
    if z.dim() != 2 or labels.shape != z.shape[:1]:
        raise ValueError(f"z must be [M, D] and labels [M], got {tuple(z.shape)} and {tuple(labels.shape)}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        zf = F.normalize(z.float(), dim=-1)
        m = zf.shape[0]
        eye = torch.eye(m, dtype=torch.bool, device=z.device)
        logits = (zf @ zf.T / temperature).masked_fill(eye, -1e9)
        log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos = (labels[:, None] == labels[None, :]) & ~eye  # [M, M]
        n_pos = pos.sum(1)
        has = n_pos > 0
        if not bool(has.any()):
            return zf.sum() * 0.0
        per_anchor = -(log_p * pos).sum(1)[has] / n_pos[has]
        return per_anchor.mean()


def group_chance(batch_size: int) -> float:
    """The group term of embeddings that know nothing (all 2B - 1 candidates alike): ln(2B - 1)."""
    return math.log(max(2 * batch_size - 1, 1))


def joint_embedding(g: Tensor, e: Tensor) -> Tensor:
    """The joint similarity embedding ``[normalize(g) ; normalize(e)]``: g [B, Dg], e [B, De] -> [B, Dg + De]."""
    return torch.cat([F.normalize(g.float(), dim=-1), F.normalize(e.float(), dim=-1)], dim=-1)


def clip_chance(batch_size: int) -> float:
    """The cross term of embeddings that know nothing: ln(B)."""
    return math.log(max(batch_size, 1))


class CrossModelHeads(nn.Module):
    """Projection heads of the cross-model term: GF [B, d_gf] and DeepDXF [B, d_dx] -> [B, dim]."""

    def __init__(self, d_gf: int, d_dx: int, dim: int = 64) -> None:
        super().__init__()
        self.gf = nn.Sequential(nn.LayerNorm(d_gf), nn.Linear(d_gf, dim), nn.GELU(), nn.Linear(dim, dim))
        self.deepdxf = nn.Sequential(nn.LayerNorm(d_dx), nn.Linear(d_dx, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, g: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        return self.gf(g.float()), self.deepdxf(e.float())


@dataclass
class JointBatch:
    """One joint step: the same drawings for both models, their views drawn.

    Attributes:
        gf_views: two views of the GF graphs of the batch's pairs (the GF loss's input).
        gf_graphs: the batch's B drawings in order, un-augmented (the cross term's input).
        deepdxf: two DeepDXF views of the same B drawings in the same order.
        index: [B] drawing indices (into the joint dataset's names).
        part: index of this batch in the epoch (seeds its views).
        group: [B] int64 group ids of the drawings (the group term's labels), or None.
        group_views: two GF views of the B drawings (``[2B, ...]``: every drawing's
            first view, then every second view) when the group term is on, else None.
    """

    gf_views: PairViews
    gf_graphs: GraphBatch
    deepdxf: DeepDXFBatch
    index: Tensor
    part: int = 0
    group: Optional[Tensor] = None
    group_views: Optional[GraphBatch] = None

    @property
    def n_drawings(self) -> int:
        return int(self.index.numel())

    def to(self, device: torch.device | str) -> "JointBatch":
        return JointBatch(self.gf_views.to(device), self.gf_graphs.to(device), self.deepdxf.to(device),
                          self.index.to(device), self.part, None if self.group is None else self.group.to(device),
                          None if self.group_views is None else self.group_views.to(device))


class JointObjective(nn.Module):
    """Both models and the cross-model heads; ``forward`` returns the loss terms of a batch.

    Args:
        gf: the GF model (``build_gf_model``).
        deepdxf: the DeepDXF model (``build_deepdxf_model``).
        deepdxf_cfg: its config (temperature).
        cross_weight: > 0 builds the heads (the term's weight itself is applied by the trainer).
        cross_temperature, cross_dim: of the cross-model term.
        group_weight: > 0 computes the group term (its weight is applied by the trainer).
        group_temperature: of the group term.
    """

    def __init__(self, gf: nn.Module, deepdxf: nn.Module, deepdxf_cfg, cross_weight: float = 0.0,
                 cross_temperature: float = 0.1, cross_dim: int = 64, group_weight: float = 0.0,
                 group_temperature: float = 0.1) -> None:
        super().__init__()
        self.group_on = group_weight > 0
        self.group_temperature = group_temperature
        self.gf = gf
        self.deepdxf = deepdxf
        self.deepdxf_cfg = deepdxf_cfg
        self.cross_temperature = cross_temperature
        self.heads: Optional[CrossModelHeads] = None
        if cross_weight > 0:
            with torch.no_grad():
                z = torch.zeros(1, 10, gf.in_channels)  # 11 GF features, more with layout
                d_gf = gf.encode(z, torch.zeros(1, 10, 10), torch.ones(1, 10, dtype=torch.bool), pooling="concat").shape[-1]
            self.heads = CrossModelHeads(d_gf, deepdxf.embed_dim, cross_dim)

    def forward(self, batch: JointBatch) -> dict[str, Tensor]:
        """Loss terms (float32 scalars): ``GF``, ``DeepDXF``, ``cross`` and ``group`` (0 when off)."""
        l_gf = self.gf.loss(batch.gf_views).float()
        l_dx, (e1, e2) = deepdxf_step_loss(self.deepdxf, batch.deepdxf, self.deepdxf_cfg, return_embeddings=True)
        out = {"GF": l_gf, "DeepDXF": l_dx.float()}
        if self.heads is not None:
            g = self.gf.encode(batch.gf_graphs.x, batch.gf_graphs.adj, batch.gf_graphs.mask, pooling="concat")
            a, b = self.heads(g, 0.5 * (e1.float() + e2.float()))
            out["cross"] = clip_loss(a, b, self.cross_temperature)
        else:
            out["cross"] = l_gf.new_zeros(())
        out["group"] = self.group_term(batch, e1, e2) if self.group_on else l_gf.new_zeros(())
        return out

    def group_term(self, batch: JointBatch, e1: Tensor, e2: Tensor) -> Tensor:
        """The group term of a batch: SupCon over the joint embeddings of two views per drawing.

        GF views: ``batch.group_views`` (two views of the batch's graphs); DeepDXF views:
        the pooled embeddings ``e1``, ``e2`` [B, De] of the DeepDXF step. Labels:
        ``batch.group`` (each drawing its own group when None).
        """
        views = batch.group_views
        if views is None:
            raise ValueError("the group term is on but the batch holds no group views (JointCollate group_views=True)")
        g = self.gf.encode(views.x, views.adj, views.mask)
        j = joint_embedding(g, torch.cat([e1, e2]))
        b = batch.gf_graphs.x.shape[0]
        group = batch.group if batch.group is not None else torch.arange(b, device=g.device)
        return group_contrastive_loss(j, torch.cat([group, group]), self.group_temperature)


__all__ = ["TASKS", "clip_loss", "clip_chance", "CrossModelHeads", "JointBatch", "group_chance",
           "group_contrastive_loss", "joint_embedding", "JointObjective"]
