"""Training-side helpers of the DeepDXF model.

The model's own API (build, step loss, embeddings) lives in ``model/DeepDXF_model.py``;
checkpoints are read by ``utils/checkpoint.py`` (``load_trained_models``); the loss's
chance level is ``model.DeepDXF_loss.nt_xent_chance``.
"""
from __future__ import annotations

import contextlib

import torch


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """autocast for CUDA when ``amp`` (bf16 if supported, else fp16); nothing otherwise."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


__all__ = ["autocast_context"]
