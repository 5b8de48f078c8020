"""joint_main.py end to end: each weighting, the run folder, resume continues the loss curve."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import joint_main
from tests.synthetic import write_synthetic_joint_corpus
from utils.train.checkpoint import load_checkpoint, load_trained_models

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--k_folds", "2", "--fold", "0", "--GF_batch_size", "3", "--GF_hidden", "8", "--GF_proj_dim", "8",
        "--GF_num_layers", "1", "--DeepDXF_d_model", "8", "--DeepDXF_heads", "2", "--DeepDXF_layers", "1",
        "--DeepDXF_proj_dim", "8", "--DeepDXF_size_dim", "4", "--DeepDXF_chunk_len", "16", "--cross_dim", "8",
        "--warmup_steps", "0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint_main")
    write_synthetic_joint_corpus(root, 24, seed=2, max_len=30)
    return root


def _argv(root, run, *extra):
    return ["--data_dir", str(root), "--logs_dir", str(root / "logs"), "--checkpoints_dir", str(root / "ckpt"),
            "--run_name", run, *TINY, *extra]


def _rows(root, run):
    with open(root / "logs" / run / "metrics.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("weighting", ["uncertainty", "dwa", "fixed"])
def test_each_weighting_trains_and_writes_the_run(corpus, weighting):
    run = f"w_{weighting}"
    summary = joint_main.main(_argv(corpus, run, "--epochs", "3", "--weighting", weighting, "--cross_weight", "0.5"))
    assert summary["weighting"] == weighting and len(summary["folds"]) == 1
    rows = _rows(corpus, run)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    for col in ("fold", "epoch", "train_loss", "val_loss", "train_GF_loss", "train_DeepDXF_loss", "train_cross_loss",
                "val_GF_loss", "val_DeepDXF_loss", "val_cross_loss", "w_GF", "w_DeepDXF", "lr", "drawings_per_s"):
        assert col in rows[0], col
    assert all(float(r["val_loss"]) > 0 for r in rows)
    if weighting == "dwa":  # weights move from the third epoch on, and sum to 2
        assert float(rows[3]["w_GF"]) + float(rows[3]["w_DeepDXF"]) == pytest.approx(2.0, rel=1e-5)
    if weighting == "uncertainty":
        assert float(rows[3]["w_GF"]) != 1.0
    logs = corpus / "logs" / run
    assert (logs / "loss_curve.png").is_file() and (logs / "split.json").is_file()
    s = json.loads((logs / "summary.json").read_text())
    assert {"chance_GF", "chance_DeepDXF", "chance_cross"} <= set(s["chance_level"])
    ckpt = load_checkpoint(corpus / "ckpt" / run / "best_model.pth", expect_kind="joint")
    assert ckpt["config"]["weighting"] == weighting and "GF_hidden" in ckpt["config"]
    trained = load_trained_models(corpus / "ckpt" / run / "best_model.pth")
    gf, dx = trained.gf, trained.deepdxf
    assert isinstance(gf, torch.nn.Module) and isinstance(dx, torch.nn.Module)
    assert (corpus / "ckpt" / "best_model.pth").is_file()


def test_cli_runs_with_gradnorm_as_a_script(corpus):
    proc = subprocess.run([sys.executable, "joint_main.py", *_argv(corpus, "cli_gradnorm", "--epochs", "2",
                                                                   "--weighting", "gradnorm", "--cross_weight", "0.5")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(corpus, "cli_gradnorm")
    assert len(rows) == 3
    assert float(rows[2]["w_GF"]) + float(rows[2]["w_DeepDXF"]) == pytest.approx(2.0, rel=1e-4)
    assert float(rows[2]["w_GF"]) != 1.0


def test_resume_continues_the_loss_curve(corpus):
    common = ("--epochs", "3", "--patience", "0", "--weighting", "uncertainty")
    joint_main.main(_argv(corpus, "straight", *common))
    out = joint_main.main(_argv(corpus, "broken", *common, "--stop_after_epochs", "1"))
    assert out["interrupted"]
    assert [r["epoch"] for r in _rows(corpus, "broken")] == ["0", "1"]
    assert not (corpus / "logs" / "broken" / "summary.json").exists()
    last = load_checkpoint(corpus / "ckpt" / "broken" / "last.pth")
    assert {"torch", "numpy", "python"} <= set(last["state"]["rng"][0])  # every RNG of every rank
    assert {"optimizer", "scheduler", "scaler"} <= set(last["state"]["training"])
    joint_main.main(_argv(corpus, "broken", *common, "--resume"))
    a, b = _rows(corpus, "straight"), _rows(corpus, "broken")
    assert [r["epoch"] for r in b] == ["0", "1", "2", "3"]
    assert not any("cross" in c for c in b[0])  # the cross-model term is off: no columns for it
    for ra, rb in zip(a, b):
        for col in ("train_loss", "val_loss", "w_GF", "w_DeepDXF"):
            if ra[col]:
                assert float(rb[col]) == pytest.approx(float(ra[col]), rel=1e-5), (ra["epoch"], col)
    assert load_checkpoint(corpus / "ckpt" / "broken" / "last.pth")["complete"] is True
    assert joint_main.main(_argv(corpus, "broken", *common, "--resume")) == 0  # nothing left to do


def test_help_and_bad_data_dir(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        joint_main.main(["--help"])
    assert e.value.code == 0
    assert "--weighting" in capsys.readouterr().out
    assert joint_main.main(["--data_dir", str(tmp_path / "nothing"), "--logs_dir", str(tmp_path)]) == 2


def test_fixed_weighting_values_in_metrics_and_summary(corpus):
    run = "fixed_values"
    summary = joint_main.main(_argv(corpus, run, "--epochs", "2", "--weighting", "fixed", "--w_GF", "0.5",
                                    "--w_DeepDXF", "1.5", "--cross_weight", "0.25"))
    rows = _rows(corpus, run)
    for r in rows:
        assert float(r["w_GF"]) == 0.5 and float(r["w_DeepDXF"]) == 1.5
        want = (0.5 * float(r["val_GF_loss"]) + 1.5 * float(r["val_DeepDXF_loss"]) + 0.25 * float(r["val_cross_loss"])
                + 1.0 * float(r["val_group_loss"]))  # the group term is on by default (weight 1)
        assert float(r["val_loss"]) == pytest.approx(want, rel=1e-6)
        if r["train_loss"]:  # fixed weights: the logged loss is the objective
            assert float(r["train_loss"]) == pytest.approx(float(r["objective"]), rel=1e-6)
    t = summary["test_terms_per_fold"]["0"]
    assert summary["test_loss_mean"] == pytest.approx(0.5 * t["GF_loss"] + 1.5 * t["DeepDXF_loss"]
                                                      + 0.25 * t["cross_loss"] + t["group_loss"], rel=1e-6)
    log = (corpus / "logs" / run / "train.log").read_text(encoding="utf-8")
    assert "0.500·GF" in log and "1.500·DeepDXF" in log and "0.25·cross" in log


def test_config_json_records_what_ran_and_the_log_shows_epochs_and_steps(corpus):
    run = "recorded"
    joint_main.main(_argv(corpus, run, "--epochs", "2", "--warmup_steps", "20"))
    config = json.loads((corpus / "logs" / run / "config.json").read_text())
    ckpt = load_checkpoint(corpus / "ckpt" / run / "best_model.pth", expect_kind="joint")
    derived = ckpt["deepdxf_batch_size"]
    assert derived != 5 and config["DeepDXF_batch_size"] == derived == ckpt["config"]["DeepDXF_batch_size"]
    assert config["as_configured"] == {"DeepDXF_batch_size": 5, "warmup_steps": 20}
    assert config["warmup_steps"] == 0 and config["total_steps"] == 2 * config["steps_per_epoch"]
    log = (corpus / "logs" / run / "train.log").read_text(encoding="utf-8")
    assert f"{config['steps_per_epoch']} optimizer step(s) per epoch, {config['total_steps']} in total" in log
    assert "WARNING: a very short run" in log
    assert "fold 0 epoch 1/2: train " in log and "fold 0 epoch 2/2: train " in log  # one line per epoch
