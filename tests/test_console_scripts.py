"""The console commands of pyproject.toml: installed with the project, runnable from any
folder, each returning an exit code, each ``--help`` saying where relative paths start."""
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = {
    "dxf-process": "dataset.dxf_process:main",
    "dxf-pack": "dataset.pack:main",
    "dxf-train": "joint_main:cli",
    "dxf-train-gf": "GF_main:cli",
    "dxf-train-deepdxf": "DeepDXF_train:cli",
    "dxf-search": "SimDeepDXF:main",
    "dxf-serve": "SimDeepDXF:serve_main",
}


def _installed_scripts() -> dict[str, importlib.metadata.EntryPoint]:
    try:
        dist = importlib.metadata.distribution("dxf-similarity")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the project is not installed (make setup runs pip install -e .)")
    return {ep.name: ep for ep in dist.entry_points if ep.group == "console_scripts"}


def test_every_command_is_installed_and_points_to_a_main():
    eps = _installed_scripts()
    assert {name: ep.value for name, ep in eps.items()} == SCRIPTS
    bin_dir = Path(sys.executable).parent
    for name, ep in eps.items():
        assert callable(ep.load()), name
        assert shutil.which(name, path=str(bin_dir)), f"{name} is not in {bin_dir}"


def test_dxf_train_returns_an_exit_code_not_the_summary(monkeypatch):
    import joint_main

    monkeypatch.setattr(joint_main, "main", lambda argv=None: {"folds": []})
    assert joint_main.cli([]) == 0
    monkeypatch.setattr(joint_main, "main", lambda argv=None: 130)
    assert joint_main.cli([]) == 130


@pytest.mark.parametrize("name", ["dxf-train", "dxf-pack"])
def test_a_command_runs_from_another_folder_and_says_where_paths_start(name, tmp_path):
    _installed_scripts()
    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    assert exe
    done = subprocess.run([exe, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "relative to the current folder" in text
    assert str(tmp_path) in "".join(done.stdout.split())  # (help wraps long paths)


def test_every_config_help_says_where_relative_paths_start(tmp_path, monkeypatch):
    from config.cli import build_parser
    from config.joint_config import JointConfig

    monkeypatch.chdir(tmp_path)
    text = "".join(build_parser(JointConfig).format_help().split())
    assert f"relativetothecurrentfolder(now{tmp_path})" in text
