"""The loss of the GF model: GRACE node-level contrast between two views of each graph.

Chance level: for a graph with ``n`` real nodes each anchor has ``2n - 1``
candidates, so an encoder that knows nothing scores ``ln(2n - 1)``
(:func:`chance_level`; ``ln 19 = 2.94`` for 10 nodes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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


__all__ = ["node_contrastive_loss", "chance_level"]
