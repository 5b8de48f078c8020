"""config/cli.py: dataclass fields -> flags, and configs <-> plain dicts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from config.cli import build_parser, config_from_dict, config_to_dict, parse_config


@dataclass
class DemoConfig:
    data_dir: str = field(default="data", metadata={"help": "preprocessed data folder"})
    epochs: int = field(default=50, metadata={"help": "maximum epochs (100% of them)"})
    lr: float = 1e-3
    GF_batch_size: int = 45
    wandb: bool = False
    amp: bool = True
    fold: Optional[int] = None
    run_name: Optional[str] = None
    dims: list[int] = field(default_factory=lambda: [64, 32])
    tags: list[str] = field(default_factory=list)
    method: Literal["cosine", "euclidean"] = "cosine"
    weighting: str = field(default="uncertainty", metadata={"choices": ["uncertainty", "gradnorm", "dwa", "fixed"]})


def test_defaults_when_no_arguments():
    assert parse_config(DemoConfig, argv=[]) == DemoConfig()


def test_every_field_type_round_trips():
    argv = [
        "--data_dir", "some dir/数据", "--epochs", "7", "--lr", "0.5", "--GF_batch_size", "3",
        "--wandb", "--no-amp", "--fold", "2", "--run_name", "r1", "--dims", "8", "4", "2",
        "--tags", "a", "b", "--method", "euclidean", "--weighting", "dwa",
    ]
    cfg = parse_config(DemoConfig, argv=argv)
    assert cfg == DemoConfig(
        data_dir="some dir/数据", epochs=7, lr=0.5, GF_batch_size=3, wandb=True, amp=False,
        fold=2, run_name="r1", dims=[8, 4, 2], tags=["a", "b"], method="euclidean", weighting="dwa",
    )
    assert isinstance(cfg.epochs, int) and isinstance(cfg.lr, float)
    assert all(isinstance(d, int) for d in cfg.dims)


def test_optional_accepts_none():
    cfg = parse_config(DemoConfig, argv=["--fold", "none"])
    assert cfg.fold is None


def test_invalid_choice_and_type_exit():
    with pytest.raises(SystemExit):
        parse_config(DemoConfig, argv=["--method", "manhattan"])
    with pytest.raises(SystemExit):
        parse_config(DemoConfig, argv=["--weighting", "magic"])
    with pytest.raises(SystemExit):
        parse_config(DemoConfig, argv=["--epochs", "ten"])


def test_help_shows_flags_help_and_defaults():
    text = build_parser(DemoConfig, "demo").format_help()
    assert "--GF_batch_size" in text
    assert "--wandb, --no-wandb" in text
    assert "preprocessed data folder" in text
    assert "maximum epochs (100% of them)" in text
    assert "(default: 50)" in text
    assert "{cosine,euclidean}" in text


def test_config_dict_round_trip_ignores_unknown_keys():
    cfg = DemoConfig(epochs=3, dims=[1], run_name="x")
    d = config_to_dict(cfg)
    assert d["epochs"] == 3 and d["dims"] == [1]
    d["removed_in_new_version"] = 123
    del d["lr"]
    back = config_from_dict(DemoConfig, d)
    assert back == DemoConfig(epochs=3, dims=[1], run_name="x")


def test_subclass_inherits_flags():
    @dataclass
    class JointConfig(DemoConfig):
        accumulation_steps: int = 1

    cfg = parse_config(JointConfig, argv=["--accumulation_steps", "4", "--epochs", "2"])
    assert cfg.accumulation_steps == 4 and cfg.epochs == 2


@pytest.mark.parametrize("script", ["GF_main.py", "DeepDXF_train.py", "joint_main.py"])
def test_help_shows_each_default_once_no_spec_and_main_options_first(script):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, script, "--help"], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "SPEC" not in text
    for line in text.splitlines():
        assert line.count("(default:") <= 1, line
    assert "(default: )" not in text
    main, advanced = text.index("main options:"), text.index("advanced options:")

    def where(flag):
        return re.search(rf"\n  {flag}[ ,]", text).start()

    for flag in ("--data_dir", "--epochs", "--lr", "--device", "--run_name", "--seed", "--k_folds", "--fold",
                 "--wandb"):
        assert main < where(flag) < advanced, flag
    assert where("--patience") > advanced
    if script == "joint_main.py":
        for flag in ("--weighting", "--amp", "--resume", "--GF_batch_size", "--DeepDXF_batch_size"):
            assert main < where(flag) < advanced, flag


def test_deepdxf_trainer_defaults_to_one_thread():
    from config.DeepDXF_config import DeepDXFConfig

    assert DeepDXFConfig().num_threads == 1


@pytest.mark.parametrize("script, main_flags, advanced_flag", [
    ("SimDeepDXF.py", ("--model_path", "--file1", "--file2", "--gallery", "--query", "--topk", "--groups"), "--n_boot"),
    ("dataset/dxf_process.py", ("--input", "--output", "--workers", "--shard", "--merge"), "--max_len"),
])
def test_retrieval_and_preprocessing_help_put_their_own_main_flags_first(script, main_flags, advanced_flag):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, script, "--help"], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    main, advanced = text.index("main options:"), text.index("advanced options:")
    for flag in main_flags:
        assert main < re.search(rf"\n  {flag}[ ,]", text).start() < advanced, flag
    assert re.search(rf"\n  {advanced_flag}[ ,]", text).start() > advanced
