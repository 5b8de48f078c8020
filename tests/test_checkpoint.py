"""utils/train/checkpoint.py: round trip, atomic write, weights-only reading, clear errors, the models of each kind."""

import numpy as np
import pytest
import torch

from config.cli import config_to_dict
from config.DeepDXF_config import DeepDXFConfig
from config.GF_config import GFConfig
from config.joint_config import JointConfig
from model.DeepDXF_model import build_deepdxf_model
from model.GF_model import build_gf_model
from utils.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    joint_config_from_checkpoint,
    load_checkpoint,
    load_trained_models,
    save_checkpoint,
)


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


# --------------------------------------------------------------------------- weights_only, atomic write

_MARKER: dict[str, bool] = {}


def _ran_on_load() -> None:
    """What a foreign pickle would run when unpickled with weights_only=False."""
    _MARKER["ran"] = True


class _Foreign:
    def __reduce__(self):
        return (_ran_on_load, ())


def test_pickled_objects_are_refused_without_running_their_code(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"format_version": CHECKPOINT_FORMAT, "kind": "GF", "config": {}, "state": {}, "x": _Foreign()}, path)
    _MARKER.clear()
    with pytest.raises(CheckpointError, match=r"foreign\.pth is not a checkpoint of this toolkit: it holds Python objects"):
        load_checkpoint(path)
    assert "ran" not in _MARKER


def test_numpy_values_are_stored_as_plain_values_and_read_back(tmp_path):
    path = save_checkpoint(tmp_path / "n.pth", "GF", {"dims": (np.int64(3),)}, {"model": {}},
                           val_loss=np.float64(0.25), counts=np.arange(3))
    ckpt = load_checkpoint(path)
    assert type(ckpt["val_loss"]) is float and ckpt["val_loss"] == 0.25
    assert type(ckpt["config"]["dims"][0]) is int
    assert torch.equal(ckpt["counts"], torch.arange(3))


def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path):
    path = save_checkpoint(tmp_path / "k.pth", "GF", {"a": 1}, {})
    with pytest.raises(Exception):
        save_checkpoint(path, "GF", {"a": 2}, {"bad": lambda: None})  # a lambda cannot be pickled
    assert load_checkpoint(path)["config"] == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["k.pth"]


# --------------------------------------------------------------------------- load_trained_models

def _gf_cfg() -> GFConfig:
    return GFConfig(GF_hidden=8, GF_proj_dim=4, GF_num_layers=1, GF_pooling="mean")


def _dx_cfg() -> DeepDXFConfig:
    return DeepDXFConfig(DeepDXF_d_model=16, DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=8,
                         DeepDXF_size_dim=4, DeepDXF_chunk_len=16)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trained_models_of_each_kind(tmp_path):
    torch.manual_seed(0)
    gf, dx = build_gf_model(_gf_cfg()), build_deepdxf_model(_dx_cfg())
    save_checkpoint(tmp_path / "gf.pth", "GF", config_to_dict(_gf_cfg()), {"model": gf.state_dict()})
    save_checkpoint(tmp_path / "dx.pth", "DeepDXF", config_to_dict(_dx_cfg()), {"model": dx.state_dict()})
    joint_cfg = JointConfig(GF_hidden=8, GF_proj_dim=4, GF_num_layers=1, GF_pooling="mean", DeepDXF_d_model=16,
                            DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=8, DeepDXF_size_dim=4,
                            DeepDXF_chunk_len=16)
    # a joint run's state as joint_train writes it (weighting state, cross-model heads)
    state = {"gf": gf.state_dict(), "deepdxf": dx.state_dict(), "weighting": {"log_vars": torch.zeros(2)},
             "weighting_method": "UncertaintyWeighting", "heads": {"w": torch.ones(2)}}
    save_checkpoint(tmp_path / "j.pth", "joint", config_to_dict(joint_cfg), state, fold=0)

    g = load_trained_models(tmp_path / "gf.pth")
    assert (g.kind, g.deepdxf, g.path) == ("GF", None, tmp_path / "gf.pth")
    assert _same_weights(g.gf, gf) and not g.gf.training and g.gf.pooling == "mean"
    d = load_trained_models(tmp_path / "dx.pth")
    assert d.kind == "DeepDXF" and d.gf is None and _same_weights(d.deepdxf, dx) and not d.deepdxf.training
    j = load_trained_models(tmp_path / "j.pth")
    assert j.kind == "joint" and _same_weights(j.gf, gf) and _same_weights(j.deepdxf, dx)
    assert j.config["GF_hidden"] == 8 and j.config["weighting"] == "uncertainty"
    assert joint_config_from_checkpoint(load_checkpoint(tmp_path / "j.pth")) == joint_cfg


def test_trained_models_refuse_other_state_keys_and_foreign_weights(tmp_path):
    gf = build_gf_model(_gf_cfg())
    # no fallback to other spellings of the keys
    save_checkpoint(tmp_path / "upper.pth", "joint", config_to_dict(JointConfig()), {"GF": gf.state_dict()})
    with pytest.raises(CheckpointError, match=r"upper\.pth: this joint checkpoint holds no state\['gf'\]"):
        load_trained_models(tmp_path / "upper.pth")
    # weights of another model size than the config says
    save_checkpoint(tmp_path / "size.pth", "GF", config_to_dict(GFConfig(GF_hidden=16)), {"model": gf.state_dict()})
    with pytest.raises(CheckpointError, match=r"size\.pth: the gf model cannot be rebuilt"):
        load_trained_models(tmp_path / "size.pth")
    (tmp_path / "text.pth").write_text("not torch")
    with pytest.raises(CheckpointError, match=r"text\.pth is not a checkpoint"):
        load_trained_models(tmp_path / "text.pth")
