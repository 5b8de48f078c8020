"""utils/run_log.py: run folders, metrics.csv, plot, summary, best-model publishing."""
import csv
import json
import sys

import numpy as np
import pytest

from utils.train.run_log import RunLogger
from utils.train.splits import Split, make_split


def _logger(tmp_path, name="r1", **kw):
    return RunLogger(name, {"epochs": 2, "lr": 0.1}, logs_root=tmp_path / "logs",
                     checkpoints_root=tmp_path / "ckpt", **kw)


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_default_name_and_folders(tmp_path):
    a = RunLogger(None, {}, logs_root=tmp_path / "logs", checkpoints_root=tmp_path / "ckpt", prefix="GF")
    b = RunLogger(None, {}, logs_root=tmp_path / "logs", checkpoints_root=tmp_path / "ckpt", prefix="GF")
    assert a.run_name.startswith("GF-20") and a.run_name != b.run_name
    assert a.log_dir.is_dir() and a.checkpoint_dir.is_dir()
    assert json.loads((a.log_dir / "config.json").read_text()) == {}


def test_config_split_log_and_summary_files(tmp_path, capsys):
    log = _logger(tmp_path)
    assert json.loads((log.log_dir / "config.json").read_text()) == {"epochs": 2, "lr": 0.1}
    split = make_split([f"d{i}" for i in range(12)], k_folds=2, seed=0)
    assert Split.load(log.save_split(split)).folds == split.folds
    log.info("fold 0: 3 épochs\nsecond line")
    text = (log.log_dir / "train.log").read_text(encoding="utf-8")
    assert "fold 0: 3 épochs" in text and "second line" in text
    assert "fold 0" in capsys.readouterr().out
    log.write_summary({"best_val_loss": [np.float32(0.5)], "test_loss": np.float64(0.25)})
    assert json.loads((log.log_dir / "summary.json").read_text()) == {"best_val_loss": [0.5], "test_loss": 0.25}


def test_metrics_new_column_rewrites_file(tmp_path):
    log = _logger(tmp_path)
    log.log_metrics({"fold": 0, "epoch": 1, "train_loss": 2.0, "val_loss": 2.5})
    log.log_metrics({"fold": 0, "epoch": 2, "train_loss": np.float32(1.5), "val_loss": 2.0})
    rows = _read(log.metrics_path)
    assert rows[0] == ["fold", "epoch", "train_loss", "val_loss"]
    assert rows[2] == ["0", "2", "1.5", "2.0"]
    log.log_metrics({"fold": 1, "epoch": 1, "val_loss": 1.0, "train_loss": 3.0, "w_GF": 0.7})
    rows = _read(log.metrics_path)
    assert rows[0] == ["fold", "epoch", "train_loss", "val_loss", "w_GF"]
    assert len(rows) == 4 and rows[1][-1] == "" and rows[3] == ["1", "1", "3.0", "1.0", "0.7"]


def test_second_logger_on_same_run_appends(tmp_path):
    _logger(tmp_path).log_metrics({"fold": 0, "epoch": 1, "train_loss": 1.0, "val_loss": 1.0})
    again = _logger(tmp_path)
    again.log_metrics({"fold": 1, "epoch": 1, "train_loss": 2.0, "val_loss": 2.0})
    assert len(_read(again.metrics_path)) == 3


def test_plot_with_terms_and_weights(tmp_path):
    log = _logger(tmp_path)
    assert log.plot_losses() is None  # nothing logged yet
    for fold in (0, 1):
        for epoch in range(1, 4):
            log.log_metrics({"fold": fold, "epoch": epoch, "train_loss": 3.0 / epoch, "val_loss": 3.5 / epoch,
                             "GF_loss": 1.0 / epoch, "DeepDXF_loss": 2.0 / epoch, "w_GF": 0.5, "w_DeepDXF": 0.5})
    out = log.plot_losses()
    assert out is not None and out.stat().st_size > 5000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_publish_best_copies_to_run_and_root(tmp_path):
    log = _logger(tmp_path)
    src = log.checkpoint_path("fold_1.pth")
    src.write_bytes(b"weights-1")
    run_best = log.publish_best(src)
    assert run_best.read_bytes() == b"weights-1"
    assert (tmp_path / "ckpt" / "best_model.pth").read_bytes() == b"weights-1"
    with pytest.raises(FileNotFoundError):
        log.publish_best(log.checkpoint_path("missing.pth"))


