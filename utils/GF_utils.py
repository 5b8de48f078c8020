"""Training-side helpers of the GF model: validation loss and chance level.

The model's own API (build, step loss, embeddings) lives in ``model/GF_model.py``;
checkpoints are read by ``utils/checkpoint.py`` (``load_trained_models``).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from model.GF_model import gf_step_loss
from model.layers.DenseGraphMatching import DenseGraphMatching, chance_level


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


__all__ = ["evaluate_loss", "gf_chance_level"]
