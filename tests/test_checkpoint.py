"""utils/checkpoint.py: round trip, atomic write, clear errors."""

import pytest
import torch

from utils.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip_creates_parents(tmp_path):
    path = tmp_path / "run 1" / "fold_0" / "best.pth"
    state = {"model": {"w": torch.arange(4.0)}}
    save_checkpoint(path, "GF", {"epochs": 3, "dims": [1, 2]}, state, epoch=2, val_loss=0.5)
    ckpt = load_checkpoint(path, expect_kind="GF")
    assert ckpt["format_version"] == CHECKPOINT_FORMAT
    assert ckpt["kind"] == "GF" and ckpt["config"] == {"epochs": 3, "dims": [1, 2]}
    assert torch.equal(ckpt["state"]["model"]["w"], torch.arange(4.0))
    assert ckpt["epoch"] == 2 and ckpt["val_loss"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["best.pth"]  # no temp file left


def test_missing_file_tells_how_to_train(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*train a model first"):
        load_checkpoint(tmp_path / "nope.pth")


def test_foreign_files_are_rejected(tmp_path):
    text = tmp_path / "a.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint of this toolkit"):
        load_checkpoint(text)
    plain = tmp_path / "b.pth"
    torch.save({"model": {}}, plain)
    with pytest.raises(CheckpointError, match="not a checkpoint of this toolkit"):
        load_checkpoint(plain)


def test_other_format_version_and_kind(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, "DeepDXF", {}, {})
    with pytest.raises(CheckpointError, match="is a DeepDXF checkpoint, but a GF checkpoint"):
        load_checkpoint(path, expect_kind="GF")
    ckpt = load_checkpoint(path)
    ckpt["format_version"] = 0
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="format_version 0"):
        load_checkpoint(path)
    assert issubclass(CheckpointError, ValueError)


def test_unknown_kind_and_reserved_keys_refused(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "d.pth", "CNN", {}, {})
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "d.pth", "GF", {}, {}, format_version=2)
