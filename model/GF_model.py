"""The GF model's own API: build it, one training-step loss, embeddings for similarity.

- :func:`build_gf_model` (``GFConfig`` -> fresh model),
- :func:`gf_model_from_config` (a plain config dict, e.g. a checkpoint's -> fresh model;
  the weights are loaded by ``utils.checkpoint.load_trained_models``),
- :func:`gf_step_loss` (the scalar loss of one pair batch, views drawn inside),
- :func:`embed_graphs` (``features [n,10,F]``, F = 11 or 11 + LAYOUT_DIM, ``adjacency [n,10,10]`` -> ``np.ndarray [n, D]``).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from config.GF_config import SAVED_CONFIG_FALLBACKS, GFConfig
from config.cli import config_from_dict
from model.layers.DenseGraphMatching import DenseGraphMatching, node_mask


def build_gf_model(cfg: GFConfig) -> DenseGraphMatching:
    """The GF model described by ``cfg`` (fresh weights, on the CPU)."""
    return DenseGraphMatching(
        in_channels=cfg.GF_in_channels,
        hidden=cfg.GF_hidden,
        num_layers=cfg.GF_num_layers,
        proj_dim=cfg.GF_proj_dim,
        temperature=cfg.GF_temperature,
        feature_mask_rate=cfg.GF_feature_mask_rate,
        edge_drop_rate=cfg.GF_edge_drop_rate,
        edge_add_rate=cfg.GF_edge_add_rate,
        pooling=cfg.GF_pooling,
    )


def gf_model_from_config(config: dict[str, Any]) -> DenseGraphMatching:
    """The GF model of a plain config dict (a ``GFConfig`` or a flat ``JointConfig`` as saved
    in a checkpoint; keys that are not ``GFConfig`` fields are ignored). Fresh weights.
    A config without ``GF_layout_features`` predates it: the 11 GF features alone."""
    return build_gf_model(config_from_dict(GFConfig, {**SAVED_CONFIG_FALLBACKS, **config}))


def gf_step_loss(
    model: DenseGraphMatching, batch: tuple[Tensor, ...], generator: Optional[torch.Generator] = None
) -> Tensor:
    """Scalar loss of one pair batch (a ``GFPairLoader`` item), views drawn on the batch's device.

    Args:
        model: the GF model.
        batch: ``(x1 [B,10,F], adj1 [B,10,10], mask1 [B,10], x2, adj2, mask2)``.
        generator: ``torch.Generator`` on the batch's device for the views (None: global RNG).

    Returns:
        float32 scalar (also under autocast).
    """
    return model.loss(*batch, generator=generator)


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


__all__ = ["build_gf_model", "gf_model_from_config", "gf_step_loss", "embed_graphs"]
