"""What preprocessing writes is what training reads: sample drawings -> dxf_process.py -> joint_main.py."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import joint_main
from dataset.make_sample_dxf import make_sample_corpus

ROOT = Path(__file__).resolve().parents[1]


def test_preprocessed_sample_drawings_train_two_epochs(tmp_path):
    paths = make_sample_corpus(tmp_path / "raw", seed=0, n_revisions=2)
    proc = subprocess.run([sys.executable, "dataset/dxf_process.py", "--input", str(tmp_path / "raw"),
                           "--output", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "data" / "GF").glob("*.npz"))) == len(paths) == 20
    summary = joint_main.main([
        "--data_dir", str(tmp_path / "data"), "--logs_dir", str(tmp_path / "logs"),
        "--checkpoints_dir", str(tmp_path / "ckpt"), "--run_name", "prep", "--epochs", "2", "--k_folds", "2",
        "--fold", "0", "--GF_batch_size", "2", "--GF_hidden", "8", "--GF_proj_dim", "8", "--GF_num_layers", "1",
        "--DeepDXF_d_model", "8", "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", "--DeepDXF_proj_dim", "8",
        "--DeepDXF_size_dim", "4", "--DeepDXF_chunk_len", "32", "--DeepDXF_max_view_chunks", "1"])
    assert summary["n_drawings"] == 20 and summary["n_test"] >= 2
    assert math.isfinite(summary["test_loss_mean"])
    with open(tmp_path / "logs" / "prep" / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert all(math.isfinite(float(r["val_GF_loss"])) and float(r["val_DeepDXF_loss"]) > 0 for r in rows)
    chance = json.loads((tmp_path / "logs" / "prep" / "summary.json").read_text())["chance_level"]
    assert chance["chance_GF"] > 0 and chance["chance_DeepDXF"] > 0
    assert (tmp_path / "ckpt" / "prep" / "best_model.pth").is_file()