def test_wandb_missing_warns_and_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    log = _logger(tmp_path, use_wandb=True)
    log.log_metrics({"fold": 0, "epoch": 1, "train_loss": 1.0, "val_loss": 1.0})
    log.finish()
    assert "wandb is not installed" in (log.log_dir / "train.log").read_text()
    assert (log.log_dir / "loss_curve.png").is_file()


def test_wandb_receives_metrics_and_failed_init_continues(tmp_path, monkeypatch):
    import types

    calls = {}

    class FakeRun:
        summary: dict = {}

        def log(self, row):
            calls.setdefault("log", []).append(row)

        def finish(self):
            calls["finish"] = True

    def init(**kw):
        calls["init"] = kw
        return FakeRun()

    monkeypatch.setenv("WANDB_ENTITY", "lab")
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    log = _logger(tmp_path, name="w1", use_wandb=True)
    log.log_metrics({"fold": 0, "epoch": 1, "train_loss": 1.5, "val_loss": 2.0, "note": "x"})
    log.finish()
    assert calls["init"]["entity"] == "lab" and calls["init"]["project"] == "proj"
    assert calls["log"] == [{"fold": 0.0, "epoch": 1.0, "train_loss": 1.5, "val_loss": 2.0}]
    assert calls["finish"]

    def broken_init(**kw):
        raise RuntimeError("no network")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=broken_init))
    log2 = _logger(tmp_path, name="w2", use_wandb=True)
    log2.log_metrics({"fold": 0, "epoch": 1, "train_loss": 1.0, "val_loss": 1.0})
    assert "wandb could not start" in (log2.log_dir / "train.log").read_text()


def test_loss_curve_lines_have_own_colours_chance_levels_and_the_note(tmp_path):
    import matplotlib.image as mpimg

    from utils.train.run_log import PLOT_NOTE

    log = _logger(tmp_path)
    for epoch in range(0, 4):
        log.log_metrics({"fold": 0, "epoch": epoch, "train_loss": 3.0 / (epoch + 1), "val_loss": 2.5 / (epoch + 1),
                         "val_GF_loss": 1.0, "val_DeepDXF_loss": 2.0, "w_GF": 0.5, "w_DeepDXF": 1.5})
    log.set_chance_levels({"val_loss": 4.0, "val_GF_loss": 2.2, "val_DeepDXF_loss": 3.0})
    lines = log.plot_lines()
    curves = [ln for ln in lines if ln["style"] != "--"]
    chance = {ln["label"]: ln for ln in lines if ln["style"] == "--"}
    assert len({ln["colour"] for ln in curves}) == len(curves) == 6  # train, val, 2 terms, 2 weights
    assert set(chance) == {"chance loss", "chance GF_loss", "chance DeepDXF_loss"}
    assert chance["chance GF_loss"]["y"] == [2.2, 2.2]
    val_gf = next(ln for ln in curves if ln["label"] == "val_GF_loss")
    assert chance["chance GF_loss"]["colour"] == val_gf["colour"]
    assert "augmented" in PLOT_NOTE
    out = log.plot_losses()
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 3 * 300  # three panels side by side
    pixels = np.unique(np.round(img[..., :3].reshape(-1, 3), 3), axis=0)
    for ln in curves:  # every curve's colour is on the picture
        assert np.abs(pixels - np.asarray(ln["colour"][:3])).max(axis=1).min() < 0.02, ln["label"]


def test_info_off_a_terminal_prints_plain_lines(tmp_path, capsys):
    log = _logger(tmp_path)
    log.info("first")
    log.info("only in the file", console=False)
    out = capsys.readouterr().out
    assert out == "first\n"
    assert "only in the file" in (log.log_dir / "train.log").read_text(encoding="utf-8")
