"""The training commands as a user meets them: Ctrl-C says what was saved and how to go on,
``joint_train.py`` run by mistake points to ``joint_main.py``."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import joint_main
from tests.synthetic import write_synthetic_joint_corpus

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--k_folds", "2", "--fold", "0", "--GF_batch_size", "3", "--GF_hidden", "8", "--GF_proj_dim", "8",
        "--GF_num_layers", "1", "--DeepDXF_d_model", "8", "--DeepDXF_heads", "2", "--DeepDXF_layers", "1",
        "--DeepDXF_proj_dim", "8", "--DeepDXF_size_dim", "4", "--DeepDXF_chunk_len", "16", "--cross_dim", "8",
        "--warmup_steps", "0", "--val_retrieval", "0"]


def _argv(root: Path, run: str, *extra: str) -> list[str]:
    return ["--data_dir", str(root), "--logs_dir", str(root / "logs"), "--checkpoints_dir", str(root / "ckpt"),
            "--run_name", run, *TINY, *extra]


def test_ctrl_c_in_training_says_what_was_saved_and_how_to_resume(tmp_path):
    write_synthetic_joint_corpus(tmp_path, 24, seed=2, max_len=30)
    argv = _argv(tmp_path, "stopped", "--epochs", "500", "--patience", "500")
    last = tmp_path / "ckpt" / "stopped" / "last.pth"
    proc = subprocess.Popen([sys.executable, str(ROOT / "joint_main.py"), *argv], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        deadline = time.monotonic() + 120
        while not last.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)  # somewhere inside a later epoch
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err
    line = lines[0]
    assert str(last) in line and "fold 0 epoch " in line
    assert "--resume --run_name stopped" in line
    # the line's command goes on from there
    epoch = int(line.split("fold 0 epoch ")[1].split(";")[0])
    assert epoch >= 1
    resumed = joint_main.main(argv + ["--resume", "--stop_after_epochs", "1"])
    assert resumed == {"interrupted": True, "run_name": "stopped"}
    from utils.train.checkpoint import load_checkpoint

    assert load_checkpoint(last)["epoch"] == epoch + 1


def test_interrupted_before_any_epoch_says_nothing_was_saved(tmp_path):
    from config.joint_config import JointConfig

    cfg = JointConfig(checkpoints_dir=str(tmp_path), run_name="")
    assert "nothing saved" in joint_main.interrupted_message(cfg)
    cfg = JointConfig(checkpoints_dir=str(tmp_path), run_name="fresh")
    assert "nothing saved" in joint_main.interrupted_message(cfg)


def test_running_joint_train_points_to_joint_main():
    done = subprocess.run([sys.executable, str(ROOT / "joint_train.py"), "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "is a module" in done.stderr and "python joint_main.py" in done.stderr


@pytest.mark.parametrize("module", ["GF_main", "DeepDXF_train"])
def test_ctrl_c_in_the_single_model_trainers_is_one_line(module, monkeypatch, capsys):
    import importlib

    trainer = importlib.import_module(module)

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "main", interrupted)
    assert trainer.cli([]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted (Ctrl-C)" in err and "fold_<i>.pth" in err
