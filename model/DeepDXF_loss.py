"""NT-Xent (normalized temperature-scaled cross entropy, SimCLR) for DeepDXF.

For N drawings with two views each, z = [z_1; z_2] has 2N rows. With
s_ij = cos(z_i, z_j) / tau and p(i) the other view of row i:

    loss = -(1 / 2N) * sum_i log( exp(s_{i,p(i)}) / sum_{j != i} exp(s_ij) )

N positive pairs and 2N x (2N - 2) negatives. Computed in float32 whatever the
input dtype (autocast-safe); the diagonal is removed with ``masked_fill`` of a
large negative number in float32 (no -inf, no half-precision overflow).
For N = 1 the only candidate is the positive, so the loss is exactly 0 (no
signal, no NaN); its chance level ln(2N - 1) is 0 as well.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_MASK_VALUE = -1e9


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.15) -> torch.Tensor:
    """NT-Xent between two views.

    Args:
        z1: [N, D] first view (any float dtype).
        z2: [N, D] second view, row i the same drawing as z1's row i.
        temperature: tau > 0.
    Returns:
        Scalar float32 loss (mean over the 2N anchors).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"views must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=-1)  # [2N, D]
    with torch.autocast(device_type=z.device.type, enabled=False):
        logits = (z @ z.T) / temperature  # [2N, 2N] float32
        eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(eye, _MASK_VALUE)
        idx = torch.arange(n, device=z.device)
        labels = torch.cat([idx + n, idx])  # positive of row i is its other view
        return F.cross_entropy(logits, labels)


def nt_xent_chance(batch_size: int) -> float:
    """Loss of an encoder that knows nothing: ln(2N - 1) (all 2N - 1 candidates equal)."""
    return math.log(max(2 * batch_size - 1, 1))


__all__ = ["nt_xent_chance", "nt_xent_loss"]
