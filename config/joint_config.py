"""Configuration of joint training: the two model configs plus the common part.

``JointConfig`` is one flat dataclass that inherits every field of ``GFConfig`` and
``DeepDXFConfig`` (their model fields are prefixed ``GF_`` / ``DeepDXF_``, so they
do not clash) and adds the joint fields. Fields both model configs define
(``data_dir``, ``epochs``, ``k_folds``, ``fold``, ``seed``, ``device``, ``lr``, ...)
exist once; where the two defaults differ the joint value is set here:

* ``lr`` / ``weight_decay`` are the DeepDXF parameter group's (and the cross-model
  heads'); the GF group has its own ``GF_lr`` / ``GF_weight_decay`` (the GF trainer
  uses 3e-3 / 1e-5, the DeepDXF trainer 3e-4 / 0.01).
* ``group_pattern`` is the shared default of ``dataset/formats.py``.

Every field is a flag of ``joint_main.py`` (``config/cli.py``). :meth:`JointConfig.gf_config`
and :meth:`JointConfig.deepdxf_config` give the configs the model builders take.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

from config.DeepDXF_config import DeepDXFConfig
from config.GF_config import GFConfig
from dataset.formats import DEFAULT_GROUP_PATTERN

WEIGHTINGS = ("uncertainty", "gradnorm", "dwa", "fixed")


@dataclass
class JointConfig(GFConfig, DeepDXFConfig):
    """Train the GF and DeepDXF models jointly (one optimizer, dynamically weighted loss)."""

    # --- common part (defaults) -------------------------------------
    data_dir: str = field(default="data", metadata={"help": "preprocessing output folder: its packed archive (packed/shard-*.h5, dataset/pack.py) when there is one, else GF/*.npz + DeepDXF/*.h5 (a drawing is used when both exist)"})
    epochs: int = field(default=50, metadata={"help": "maximum epochs per fold"})
    k_folds: int = field(default=10, metadata={"help": "cross-validation folds on the non-test 80 %"})
    group_pattern: str = field(
        default=DEFAULT_GROUP_PATTERN,
        metadata={"help": "regex removed from a drawing name to get its group (pieces/revisions stay on one side of the split)"},
    )
    seed: int = field(default=42, metadata={"help": "seed of split, initialisation, batches and views"})
    run_name: str = field(default="", metadata={"help": "name of logs/<run_name>/ and checkpoints/<run_name>/ (default: joint-<timestamp>)"})
    num_workers: int = field(
        default=0,
        metadata={"help": "DataLoader worker processes per training process that read drawings from disk and build "
                          "the joint batches (0 = in the training process); the batches are the same for any value"},
    )
    num_threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads per process (0 = torch's default; one is fastest for these small "
                          "models on a busy machine, docs/architecture.md)"},
    )
    GF_batch_size: int = field(default=45, metadata={"help": "GF pairs per batch: a joint batch holds up to 2 x GF_batch_size drawings"})
    DeepDXF_batch_size: int = field(
        default=5,
        metadata={"help": "DeepDXF_train.py's batch size; joint training derives its own, "
                          "int(len(train) / len(gf_train_loader)), so that both loaders give the same batches"},
    )

    # --- optimisation ---------------------------------------------------------
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate of the DeepDXF and cross-model head parameter groups (AdamW)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay of the DeepDXF and head groups"})
    GF_lr: float = field(default=3e-3, metadata={"help": "peak learning rate of the GF parameter group"})
    GF_weight_decay: float = field(default=1e-5, metadata={"help": "AdamW weight decay of the GF group"})
    weight_lr: float = field(default=0.025, metadata={"help": "learning rate of the loss-weight parameters (uncertainty, gradnorm; no weight decay)"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up optimizer steps before the cosine decay"})
    accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step (each micro-loss / accumulation_steps for backward)"})
    amp: bool = field(default=False, metadata={"help": "mixed precision on CUDA (autocast; GradScaler for fp16); ignored on CPU"})
    amp_dtype: Literal["auto", "bf16", "fp16"] = field(default="auto", metadata={"help": "autocast dtype with --amp: auto = bf16 on GPUs with native bf16 (compute capability >= 8.0), else fp16 + GradScaler; bf16 also enables CPU autocast"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm per model (0 = off), after unscaling"})

    # --- loss weighting -------------------------------------------------------
    weighting: Literal["uncertainty", "gradnorm", "dwa", "fixed"] = field(
        default="uncertainty", metadata={"help": "how the GF and DeepDXF losses are weighted (model/weighting/); "
                                                 "on the dev set all four tie (bench/joint_ablation.py)"})
    w_GF: float = field(default=1.0, metadata={"help": "fixed weight of the GF loss (weighting=fixed)"})
    w_DeepDXF: float = field(default=1.0, metadata={"help": "fixed weight of the DeepDXF loss (weighting=fixed)"})
    dwa_temperature: float = field(default=2.0, metadata={"help": "DWA temperature"})
    gradnorm_alpha: float = field(default=1.5, metadata={"help": "GradNorm restoring-force exponent alpha"})

    # --- cross-model term -----------------------------------------------------
    cross_weight: float = field(default=0.0, metadata={"help": "weight of the CLIP-style term pulling GF and DeepDXF embeddings of a drawing together "
                          "(0 = off; 0.5 lifted each model a little but not their concatenation, bench/joint_ablation.py)"})
    cross_temperature: float = field(default=0.1, metadata={"help": "temperature of the cross-model term"})
    cross_dim: int = field(default=64, metadata={"help": "size of the shared space of the cross-model projection heads"})

    # --- group term -----------------------------------------------------------
    group_weight: float = field(default=1.0, metadata={"help": "weight of the term that pulls the joint embeddings of one group "
                          "(a drawing and its revisions or pieces, by --group_pattern) together and away from other groups, "
                          "and each drawing's two views together; batches keep groups together. With revisions among the "
                          "training drawings (dataset/make_revisions.py) it teaches what a revision keeps (0 = off)"})
    group_temperature: float = field(default=0.1, metadata={"help": "temperature of the group term"})
    hard_negatives: bool = field(default=False, metadata={"help": "fill each training batch with groups that the "
                                 "non-learned floors find alike (k-means over the z-scored type histogram, raw GF "
                                 "matrices and rotation-robust layout grid, about one batch per cluster), so the group "
                                 "term's negatives are look-alikes that counting cannot tell apart (needs the group term; on our footprint "
                                 "archive it lowered retrieval, so it is off)"})

    # --- retrieval check -------------------------------------------------------
    val_retrieval: int = field(default=200, metadata={"help": "each validation pass and the test also search up to this many "
                          "of their drawings with each other (groups by --group_pattern: pieces, revisions) and log the mAP "
                          "of the joint embedding beside the strongest non-learned floor's (0 = off; NaN when no group has two members)"})

    # --- the search embedding --------------------------------------------------
    choose_embedding: bool = field(default=True, metadata={"help": "after training, score the learned embedding, every "
                          "non-learned floor and their fusions on this archive's validation drawings (groups by "
                          "--group_pattern and --groups) and store the best in the checkpoint: what "
                          "SimDeepDXF.py --embedding auto searches with"})
    choice_max_drawings: int = field(default=1000, metadata={"help": "drawings at most that choice ranks (the "
                                     "validation drawings first, then training drawings as distractors)"})
    groups: Optional[str] = field(default=None, metadata={"help": "JSON list of groups of similar drawing names of this "
                          "archive (as SimDeepDXF.py --groups takes), e.g. part kinds: the group term pulls each group "
                          "together (supervised; with a drawing's pieces and revisions), and their validation members "
                          "are queries of the embedding choice and of the retrieval check (a path relative to the "
                          "current folder)"})
    split_by_groups: bool = field(default=True, metadata={"help": "keep every --groups group on one side of the "
                          "train/validation/test split, as a drawing's pieces and revisions are: the embedding choice and "
                          "the retrieval check then measure groups the model never trained on, as a search of new kinds "
                          "of drawings meets them (--no-split_by_groups: a group's drawings may fall on both sides, and "
                          "validation measures new members of trained groups)"})

    # --- run control ----------------------------------------------------------
    resume: bool = field(default=False, metadata={"help": "continue the run --run_name (default: the latest joint run) from checkpoints/<run>/last.pth"})
    stop_after_epochs: int = field(default=0, metadata={"help": "leave after this many epochs of this process, as if interrupted (for testing --resume; 0 = off)"})
    dist_backend: str = field(default="auto", metadata={"help": "torch.distributed backend under torchrun: auto = nccl on CUDA, gloo on CPU"})

    def __post_init__(self) -> None:
        GFConfig.__post_init__(self)
        DeepDXFConfig.__post_init__(self)
        if self.accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be >= 1, got {self.accumulation_steps}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.cross_weight < 0:
            raise ValueError(f"cross_weight must be >= 0, got {self.cross_weight}")
        if self.cross_temperature <= 0:
            raise ValueError(f"cross_temperature must be > 0, got {self.cross_temperature}")
        if self.group_weight < 0:
            raise ValueError(f"group_weight must be >= 0, got {self.group_weight}")
        if self.choice_max_drawings < 2:
            raise ValueError(f"choice_max_drawings must be >= 2, got {self.choice_max_drawings}")
        if self.val_retrieval < 0:
            raise ValueError(f"val_retrieval must be >= 0, got {self.val_retrieval}")
        if self.group_temperature <= 0:
            raise ValueError(f"group_temperature must be > 0, got {self.group_temperature}")
        if self.dwa_temperature <= 0:
            raise ValueError(f"dwa_temperature must be > 0, got {self.dwa_temperature}")

    def _sub_config(self, cls: type, **override: object):
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        values = {n: getattr(self, n) for n in names}
        values.update(override)
        return cls(**values)

    def gf_config(self) -> GFConfig:
        """The ``GFConfig`` of the GF part (``lr``/``weight_decay`` = ``GF_lr``/``GF_weight_decay``)."""
        return self._sub_config(GFConfig, lr=self.GF_lr, weight_decay=self.GF_weight_decay)

    def deepdxf_config(self, batch_size: Optional[int] = None) -> DeepDXFConfig:
        """The ``DeepDXFConfig`` of the DeepDXF part (``batch_size``: the derived joint batch size)."""
        override = {"DeepDXF_batch_size": batch_size} if batch_size else {}
        return self._sub_config(DeepDXFConfig, **override)


__all__ = ["JointConfig", "WEIGHTINGS"]
