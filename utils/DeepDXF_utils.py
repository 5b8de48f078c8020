"""Training-side helpers of the DeepDXF model: validation loss and chance level.

The model's own API (build, step loss, embeddings) lives in ``model/DeepDXF_model.py``;
checkpoints are read by ``utils/checkpoint.py`` (``load_trained_models``).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from config.DeepDXF_config import DeepDXFConfig
from model.DeepDXF_loss import nt_xent_chance
from model.DeepDXF_model import deepdxf_step_loss
from model.transformer_encoder import DeepDXFModel
from utils.amp import autocast

VAL_VIEW_SEED = 12345  # validation/test views and dropout masks: the same every epoch


def evaluate_chance(loader: DataLoader | None) -> float:
    """Drawing-weighted chance level ln(2N - 1) of a loader's actual batch sizes (NaN if none)."""
    if loader is None:
        return float("nan")
    sizes = [len(b) for b in loader.batch_sampler.batches()]
    return sum(nt_xent_chance(n) * n for n in sizes) / max(sum(sizes), 1)


@torch.no_grad()
def evaluate(model: DeepDXFModel, loader: DataLoader, cfg: DeepDXFConfig, device: torch.device,
             dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Mean NT-Xent over a loader with seeded views and seeded dropout (model in train mode:
    dropout is part of the views). Returns (loss, chance level), both weighted by batch size."""
    loader.collate_fn.reset(VAL_VIEW_SEED)
    was_training = model.training
    model.train()
    total = chance = weight = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(VAL_VIEW_SEED)
        for batch in loader:
            batch = batch.to(device)
            with autocast(device, dtype):
                loss = deepdxf_step_loss(model, batch, cfg)
            n = batch.n_drawings
            total += float(loss) * n
            chance += nt_xent_chance(n) * n
            weight += n
    model.train(was_training)
    return total / max(weight, 1), chance / max(weight, 1)


__all__ = ["VAL_VIEW_SEED", "evaluate", "evaluate_chance"]
