"""DeepDXF data pipeline and a tiny end-to-end run of DeepDXF_train.py."""
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from config.DeepDXF_config import DeepDXFConfig
from dataset.loaders.deepdxf import DeepDXFCollate, LengthGroupedBatchSampler, load_deepdxf_dir
from dataset.loaders.views import deepdxf_view as make_view

ROOT = Path(__file__).resolve().parents[1]


def fake_drawing(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.full((n, 14), -1, dtype=np.int32)
    rows[:, 0] = rng.integers(0, 12, n)
    rows[:, 1:5] = rng.integers(0, 256, (n, 4))
    return rows


def write_corpus(folder: Path, n: int = 12) -> None:
    (folder / "DeepDXF").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        rows = fake_drawing(int(rng.integers(5, 80)), i)
        with h5py.File(folder / "DeepDXF" / f"part {i} (Cu)_1.h5", "w") as f:
            f.create_dataset("entities", data=rows)
            f.attrs["type_counts"] = np.bincount(rows[:, 0], minlength=12)


def test_length_grouped_sampler_covers_every_drawing_once_and_groups():
    lengths = np.random.default_rng(0).integers(1, 5000, 101)
    s = LengthGroupedBatchSampler(lengths, 8, seed=3)
    batches = s.batches()
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(101)) and len(batches) == len(s)
    assert min(len(b) for b in batches) >= 2  # 101 = 12 * 8 + 5: no singleton
    rand = LengthGroupedBatchSampler(lengths, 8, seed=3, grouped=False).batches()
    pad = lambda bs: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs)  # noqa: E731
    assert pad(batches) < 0.5 * pad(rand)
    s.set_epoch(1)
    assert s.batches() != batches  # a new grouping each epoch
    assert LengthGroupedBatchSampler(lengths, 8, seed=3).batches() == batches  # seeded
    assert len(LengthGroupedBatchSampler(lengths[:17], 8).batches()) == 2  # 8 + 9, not 8 + 8 + 1


def test_views_jitter_only_used_continuous_slots_and_stay_in_range():
    rows = fake_drawing(600, 1)
    rows[:, 5] = 3  # slot 5 of LINE is unused (-1) in real data; here a value for every type
    rows[rows[:, 0] == 3, 1] = 1  # LWPOLYLINE slot 1: 'closed' flag, must not be jittered
    cfg = DeepDXFConfig(DeepDXF_chunk_len=64, DeepDXF_max_view_chunks=3)
    chunks = make_view(rows, cfg, np.random.default_rng(0))
    assert 1 <= len(chunks) <= 3
    for r, idx, n in chunks:
        assert n == 600 and len(r) <= 64 and np.all(np.diff(idx) > 0)
        orig = rows[idx]
        assert np.array_equal(r[:, 0], orig[:, 0])
        assert np.array_equal(r[:, 6:13] == -1, orig[:, 6:13] == -1)  # unused stays unused
        assert r[:, 1:13].max() <= 255 and r[:, 1:13].min() >= -1
        assert np.all(r[orig[:, 0] == 3, 1] == 1)
        assert np.abs(r[:, 1:5] - orig[:, 1:5]).max() <= cfg.DeepDXF_jitter + cfg.DeepDXF_shift


def test_views_without_augmentation_are_identical():
    cfg = DeepDXFConfig(DeepDXF_chunk_len=32, DeepDXF_aug_crop=False, DeepDXF_aug_drop=False,
                        DeepDXF_aug_jitter=False, DeepDXF_aug_shift=False, DeepDXF_max_view_chunks=2)
    batch = DeepDXFCollate(cfg)([(0, fake_drawing(100, 2)), (1, fake_drawing(10, 3))])
    assert torch.equal(batch.view1.params, batch.view2.params)
    assert batch.view1.mask.sum() == 64 + 10  # first max_view_chunks chunks of the long one


def test_load_deepdxf_dir(tmp_path):
    write_corpus(tmp_path, 3)
    names, arrays = load_deepdxf_dir(tmp_path)
    assert names == ["part 0 (Cu)_1", "part 1 (Cu)_1", "part 2 (Cu)_1"]
    assert all(a.dtype == np.int32 and a.shape[1] == 14 for a in arrays)
    with pytest.raises(FileNotFoundError):
        load_deepdxf_dir(tmp_path / "nothing")


def test_cli_end_to_end(tmp_path):
    write_corpus(tmp_path / "data")
    cmd = [sys.executable, "DeepDXF_train.py", "--data_dir", str(tmp_path / "data"), "--epochs", "2",
           "--k_folds", "2", "--fold", "0", "--DeepDXF_batch_size", "3", "--run_name", "tiny",
           "--logs_dir", str(tmp_path / "logs"), "--checkpoints_dir", str(tmp_path / "ckpt"),
           "--DeepDXF_chunk_len", "32", "--DeepDXF_d_model", "16", "--DeepDXF_heads", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "ckpt" / "tiny" / "best_model.pth").is_file()
    assert (tmp_path / "ckpt" / "best_model.pth").is_file()
    header = (tmp_path / "logs" / "tiny" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"fold", "epoch", "train_loss", "val_loss"} <= set(header)
    summary = json.loads((tmp_path / "logs" / "tiny" / "summary.json").read_text())
    assert abs(summary["chance_level"]["nt_xent"] - np.log(5)) < 1e-9
    assert np.isfinite(summary["test_loss_mean"]) and "0" in summary["best_val_loss_per_fold"]
    assert summary["best_checkpoint"]
    # the schedule follows the run: a 2-epoch run has no 20-step warm-up, and the log says so
    config = json.loads((tmp_path / "logs" / "tiny" / "config.json").read_text())
    assert config["warmup_steps"] == 0 and config["as_configured"]["warmup_steps"] == 20
    log = (tmp_path / "logs" / "tiny" / "train.log").read_text(encoding="utf-8")
    assert "optimizer step(s) per epoch" in log and "WARNING: a very short run" in log
    assert "\r" not in out.stderr and "it/s" not in out.stderr  # no bars when stderr is a pipe


def test_param_mask_view_hides_only_used_slots():
    rows = fake_drawing(200, 5)
    cfg = DeepDXFConfig(DeepDXF_aug_crop=False, DeepDXF_aug_drop=False, DeepDXF_aug_jitter=False,
                        DeepDXF_aug_shift=False, DeepDXF_aug_param_mask=True, DeepDXF_param_mask_prob=0.5,
                        DeepDXF_chunk_len=256)
    (r, idx, _), = make_view(rows, cfg, np.random.default_rng(0))
    hidden = (rows[:, 1:13] >= 0) & (r[:, 1:13] == -1)
    assert 0.4 < hidden.sum() / (rows[:, 1:13] >= 0).sum() < 0.6
    kept = r[:, 1:13] >= 0
    assert np.array_equal(r[:, 1:13][kept], rows[:, 1:13][kept])
