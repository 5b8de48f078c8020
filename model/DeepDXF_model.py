"""The DeepDXF model's own API: build it, one training-step loss, embeddings for similarity.

- :func:`build_deepdxf_model` (``DeepDXFConfig`` -> fresh model),
- :func:`deepdxf_model_from_config` (a plain config dict, e.g. a checkpoint's -> fresh model;
  the weights are loaded by ``utils.checkpoint.load_trained_models``),
- :func:`deepdxf_step_loss` (the NT-Xent loss of one two-view batch, callable from any loop),
- :func:`embed_sequences` (whole drawings -> one embedding each: the encoder's pooled
  output over every entity, chunks encoded in bounded mini-batches).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from config.DeepDXF_config import DeepDXFConfig
from config.cli import config_from_dict
from model.DeepDXF_dataset import DeepDXFBatch
from model.DeepDXF_embedding import chunk_rows, split_into_chunks
from model.DeepDXF_loss import nt_xent_loss
from model.transformer_encoder import DeepDXFModel


def build_deepdxf_model(cfg: DeepDXFConfig) -> DeepDXFModel:
    """A freshly initialised model of the shape given by ``cfg`` (on the CPU)."""
    return DeepDXFModel(
        d_model=cfg.DeepDXF_d_model,
        layers=cfg.DeepDXF_layers,
        heads=cfg.DeepDXF_heads,
        ff_mult=cfg.DeepDXF_ff_mult,
        dropout=cfg.DeepDXF_dropout,
        chunk_len=cfg.DeepDXF_chunk_len,
        global_pos_bins=cfg.DeepDXF_global_pos_bins,
        pooling=cfg.DeepDXF_pooling,
        size_dim=cfg.DeepDXF_size_dim,
        hist_in_head=cfg.DeepDXF_hist_in_head,
        proj_dim=cfg.DeepDXF_proj_dim,
        max_embed_len=cfg.DeepDXF_max_embed_len,
        embed_chunk_batch=cfg.DeepDXF_embed_chunk_batch,
    )


def deepdxf_model_from_config(config: dict[str, Any]) -> DeepDXFModel:
    """The DeepDXF model of a plain config dict (a ``DeepDXFConfig`` or a flat ``JointConfig``
    as saved in a checkpoint; keys that are not ``DeepDXFConfig`` fields are ignored). Fresh weights."""
    return build_deepdxf_model(config_from_dict(DeepDXFConfig, config))


def deepdxf_step_loss(
    model: DeepDXFModel, batch: DeepDXFBatch, cfg: DeepDXFConfig, return_embeddings: bool = False
) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """NT-Xent loss of one two-view batch (no backward, no optimizer: any loop can call it).

    Args:
        model: the model (its train/eval mode decides whether dropout is on).
        batch: a ``DeepDXFBatch`` of N drawings already on the model's device.
        cfg: gives the temperature.
        return_embeddings: also return the pooled embeddings ``(e1, e2)``, ``[N, embed_dim]`` each.
    Returns:
        loss (float32 scalar, also under autocast), or ``(loss, (e1, e2))``.
    """
    e1, z1 = model(batch.view1)
    e2, z2 = model(batch.view2)
    loss = nt_xent_loss(z1, z2, cfg.DeepDXF_temperature)
    return (loss, (e1, e2)) if return_embeddings else loss


@torch.no_grad()
def embed_sequences(
    model: DeepDXFModel,
    rows_list: Sequence[np.ndarray],
    device: str | torch.device | None = None,
    drawings_per_batch: int = 16,
    chunk_batch: int | None = None,
    max_len: int | None = None,
) -> np.ndarray:
    """One embedding per drawing: the encoder's pooled output over all its entities.

    Args:
        model: a DeepDXF model (put in eval mode here; its mode is restored after).
        rows_list: n drawings, int ``[L_i, 14]`` each (``L_i >= 1``).
        device: where to compute (default: the model's device).
        drawings_per_batch: drawings whose chunks are gathered together.
        chunk_batch: chunks encoded at a time (bounds memory; default from the model).
        max_len: embed only the first entities (0 = all; default from the model).
    Returns:
        float32 ``[n, embed_dim]``, row i for ``rows_list[i]``.
    """
    if len(rows_list) == 0:
        return np.zeros((0, model.embed_dim), dtype=np.float32)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    chunk_batch = chunk_batch if chunk_batch is not None else model.embed_chunk_batch
    max_len = max_len if max_len is not None else model.max_embed_len
    was_training = model.training
    model.eval()
    out = []
    order = np.argsort([r.shape[0] for r in rows_list], kind="stable")  # similar lengths together
    try:
        for s in range(0, len(order), drawings_per_batch):
            idx = order[s:s + drawings_per_batch]
            batch = chunk_rows([split_into_chunks(rows_list[i], model.chunk_len, max_len) for i in idx],
                               model.chunk_len).to(device)
            out.append(model.embed(batch, chunk_batch=chunk_batch).float().cpu().numpy())
    finally:
        model.train(was_training)
    emb = np.concatenate(out)
    result = np.empty_like(emb)
    result[order] = emb
    return result


__all__ = ["build_deepdxf_model", "deepdxf_model_from_config", "deepdxf_step_loss", "embed_sequences"]
