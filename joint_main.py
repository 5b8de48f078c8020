"""Train the GF and DeepDXF models jointly: python joint_main.py [--flags]

    python joint_main.py                                   # sample corpus in data/, default settings
    python joint_main.py --data_dir data/real --fold 0 --epochs 10 --weighting dwa --cross_weight 0.5
    torchrun --nproc_per_node=4 joint_main.py --device cuda --amp --num_workers 4   # DistributedDataParallel
    python joint_main.py --resume --run_name NAME           # continue an interrupted run
    python joint_main.py --groups my_groups.json            # the retrieval check also searches your groups

Reads the drawings that have both encodings, from a packed archive
(``<data_dir>/packed/shard-*.h5``, ``dataset/pack.py``) or from the per-drawing
folders (``<data_dir>/GF/*.npz`` and ``<data_dir>/DeepDXF/*.h5``), one batch at a
time (``--num_workers`` DataLoader processes read and collate; memory does not grow
with the archive), holds out 20 % (by group) as the test set and runs k-fold cross
validation on the rest. Per fold: one optimizer over both models (and
the cross-model heads and loss weights), the dynamically weighted combined loss,
early stopping on the combined validation loss, the best checkpoint (kind
``joint``), the test losses of that checkpoint. Writes ``logs/<run_name>/``
(config, split, train.log, metrics.csv with every loss term and weight,
loss_curve.png, summary.json with the chance levels) and ``checkpoints/<run_name>/``
(``fold_<i>.pth``, ``last.pth`` for ``--resume``, ``best_model.pth`` = the best
fold's, also copied to ``checkpoints/best_model.pth``).

This file parses the flags; the training, one file top to bottom, is ``joint_train.py``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

from config.cli import parse_config
from config.joint_config import JointConfig
from joint_train import train
from utils.train.checkpoint import load_checkpoint
from utils.train.loop import LAST_NAME

#: the exit code after Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    """Run the joint training; returns the summary (every rank), or an exit code on bad input
    or Ctrl-C (:data:`EXIT_INTERRUPTED`, after one line saying what was saved)."""
    cfg = parse_config(JointConfig, argv, description=__doc__.split("\n")[0])
    try:
        return train(cfg)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank gets the signal: one line
            print(interrupted_message(cfg), file=sys.stderr)
        return EXIT_INTERRUPTED


def interrupted_message(cfg: JointConfig) -> str:
    """One line after Ctrl-C: what ``last.pth`` of the run holds and the command that goes on."""
    last = Path(cfg.checkpoints_dir) / cfg.run_name / LAST_NAME if cfg.run_name else None
    if last is None or not last.is_file():
        return "interrupted (Ctrl-C) before the first epoch ended: nothing saved to resume from"
    ckpt = load_checkpoint(last, expect_kind="joint")
    if ckpt.get("complete"):
        return f"interrupted (Ctrl-C) after the run finished: {last} is complete"
    return (f"interrupted (Ctrl-C): saved {last} after fold {ckpt.get('fold')} epoch {ckpt.get('epoch')}; "
            f"go on with the same command plus --resume --run_name {cfg.run_name}")


def cli(argv: Sequence[str] | None = None) -> int:
    """The command (``python joint_main.py``, the ``dxf-train`` console script): :func:`main`
    as an exit code (0 after a run, its code on bad input or Ctrl-C)."""
    out = main(argv)
    return out if isinstance(out, int) else 0


if __name__ == "__main__":
    sys.exit(cli())
