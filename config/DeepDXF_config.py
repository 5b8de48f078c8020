"""Configuration of the DeepDXF model and its trainer.

Every field is a command-line flag of ``DeepDXF_train.py`` (``config/cli.py``).
Fields shared by every trainer keep the names every trainer shares (``epochs``, ``k_folds``,
``fold``, ``lr``, ``seed``, ``device``, ``run_name``, ``wandb``, ``data_dir``);
names specific to this model start with ``DeepDXF_`` so that the joint config
(issue 5) can import this class next to ``GFConfig`` without clashes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from dataset.formats import DEFAULT_GROUP_PATTERN


@dataclass
class DeepDXFConfig:
    """Train the DeepDXF sequence model (transformer over handle-ordered entities, NT-Xent)."""

    # --- data, split, run -------------------------------------------------
    data_dir: str = field(default="data", metadata={"help": "preprocessing output folder (reads <data_dir>/DeepDXF/*.h5)"})
    epochs: int = field(default=50, metadata={"help": "maximum epochs per fold"})
    k_folds: int = field(default=10, metadata={"help": "cross-validation folds on the non-test 80 %"})
    fold: Optional[int] = field(default=None, metadata={"help": "run this fold only (0-based); none = all folds"})
    test_fraction: float = field(default=0.2, metadata={"help": "fraction of drawings (by group) held out as the test set"})
    group_pattern: str = field(
        default=DEFAULT_GROUP_PATTERN,
        metadata={"help": "regex removed from a drawing name to get its group (pieces/revisions stay on one side of the split)"},
    )
    seed: int = field(default=42, metadata={"help": "seed of split, initialisation and augmentations"})
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:1, ..."})
    amp: bool = field(default=False, metadata={"help": "mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler); ignored on CPU"})
    run_name: str = field(default="", metadata={"help": "name of logs/<run_name>/ and checkpoints/<run_name>/ (default: DeepDXF_<timestamp>)"})
    wandb: bool = field(default=False, metadata={"help": "log to Weights & Biases (WANDB_ENTITY, WANDB_PROJECT)"})
    logs_dir: str = field(default="logs", metadata={"help": "root folder of run logs"})
    checkpoints_dir: str = field(default="checkpoints", metadata={"help": "root folder of checkpoints"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads (0 = torch's default); 1 is fastest for these small models on a busy machine"})

    # --- optimisation ------------------------------------------------------
    DeepDXF_batch_size: int = field(default=5, metadata={"help": "drawings per batch (two views each)"})
    DeepDXF_length_grouping: bool = field(default=False, metadata={
        "help": "batch drawings of similar length together (less padding, no measurable speed-up with chunking); "
                "off by default: on archives of revisions it fills a batch with near-duplicate negatives"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up steps before the cosine decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 = off), applied after unscaling"})
    patience: int = field(default=10, metadata={"help": "early stopping: epochs without validation improvement"})
    min_delta: float = field(default=0.0, metadata={"help": "early stopping: minimum improvement"})
    max_steps_per_epoch: int = field(default=0, metadata={"help": "cap on training batches per epoch (0 = all)"})

    # --- model -------------------------------------------------------------
    DeepDXF_chunk_len: int = field(default=256, metadata={"help": "entities per handle-ordered chunk (attention stays within a chunk)"})
    DeepDXF_d_model: int = field(default=64, metadata={"help": "transformer width"})
    DeepDXF_layers: int = field(default=2, metadata={"help": "transformer encoder layers"})
    DeepDXF_heads: int = field(default=4, metadata={"help": "attention heads"})
    DeepDXF_ff_mult: int = field(default=2, metadata={"help": "feed-forward width = ff_mult * d_model"})
    DeepDXF_dropout: float = field(default=0.1, metadata={"help": "dropout (also what makes the two views differ)"})
    DeepDXF_proj_dim: int = field(default=64, metadata={"help": "output size of the projection head (loss only)"})
    DeepDXF_global_pos_bins: int = field(default=16, metadata={"help": "buckets of the coarse position of an entity in the whole drawing (0 = off)"})
    DeepDXF_pooling: Literal["count", "mean", "grid"] = field(
        default="count",
        metadata={"help": "mean: masked mean of entity states; count: mean plus a learned block of log entity count and log type counts (keeps size and composition); "
                          "grid: the counting floor (log entities per type and cell of grids of DeepDXF_grid_scales) plus a small learned residual read out of the entity states summed per cell"},
    )
    DeepDXF_grid_scales: tuple[int, ...] = field(default=(1, 4, 8, 16), metadata={"help": "cells per side of the grids of 'grid' pooling (1 = the type histogram)"})
    DeepDXF_grid_channels: int = field(default=8, metadata={"help": "learned channels per grid cell of 'grid' pooling"})
    DeepDXF_grid_dim: int = field(default=64, metadata={"help": "width of the learned residual block of 'grid' pooling"})
    DeepDXF_size_dim: int = field(default=16, metadata={"help": "width of the size/composition block of 'count' pooling"})
    DeepDXF_hist_in_head: bool = field(default=True, metadata={"help": "feed the view's log type histogram into the projection head"})
    DeepDXF_max_embed_len: int = field(default=0, metadata={"help": "embed only the first N entities of a drawing (0 = all, chunked)"})
    DeepDXF_embed_chunk_batch: int = field(default=64, metadata={"help": "chunks encoded together when embedding whole drawings (bounds memory)"})

    # --- loss and views ----------------------------------------------------
    DeepDXF_temperature: float = field(default=0.15, metadata={"help": "NT-Xent temperature"})
    DeepDXF_aug_crop: bool = field(default=True, metadata={"help": "views are random windows of the drawing"})
    DeepDXF_crop_fraction: float = field(default=0.5, metadata={"help": "fraction of a long drawing's chunks covered by a view's windows (short drawings: min kept fraction)"})
    DeepDXF_max_view_chunks: int = field(default=2, metadata={"help": "at most this many windows per training view (bounds memory/time)"})
    DeepDXF_aug_drop: bool = field(default=True, metadata={"help": "drop random entities from each view"})
    DeepDXF_drop_prob: float = field(default=0.1, metadata={"help": "entity dropout probability"})
    DeepDXF_aug_jitter: bool = field(default=True, metadata={"help": "add random integers to the quantized parameters (not to unused -1 slots)"})
    DeepDXF_jitter: int = field(default=2, metadata={"help": "jitter amplitude (quantization steps)"})
    DeepDXF_aug_param_mask: bool = field(default=False, metadata={"help": "hide random used parameter slots (set to -1)"})
    DeepDXF_param_mask_prob: float = field(default=0.3, metadata={"help": "probability of hiding each used parameter slot"})
    DeepDXF_aug_shift: bool = field(default=True, metadata={"help": "shift all quantized parameters of a view by one random integer"})
    DeepDXF_shift: int = field(default=4, metadata={"help": "maximum shift (quantization steps)"})
    DeepDXF_aug_turn: bool = field(default=False, metadata={"help": "revision-like view: turn the drawing by 90°, 180° or 270° (quantized coordinates, angles and boxes)"})
    DeepDXF_turn_prob: float = field(default=0.5, metadata={"help": "probability that a view is turned (with DeepDXF_aug_turn)"})
    DeepDXF_aug_mirror: bool = field(default=False, metadata={"help": "revision-like view: mirror the drawing left-right with probability 0.5"})
    DeepDXF_turn_views: bool = field(default=False, metadata={"help": "each view is one of the 8 turns and mirrors of the drawing, drawn at random (about the centre of the quantized square: exact)"})
    DeepDXF_aug_edit: bool = field(default=False, metadata={"help": "revision-like view: delete and duplicate a few entities (duplicates appended at the end, shifted)"})
    DeepDXF_edit_fraction: float = field(default=0.05, metadata={"help": "largest share of entities deleted (and, separately, duplicated) by DeepDXF_aug_edit"})

    def __post_init__(self) -> None:
        if self.DeepDXF_batch_size < 1:
            raise ValueError(f"DeepDXF_batch_size must be >= 1, got {self.DeepDXF_batch_size}")
        if self.DeepDXF_d_model % self.DeepDXF_heads != 0:
            raise ValueError(f"DeepDXF_d_model ({self.DeepDXF_d_model}) must be divisible by DeepDXF_heads ({self.DeepDXF_heads})")
        if self.DeepDXF_temperature <= 0:
            raise ValueError(f"DeepDXF_temperature must be > 0, got {self.DeepDXF_temperature}")
        if not 0.0 < self.DeepDXF_crop_fraction <= 1.0:
            raise ValueError(f"DeepDXF_crop_fraction must be in (0, 1], got {self.DeepDXF_crop_fraction}")
        if not 0.0 <= self.DeepDXF_drop_prob < 1.0:
            raise ValueError(f"DeepDXF_drop_prob must be in [0, 1), got {self.DeepDXF_drop_prob}")
        if not 0.0 <= self.DeepDXF_turn_prob <= 1.0:
            raise ValueError(f"DeepDXF_turn_prob must be in [0, 1], got {self.DeepDXF_turn_prob}")
        if not 0.0 <= self.DeepDXF_edit_fraction < 1.0:
            raise ValueError(f"DeepDXF_edit_fraction must be in [0, 1), got {self.DeepDXF_edit_fraction}")
        if not self.DeepDXF_grid_scales or min(self.DeepDXF_grid_scales) < 1:
            raise ValueError(f"DeepDXF_grid_scales must be >= 1, got {self.DeepDXF_grid_scales}")
        if self.DeepDXF_grid_channels < 1 or self.DeepDXF_grid_dim < 1:
            raise ValueError("DeepDXF_grid_channels and DeepDXF_grid_dim must be >= 1")
        if self.DeepDXF_chunk_len < 1:
            raise ValueError(f"DeepDXF_chunk_len must be >= 1, got {self.DeepDXF_chunk_len}")


__all__ = ["DeepDXFConfig"]
