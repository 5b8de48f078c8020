"""GF model helpers: build, restore from a checkpoint, one training loss, embeddings.

The functions the other trainers and SimDeepDXF.py use (docs/architecture.md):

- :func:`build_gf_model` (``GFConfig`` -> model),
- :func:`gf_model_from_checkpoint` (a loaded GF checkpoint dict -> model in eval mode),
- :func:`gf_step_loss` (the scalar loss of one pair batch, views drawn inside),
- :func:`embed_graphs` (``features [n,10,11]``, ``adjacency [n,10,10]`` -> ``np.ndarray [n, D]``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import Tensor

from config.GF_config import GFConfig
from model.layers.DenseGraphMatching import DenseGraphMatching, chance_level, node_mask


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


def gf_config_from_dict(d: dict[str, Any]) -> GFConfig:
    """A ``GFConfig`` from a plain dict, ignoring keys it does not know (e.g. a joint config)."""
    known = {f.name for f in dataclasses.fields(GFConfig)}
    return GFConfig(**{k: v for k, v in d.items() if k in known})


def gf_model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> DenseGraphMatching:
    """Rebuild the GF model of a checkpoint (``utils.checkpoint.load_checkpoint``) in eval mode.

    Accepts a ``GF`` checkpoint (``state["model"]``) and a ``joint`` one whose
    ``state`` holds ``"GF"`` or ``"gf"`` (the GF part of the joint model). The model's
    default pooling (``model.pooling``) is the checkpoint's ``GF_pooling``.
    """
    cfg = gf_config_from_dict(ckpt["config"])
    model = build_gf_model(cfg)
    state = ckpt["state"]
    if ckpt.get("kind") == "joint" and ("GF" in state or "gf" in state):
        state = state.get("GF", state.get("gf"))
    elif "model" in state:
        state = state["model"]
    model.load_state_dict(state)
    return model.to(device).eval()


def gf_step_loss(
    model: DenseGraphMatching, batch: tuple[Tensor, ...], generator: Optional[torch.Generator] = None
) -> Tensor:
    """Scalar loss of one pair batch (a ``GFPairLoader`` item), views drawn on the batch's device.

    Args:
        model: the GF model (or a DDP wrapper of it: ``.module`` is used for ``loss``).
        batch: ``(x1 [B,10,11], adj1 [B,10,10], mask1 [B,10], x2, adj2, mask2)``.
        generator: ``torch.Generator`` on the batch's device for the views (None: global RNG).
    """
    core = getattr(model, "module", model)
    return core.loss(*batch, generator=generator)


@torch.no_grad()
def evaluate_loss(model: DenseGraphMatching, loader: Iterable, seed: int = 0) -> float:
    """Mean loss over a loader with views drawn from a fixed seed (comparable across epochs).

    Batches are weighted by their number of pairs; NaN for an empty loader.
    """
    was_training = model.training
    model.eval()
    gen = None
    total, count = 0.0, 0
    for batch in loader:
        if gen is None:
            gen = torch.Generator(device=batch[0].device).manual_seed(seed)
        b = batch[0].shape[0]
        total += float(gf_step_loss(model, batch, gen)) * b
        count += b
    model.train(was_training)
    return total / count if count else float("nan")


def gf_chance_level(mask: Tensor) -> float:
    """Chance level of the node-level contrast for graphs with ``mask [G, 10]`` (see ``chance_level``)."""
    return chance_level(mask)


@torch.no_grad()
def embed_graphs(
    model: DenseGraphMatching,
    features: np.ndarray | Tensor,
    adjacency: np.ndarray | Tensor,
    pooling: Optional[str] = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """One embedding per graph, from the encoder (for similarity, SPEC §4).

    Args:
        model: a GF model (e.g. from :func:`gf_model_from_checkpoint`).
        features: ``[n, 10, 11]`` GF node features; adjacency: ``[n, 10, 10]``.
        pooling: ``concat`` / ``mean`` / ``sum`` / ``concat_input``
            (see ``DenseGraphMatching.embed``); None: ``model.pooling``.
        batch_size: graphs encoded at once.

    Returns:
        ``np.ndarray [n, D]`` float32.
    """
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    a = torch.as_tensor(np.asarray(adjacency, dtype=np.float32))
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, len(x), batch_size):
        xb, ab = x[s:s + batch_size].to(device), a[s:s + batch_size].to(device)
        out.append(model.embed(xb, ab, node_mask(xb, ab), pooling=pooling).float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


__all__ = [
    "build_gf_model", "gf_config_from_dict", "gf_model_from_checkpoint", "gf_step_loss",
    "evaluate_loss", "gf_chance_level", "embed_graphs",
]
