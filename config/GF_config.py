"""Configuration of the GF model (CGMN contrastive graph matching) and its trainer.

Every field is a command-line flag of ``GF_main.py`` (``config/cli.py``). Fields
shared by every trainer keep the names every trainer shares (``data_dir``, ``epochs``,
``k_folds``, ``fold``, ``lr``, ``seed``, ``device``, ``run_name``, ``wandb``);
names specific to this model start with ``GF_`` so that the joint config can
import this class next to ``DeepDXFConfig`` without clashes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from dataset.formats import DEFAULT_GROUP_PATTERN, GF_FEATURES, LAYOUT_DIM

#: node feature size of the GF encoding itself (1 free count + 10 overlap columns)
GF_BASE_FEATURES = GF_FEATURES
#: What a saved config (a checkpoint's) that lacks a field meant: the value the field had
#: before it existed. ``GF_layout_features`` came later with default on; a checkpoint
#: without it has a GF model of the 11 GF features alone.
SAVED_CONFIG_FALLBACKS: dict[str, object] = {"GF_layout_features": False}


@dataclass
class GFConfig:
    """Train the GF graph model (CGMN-style contrastive matching of 10-node class graphs)."""

    # --- data, split, run -------------------------------------------------
    data_dir: str = field(default="data", metadata={"help": "preprocessing output folder (reads <data_dir>/GF/*.npz)"})
    epochs: int = field(default=50, metadata={"help": "maximum epochs per fold"})
    k_folds: int = field(default=10, metadata={"help": "cross-validation folds on the non-test 80 % (1: one grouped 90/10 split)"})
    fold: Optional[int] = field(default=None, metadata={"help": "run this fold only (0-based); none = all folds"})
    test_fraction: float = field(default=0.2, metadata={"help": "fraction of drawings (by group) held out as the test set"})
    group_pattern: str = field(
        default=DEFAULT_GROUP_PATTERN,
        metadata={"help": "regex removed from a drawing name to get its group, so that revisions (' Rev1') and pieces ('_2') "
                          "of one drawing stay on one side of the split (default: dataset.formats.DEFAULT_GROUP_PATTERN)"},
    )
    seed: int = field(default=42, metadata={"help": "seed of split, initialisation, pairing and views"})
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:1, ..."})
    run_name: str = field(default="", metadata={"help": "name of logs/<run_name>/ and checkpoints/<run_name>/ (default: GF_<timestamp>)"})
    wandb: bool = field(default=False, metadata={"help": "log to Weights & Biases (WANDB_ENTITY, WANDB_PROJECT)"})
    logs_dir: str = field(default="logs", metadata={"help": "root folder of run logs"})
    checkpoints_dir: str = field(default="checkpoints", metadata={"help": "root folder of checkpoints"})
    num_workers: int = field(default=0, metadata={"help": "unused by GF (all graphs live in one tensor); kept for a uniform CLI"})
    num_threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads (0 = torch's default). GF tensors are tiny: more threads only add "
                          "synchronisation (docs/architecture.md)"},
    )

    # --- optimisation ------------------------------------------------------
    GF_batch_size: int = field(default=45, metadata={"help": "pairs per batch (2 x GF_batch_size distinct graphs)"})
    lr: float = field(default=3e-3, metadata={"help": "learning rate (AdamW)"})
    weight_decay: float = field(default=1e-5, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 = off)"})
    patience: int = field(default=10, metadata={"help": "early stopping: epochs without validation improvement"})
    min_delta: float = field(default=0.0, metadata={"help": "early stopping: minimum improvement"})

    # --- model -------------------------------------------------------------
    GF_in_channels: int = field(default=GF_BASE_FEATURES, metadata={"help": "node feature size (1 free count + 10 overlap columns; GF_layout_features adds its columns)"})
    GF_layout_features: bool = field(default=True, metadata={
        "help": "append to each node the rotation-robust spatial occupancy of its class (rings around the centre and a "
                "grid pooled over turns/flips, the 'layout' array of the GF files) to the 11 GF features "
                "(--no-GF_layout_features: the 11 GF features alone)"})
    GF_hidden: int = field(default=32, metadata={"help": "node state size (input projection and GGNN)"})
    GF_num_layers: int = field(default=3, metadata={"help": "GGNN propagation steps"})
    GF_proj_dim: int = field(default=32, metadata={"help": "projection head output size (loss only)"})
    GF_pooling: Literal["concat", "mean", "sum", "concat_input"] = field(
        default="concat",
        metadata={"help": "graph embedding for similarity: node states concatenated in class order, their mean or sum, or concat plus the raw GF matrices"},
    )

    # --- loss and views ----------------------------------------------------
    GF_temperature: float = field(default=0.2, metadata={"help": "temperature of the node-level contrastive loss"})
    GF_feature_mask_rate: float = field(default=0.2, metadata={"help": "probability of zeroing each feature column in a view"})
    GF_edge_drop_rate: float = field(default=0.2, metadata={"help": "probability of dropping each edge in a view"})
    GF_edge_add_rate: float = field(default=0.1, metadata={"help": "probability of adding each absent edge between present classes in a view"})

    def __post_init__(self) -> None:
        if self.GF_batch_size < 1:
            raise ValueError(f"GF_batch_size must be >= 1, got {self.GF_batch_size}")
        if self.GF_temperature <= 0:
            raise ValueError(f"GF_temperature must be > 0, got {self.GF_temperature}")
        for name in ("GF_feature_mask_rate", "GF_edge_drop_rate", "GF_edge_add_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.GF_layout_features and self.GF_in_channels == GF_BASE_FEATURES:
            self.GF_in_channels = GF_BASE_FEATURES + LAYOUT_DIM
        if self.k_folds < 1:
            raise ValueError(f"k_folds must be >= 1 (1: one grouped 90/10 train/validation split), got {self.k_folds}")


__all__ = ["GFConfig", "GF_BASE_FEATURES", "SAVED_CONFIG_FALLBACKS"]
