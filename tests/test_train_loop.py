"""The loop's building blocks: AMP dtype choice, the LR schedule, DDP helpers, RNG states,
the raw-DXF hint, and quiet logs when stderr is not a terminal."""
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.train import amp, distributed, schedule
from dataset.archive import raw_dxf_hint
from utils.train.loop import rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- AMP

def test_auto_amp_picks_bf16_only_on_native_hardware(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulated bf16 says yes too
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # T4, V100-class
    assert amp.amp_dtype(True, "auto", cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))  # A100
    assert amp.amp_dtype(True, "auto", cuda) == torch.bfloat16
    assert amp.amp_dtype(True, "fp16", cuda) == torch.float16
    assert amp.amp_dtype(False, "auto", cuda) is None


def test_amp_on_cpu_is_off_unless_bf16_is_asked_for():
    assert amp.amp_dtype(True, "auto", "cpu") is None
    assert amp.amp_dtype(True, "bf16", "cpu") == torch.bfloat16
    assert not amp.make_grad_scaler("cpu", torch.bfloat16).is_enabled()
    assert amp.make_grad_scaler("cpu", torch.float16).is_enabled()
    with pytest.raises(ValueError, match="amp_dtype"):
        amp.amp_dtype(True, "fp8", "cpu")


def test_fresh_scaler_kept_when_checkpoint_has_no_scaler_state():
    scaler = amp.make_grad_scaler("cpu", torch.float16)
    assert amp.load_scaler_state(scaler, {}) is False  # GradScaler.load_state_dict({}) would raise
    assert scaler.get_scale() == 65536.0


# ----------------------------------------------------------------------------- schedule

def test_warmup_cosine_values():
    f = schedule.warmup_cosine
    assert [f(s, 4, 10) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4, 4, 10) == pytest.approx(1.0)
    assert f(7, 4, 10) == pytest.approx(0.5)
    assert f(10, 4, 10) == pytest.approx(0.0)
    assert f(12, 4, 10) == pytest.approx(0.0)
    assert f(0, 0, 4) == pytest.approx(1.0) and f(2, 0, 4) == pytest.approx(0.5)


def test_warmup_follows_the_run_length_and_short_runs_warn():
    short = schedule.plan_schedule(steps_per_epoch=1, epochs=5, warmup_steps=20)  # 93 drawings, --epochs 5
    assert short.total_steps == 5 and short.warmup_steps == 0
    assert "very short run" in short.warning() and "5 optimizer step" in short.warning()
    assert "1 optimizer step(s) per epoch, 5 in total" in short.describe()
    long = schedule.plan_schedule(steps_per_epoch=50, epochs=100, warmup_steps=20)
    assert long.total_steps == 5000 and long.warmup_steps == 20 and long.warning() is None
    mid = schedule.plan_schedule(steps_per_epoch=10, epochs=30, warmup_steps=20)
    assert mid.warmup_steps == 15  # 5 % of 300


def test_scheduler_drives_lr_and_leaves_weight_group_alone():
    p, w = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"name": "model", "params": [p], "lr": 1.0}, {"name": "weights", "params": [w], "lr": 0.5}])
    sched = schedule.make_lr_scheduler(opt, schedule.plan_schedule(10, 10, 20))  # warm-up capped at 5
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert opt.param_groups[1]["lr"] == 0.5


# ----------------------------------------------------------------------------- distributed

def test_local_rank_from_torchrun_slurm_or_device_count():
    assert distributed.local_rank_from_env({"LOCAL_RANK": "3", "SLURM_LOCALID": "1"}, rank=7, device_count=4) == 3
    assert distributed.local_rank_from_env({"SLURM_LOCALID": "1"}, rank=7, device_count=4) == 1
    assert distributed.local_rank_from_env({}, rank=6, device_count=4) == 2
    assert distributed.local_rank_from_env({}, rank=6, device_count=0) == 0


def test_cleanup_waits_for_every_rank_before_destroying_the_group(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    distributed.cleanup_distributed(distributed.DistInfo(rank=1, world_size=2))
    assert calls == ["barrier", "destroy"]


# ----------------------------------------------------------------------------- RNG states

def test_rng_state_round_trip_restores_torch_numpy_and_python():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_rng_state_survives_a_checkpoint(tmp_path):
    from utils.train.checkpoint import load_checkpoint, save_checkpoint

    np.random.seed(3)
    random.seed(3)
    path = save_checkpoint(tmp_path / "last.pth", "GF", {}, {"rng": [rng_state()]})
    a, b = np.random.rand(2), random.random()
    set_rng_state(load_checkpoint(path)["state"]["rng"][0])
    np.testing.assert_array_equal(np.random.rand(2), a)
    assert random.random() == b


# ----------------------------------------------------------------------------- user-facing messages

def test_raw_dxf_folder_gets_a_preprocessing_command_into_another_folder(tmp_path):
    raw = tmp_path / "my drawings"
    (raw / "sub").mkdir(parents=True)
    (raw / "sub" / "a.DXF").write_text("0\nEOF\n")
    hint = raw_dxf_hint(raw)
    command = next(line.strip() for line in hint.splitlines() if line.strip().startswith("python"))
    out = str(tmp_path.resolve() / "my drawings_processed")
    assert command == f"python dataset/dxf_process.py --input '{raw}' --output '{out}'"
    assert f"--data_dir '{out}'" in hint
    assert raw_dxf_hint(tmp_path / "missing") is None
    (raw / "GF").mkdir()
    assert raw_dxf_hint(raw) is None  # preprocessing output: no hint


def test_joint_main_on_a_raw_dxf_folder_prints_the_right_command(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "x.dxf").write_text("0\nEOF\n")
    proc = subprocess.run([sys.executable, "joint_main.py", "--data_dir", str(tmp_path / "raw"),
                           "--logs_dir", str(tmp_path / "l"), "--checkpoints_dir", str(tmp_path / "c")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"--input {tmp_path / 'raw'} --output {tmp_path.resolve() / 'raw_processed'}" in proc.stderr
    assert not (tmp_path / "raw" / "GF").exists()


def test_gf_run_with_stderr_in_a_file_draws_no_bars_and_keeps_lines_apart(tmp_path):
    from tests.synthetic import save_gf_npz, synthetic_gf_graphs

    graphs = synthetic_gf_graphs(12, seed=0)
    save_gf_npz(graphs, tmp_path / "data")
    err_path, out_path = tmp_path / "stderr.txt", tmp_path / "stdout.txt"
    with open(err_path, "w") as err, open(out_path, "w") as out:
        proc = subprocess.run([sys.executable, "GF_main.py", "--data_dir", str(tmp_path / "data"), "--epochs", "2",
                               "--k_folds", "2", "--fold", "0", "--GF_batch_size", "2", "--GF_hidden", "8",
                               "--logs_dir", str(tmp_path / "l"), "--checkpoints_dir", str(tmp_path / "c"),
                               "--run_name", "quiet"], cwd=ROOT, stdout=out, stderr=err, timeout=120)
    assert proc.returncode == 0, err_path.read_text()[-2000:]
    err_text, out_text = err_path.read_text(), out_path.read_text()
    assert "\r" not in err_text and "it/s" not in err_text and "epoch/s" not in err_text
    assert "\r" not in out_text and "\n\n" not in out_text
    lines = out_text.splitlines()
    assert any(line.startswith("fold 0 epoch 2/2: train ") for line in lines)  # plain per-epoch lines instead
    assert all(line.strip() for line in lines)
