"""DeepDXF model helpers shared by the trainers and SimDeepDXF (docs/architecture.md).

* :func:`build_deepdxf_model` / :func:`deepdxf_model_from_checkpoint`
* :func:`embed_sequences`: whole drawings -> one embedding each (encoder pooled output,
  every entity, chunks encoded in bounded mini-batches)
* :func:`deepdxf_step_loss`: the NT-Xent loss of one two-view batch, callable from any loop
"""
from __future__ import annotations

import contextlib
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
    """A freshly initialised model of the shape given by ``cfg``."""
    model = DeepDXFModel(
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
    return model


def deepdxf_model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> DeepDXFModel:
    """Rebuild the model stored in a loaded checkpoint (``utils.checkpoint.load_checkpoint``).

    Accepts a ``DeepDXF`` checkpoint (``state["model"]``) or a ``joint`` one
    (``state["deepdxf"]`` and ``config["DeepDXF"]`` or a flat joint config).
    """
    cfg_dict = ckpt.get("config", {})
    state = ckpt["state"]
    if ckpt.get("kind") == "joint":
        cfg_dict = cfg_dict.get("DeepDXF", cfg_dict)
        sd = state.get("deepdxf", state.get("DeepDXF"))
    else:
        sd = state.get("model", state)
    if sd is None:
        raise KeyError("checkpoint holds no DeepDXF model state")
    cfg = config_from_dict(DeepDXFConfig, cfg_dict)
    model = build_deepdxf_model(cfg)
    model.load_state_dict(sd)
    return model.to(device).eval()


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
        rows_list: n drawings, int [L_i, 14] each (L_i >= 1).
        device: where to compute (default: the model's device).
        drawings_per_batch: drawings whose chunks are gathered together.
        chunk_batch: chunks encoded at a time (bounds memory; default from the config).
        max_len: embed only the first entities (0 = all; default from the config).
    Returns:
        float32 [n, embed_dim].
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


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """autocast for CUDA when ``amp`` (bf16 if supported, else fp16); nothing otherwise."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def deepdxf_step_loss(
    model: DeepDXFModel, batch: DeepDXFBatch, cfg: DeepDXFConfig, return_embeddings: bool = False
) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """NT-Xent loss of one two-view batch (no backward, no optimizer: any loop can call it).

    Args:
        model: the model (its train/eval mode decides whether dropout is on).
        batch: a ``DeepDXFBatch`` already on the model's device.
        cfg: gives the temperature.
        return_embeddings: also return the pooled embeddings (e1, e2) [N, embed_dim].
    Returns:
        loss (float32 scalar), or (loss, (e1, e2)).
    """
    e1, z1 = model(batch.view1)
    e2, z2 = model(batch.view2)
    loss = nt_xent_loss(z1, z2, cfg.DeepDXF_temperature)
    return (loss, (e1, e2)) if return_embeddings else loss


__all__ = [
    "autocast_context",
    "build_deepdxf_model",
    "deepdxf_model_from_checkpoint",
    "deepdxf_step_loss",
    "embed_sequences",
]
