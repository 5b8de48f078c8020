"""Two nodes on localhost: ``torchrun --nnodes 2 --node_rank {0,1}`` (1 process each, gloo on CPU)
trains joint_main.py from a packed archive with DataLoader workers; both exit 0, rank 0 writes the run."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dataset.archive import pack
from tests.synthetic import write_synthetic_joint_corpus

ROOT = Path(__file__).resolve().parents[1]


def _torchrun() -> str | None:
    local = Path(sys.executable).parent / "torchrun"
    return str(local) if local.is_file() else shutil.which("torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(_torchrun() is None, reason="torchrun is not installed")
def test_two_nodes_train_from_a_packed_archive(tmp_path):
    data = tmp_path / "data"
    write_synthetic_joint_corpus(data, 24, seed=4, max_len=30)
    pack(data, progress=False)
    shutil.rmtree(data / "GF")  # only the packed archive is left
    shutil.rmtree(data / "DeepDXF")
    port = _free_port()
    procs = []
    for node in (0, 1):
        disk = tmp_path / f"node{node}"  # each node its own disk: no shared filesystem for logs and checkpoints
        cmd = [_torchrun(), "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(port), str(ROOT / "joint_main.py"),
               "--data_dir", str(data), "--device", "cpu", "--dist_backend", "gloo", "--num_workers", "1",
               "--logs_dir", str(disk / "logs"), "--checkpoints_dir", str(disk / "ckpt"), "--run_name", "two_nodes",
               "--k_folds", "2", "--fold", "0", "--epochs", "2", "--GF_batch_size", "3", "--GF_hidden", "8",
               "--GF_proj_dim", "8", "--GF_num_layers", "1", "--DeepDXF_d_model", "8", "--DeepDXF_heads", "2",
               "--DeepDXF_layers", "1", "--DeepDXF_proj_dim", "8", "--DeepDXF_size_dim", "4",
               "--DeepDXF_chunk_len", "16", "--warmup_steps", "0"]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(o[-3000:] for o in outputs)
    summary = json.loads((tmp_path / "node0" / "logs" / "two_nodes" / "summary.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2 and summary["data_layout"] == "packed" and summary["n_drawings"] == 24
    assert summary["folds"][0]["epochs_run"] == 2
    assert (tmp_path / "node0" / "ckpt" / "two_nodes" / "best_model.pth").is_file()
    assert not (tmp_path / "node1" / "logs" / "two_nodes" / "summary.json").exists()
    log = (tmp_path / "node0" / "logs" / "two_nodes" / "train.log").read_text(encoding="utf-8")
    assert "24 drawings with both encodings from packed archive" in log and "2 processes (DDP)" in log
