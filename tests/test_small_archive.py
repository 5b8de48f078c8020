"""A small archive gets a batch that gives an epoch several optimizer steps, and the log says so."""
import json

import pytest

import joint_main
import joint_train
from config.joint_config import JointConfig
from tests.synthetic import write_synthetic_joint_corpus
from utils.train.checkpoint import load_checkpoint

DEFAULT = JointConfig.__dataclass_fields__["GF_batch_size"].default


def test_the_default_batch_is_scaled_to_a_small_archive():
    cfg = JointConfig()
    note = joint_train.fit_batch_to_archive(cfg, 54)  # 75 drawings: 60 after the test split, 54 per fold of 10
    assert cfg.GF_batch_size == 6  # 54 // (2 * 4)
    assert -(-54 // (2 * cfg.GF_batch_size)) >= joint_train.MIN_STEPS_PER_EPOCH  # 5 batches, was 1
    assert "small archive" in note and "--GF_batch_size 6" in note and "1 optimizer step(s)" in note


def test_scaling_counts_accumulation_and_processes_and_keeps_a_floor():
    cfg = JointConfig(accumulation_steps=2)
    joint_train.fit_batch_to_archive(cfg, 200, world_size=2)  # 200 // (2 * 4 * 2 * 2) = 6 pairs
    assert cfg.GF_batch_size == 6
    tiny = JointConfig()
    joint_train.fit_batch_to_archive(tiny, 12)
    assert tiny.GF_batch_size == joint_train.MIN_GF_PAIRS  # the archive allows no more steps than that


@pytest.mark.parametrize("n_train, kw", [(2000, {}), (54, {"GF_batch_size": 45 - 1}), (54, {"GF_batch_size": 3})])
def test_a_large_archive_or_a_chosen_batch_is_left_alone(n_train, kw):
    cfg = JointConfig(**kw)
    before = cfg.GF_batch_size
    assert joint_train.fit_batch_to_archive(cfg, n_train) is None
    assert cfg.GF_batch_size == before


def test_joint_main_logs_and_saves_the_scaled_batch(tmp_path):
    write_synthetic_joint_corpus(tmp_path, 40, seed=2, max_len=20)
    argv = ["--data_dir", str(tmp_path), "--logs_dir", str(tmp_path / "logs"), "--checkpoints_dir",
            str(tmp_path / "ckpt"), "--run_name", "small", "--k_folds", "2", "--fold", "0", "--epochs", "1",
            "--GF_hidden", "8", "--GF_proj_dim", "8", "--GF_num_layers", "1", "--DeepDXF_d_model", "8",
            "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", "--DeepDXF_proj_dim", "8", "--DeepDXF_size_dim", "4",
            "--DeepDXF_chunk_len", "16", "--val_retrieval", "0"]
    joint_main.main(argv)
    log = (tmp_path / "logs" / "small" / "train.log").read_text(encoding="utf-8")
    assert f"with the default --GF_batch_size {DEFAULT}; using --GF_batch_size {joint_train.MIN_GF_PAIRS}" in log
    assert "2 joint batch(es) per epoch" in log  # 16 training drawings in batches of up to 8, not 1 batch
    config = json.loads((tmp_path / "logs" / "small" / "config.json").read_text(encoding="utf-8"))
    assert config["GF_batch_size"] == joint_train.MIN_GF_PAIRS
    ckpt = load_checkpoint(tmp_path / "ckpt" / "small" / "best_model.pth", expect_kind="joint")
    assert ckpt["config"]["GF_batch_size"] == joint_train.MIN_GF_PAIRS
