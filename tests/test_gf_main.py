"""GF_main.py end to end, the shared fold bookkeeping, and the GF model API other modules use."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from config.GF_config import GFConfig
from dataset.dxf_process_GF import LAYOUT_DIM
from model.GF_model import build_gf_model, embed_graphs
from tests.synthetic import save_gf_npz, synthetic_gf_graphs
from utils.train.checkpoint import load_checkpoint, load_trained_models
from utils.train.loop import FoldTracker, LoopSettings, summarize_folds

ROOT = Path(__file__).resolve().parents[1]


def test_cli_run_writes_checkpoint_metrics_and_summary(tmp_path):
    graphs = synthetic_gf_graphs(24, seed=0)
    graphs.names = [f"QFN{i // 3} Rev{i % 3}" for i in range(24)]  # 8 parts, 3 revisions each
    save_gf_npz(graphs, tmp_path / "data")
    cmd = [sys.executable, "GF_main.py", "--data_dir", str(tmp_path / "data"), "--epochs", "2", "--k_folds", "2",
           "--run_name", "t", "--logs_dir", str(tmp_path / "logs"), "--checkpoints_dir", str(tmp_path / "ckpt"),
           "--GF_batch_size", "4", "--GF_hidden", "16"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

    ckpt = load_checkpoint(tmp_path / "ckpt" / "t" / "best_model.pth", expect_kind="GF")
    assert ckpt["config"]["GF_hidden"] == 16
    assert (tmp_path / "ckpt" / "best_model.pth").is_file()
    model = load_trained_models(tmp_path / "ckpt" / "t" / "best_model.pth").gf
    g = synthetic_gf_graphs(3, seed=5)
    assert ckpt["config"]["GF_layout_features"] is True  # the default: 11 GF features + the class layout
    feats = np.concatenate([g.features.numpy(), np.zeros((3, 10, LAYOUT_DIM), np.float32)], axis=2)
    assert embed_graphs(model, feats, g.adjacency.numpy()).shape == (3, 10 * 16)

    run = tmp_path / "logs" / "t"
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"fold", "epoch", "train_loss", "val_loss", "lr"} <= set(rows[0])
    assert {r["fold"] for r in rows} == {"0", "1"}
    assert len([r for r in rows if r["epoch"] != "0"]) == 4
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["best_val_loss_per_fold"]) == {"0", "1"}
    assert math.isfinite(summary["test_loss_mean"])
    assert 2.0 < summary["chance_level"] <= math.log(19) + 1e-9
    for name in ("config.json", "split.json", "train.log", "loss_curve.png"):
        assert (run / name).is_file(), name
    split = json.loads((run / "split.json").read_text())
    part = lambda idx: {split["names"][i].split(" Rev")[0] for i in idx}  # noqa: E731
    assert split["test"] and not part(split["test"]) & part(split["folds"][0]["train"] + split["folds"][0]["val"])
    assert not part(split["folds"][0]["train"]) & part(split["folds"][0]["val"])


def test_missing_data_says_how_to_create_it(tmp_path):
    proc = subprocess.run([sys.executable, "GF_main.py", "--data_dir", str(tmp_path / "none"),
                           "--logs_dir", str(tmp_path / "l"), "--checkpoints_dir", str(tmp_path / "c")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "dataset/dxf_process.py" in proc.stderr


class _Log:
    def __init__(self, root):
        self.rows, self.lines, self.root = [], [], root

    def log_metrics(self, row):
        self.rows.append(row)

    def info(self, msg, console=True):
        self.lines.append(msg)

    def checkpoint_path(self, name):
        return self.root / name


def test_the_fold_loop_stops_early_and_tests_the_best_weights(tmp_path):
    """Validation gets worse after epoch 2: training stops after `patience` more epochs
    and the test loss is computed with the epoch-2 weights (a trainer's loop around
    ``utils.train.loop.FoldTracker``)."""
    val_curve = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9]  # index 0: untrained
    m = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(m.weight)

    def evaluate(part):
        e = int(m.weight.item())
        return {"loss": val_curve[e] if part == "val" else 100.0 + e}

    log = _Log(tmp_path)
    tracker = FoldTracker(0, log, LoopSettings(epochs=7, patience=3, min_delta=0.0, kind="GF", config={}))
    tracker.start(evaluate("val"))
    for epoch in tracker.epochs():
        with torch.no_grad():
            m.weight.fill_(float(epoch))  # the weight remembers the epoch
        if tracker.end_epoch(epoch, {"train_loss": 1.0 / epoch}, evaluate("val"), {"model": m.state_dict()}):
            break
    m.load_state_dict(tracker.best_state["model"])
    res = tracker.finish(evaluate("test"))
    saved = load_checkpoint(tmp_path / "fold_0.pth", expect_kind="GF")
    assert saved["epoch"] == 2 and saved["val_loss"] == 3.0
    assert res.best_epoch == 2 and res.best_val_loss == 3.0
    assert res.epochs_run == 5  # epochs 3, 4, 5 without improvement
    assert res.test_loss == 102.0
    assert [r["epoch"] for r in log.rows] == [0, 1, 2, 3, 4, 5]
    assert sum("epoch 3/7" in line for line in log.lines) == 1  # one summary line per epoch
    summary = summarize_folds([res, res.__class__(1, 2.5, 1, 90.0, 3, 0.1, "x")])
    assert summary["best_fold"] == 1 and summary["best_checkpoint"] == "x"
    assert summary["val_loss_mean"] == pytest.approx(2.75)


def test_embedding_ignores_absent_classes_and_is_batch_independent():
    torch.manual_seed(0)
    model = build_gf_model(GFConfig(GF_hidden=16, GF_layout_features=False)).eval()
    g = synthetic_gf_graphs(8, seed=2)
    all_at_once = embed_graphs(model, g.features, g.adjacency)
    one_by_one = np.concatenate([embed_graphs(model, g.features[i:i + 1], g.adjacency[i:i + 1]) for i in range(8)])
    np.testing.assert_allclose(all_at_once, one_by_one, atol=1e-5)
    absent = ~g.mask[0]
    assert absent.any()
    assert np.all(all_at_once[0].reshape(10, 16)[absent.numpy()] == 0)
