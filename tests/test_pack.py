"""Packed archives read back exactly what the per-drawing files hold, lazily."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.dxf_process_DeepDXF import N_COLUMNS, N_TYPES, save_h5
from dataset.dxf_process_GF import GF_CLASSES, save_gf
from dataset.archive import ArchiveError, FolderArchive, PackedArchive, open_archive, pack

ROOT = Path(__file__).resolve().parents[1]
C = len(GF_CLASSES)


def _write_folder(data_dir: Path, n: int, seed: int = 0) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        name = f"draw {i} (Rev{i % 3})_图" if i % 4 == 0 else f"d{i:03d}"
        feats = rng.random((C, C + 1)).astype(np.float32)
        adj = (rng.random((C, C)) < 0.3).astype(np.float32)
        rows = rng.integers(-1, 256, size=(int(rng.integers(1, 40)), N_COLUMNS)).astype(np.int32)
        rows[:, 0] = rng.integers(0, N_TYPES, len(rows))
        counts = np.bincount(rows[:, 0], minlength=N_TYPES).astype(np.int64)
        data_dir.joinpath("GF").mkdir(parents=True, exist_ok=True)
        data_dir.joinpath("DeepDXF").mkdir(parents=True, exist_ok=True)
        save_gf(data_dir / "GF" / f"{name}.npz", {"features": feats, "adjacency": adj})
        save_h5(data_dir / "DeepDXF" / f"{name}.h5", rows,
                {"n_total": len(rows), "n_cut": 0, "n_dropped": 0, "type_counts": counts,
                 "extent": np.zeros(3)}, source=f"{name}.dxf")
        truth[name] = (feats, adj, rows)
    return truth


def test_packed_shards_equal_the_per_drawing_files(tmp_path):
    truth = _write_folder(tmp_path, 23)
    shards = pack(tmp_path, shard_size=10, progress=False)
    assert [p.name for p in shards] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    packed, folder = open_archive(tmp_path), FolderArchive(tmp_path)
    assert isinstance(packed, PackedArchive) and len(packed) == len(folder) == 23
    assert packed.names() == folder.names() == sorted(truth)
    for i in (0, 9, 10, 22):
        name = packed.name(i)
        feats, adj, rows = truth[name]
        np.testing.assert_array_equal(packed.graph(i)[0], feats)
        np.testing.assert_array_equal(packed.graph(i)[1], adj)
        np.testing.assert_array_equal(packed.rows(i), rows)
        np.testing.assert_array_equal(folder.rows(i), rows)
    np.testing.assert_array_equal(packed.lengths(), folder.lengths())


def test_repacking_with_fewer_shards_removes_stale_ones(tmp_path):
    _write_folder(tmp_path, 12)
    pack(tmp_path, shard_size=4, progress=False)
    pack(tmp_path, shard_size=100, progress=False)
    assert [p.name for p in (tmp_path / "packed").glob("shard-*.h5")] == ["shard-00000.h5"]


def test_packed_archive_pickles_without_open_handles(tmp_path):
    _write_folder(tmp_path, 5)
    pack(tmp_path, progress=False)
    archive = open_archive(tmp_path)
    first = archive.rows(3)
    clone = pickle.loads(pickle.dumps(archive))  # what a spawned DataLoader worker receives
    np.testing.assert_array_equal(clone.rows(3), first)
    with pytest.raises(IndexError):
        archive.rows(5)


def test_empty_folder_and_cli_messages(tmp_path):
    with pytest.raises(ArchiveError, match="dxf_process.py"):
        pack(tmp_path, progress=False)
    _write_folder(tmp_path, 3)
    done = subprocess.run([sys.executable, str(ROOT / "dataset" / "pack.py"), "--data_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "packed 3 drawings into 1 shard(s)" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "dataset" / "pack.py"), "--data_dir", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def test_gf_and_deepdxf_loaders_read_packed_shards_like_the_folders(tmp_path):
    import shutil

    from dataset.loaders.deepdxf import ArchiveRows, DeepDXFDataset, load_deepdxf_dir
    from dataset.loaders.gf import GFDataError, load_gf_graphs

    truth = _write_folder(tmp_path, 13)
    from_folders = load_gf_graphs(tmp_path, layout=True)
    names_f, rows_f = load_deepdxf_dir(tmp_path)
    pack(tmp_path, shard_size=5, progress=False)
    shutil.rmtree(tmp_path / "GF")  # the shards alone must do
    shutil.rmtree(tmp_path / "DeepDXF")
    packed = load_gf_graphs(tmp_path, layout=True)
    assert packed.names == from_folders.names == sorted(truth)
    for a, b in ((packed.features, from_folders.features), (packed.adjacency, from_folders.adjacency),
                 (packed.mask, from_folders.mask)):
        assert torch.equal(a, b)
    assert "packed archive, 3 shard(s)" in packed.source and "per-drawing folder" in from_folders.source
    some = load_gf_graphs(tmp_path, names=["d003", "d001"])
    assert some.names == ["d003", "d001"] and torch.equal(some.features[0], torch.from_numpy(truth["d003"][0]))
    with pytest.raises(GFDataError, match="not in the packed archive"):
        load_gf_graphs(tmp_path, names=["nope"])

    names_p, rows_p = load_deepdxf_dir(tmp_path, lazy=True)
    assert isinstance(rows_p, ArchiveRows) and names_p == names_f
    assert all(np.array_equal(rows_p[i], rows_f[i]) for i in range(len(names_f)))
    part = pickle.loads(pickle.dumps(rows_p.subset([4, 0])))  # what a spawned DataLoader worker gets
    np.testing.assert_array_equal(part[0], truth[names_p[4]][2])
    np.testing.assert_array_equal(part.lengths, [len(truth[names_p[4]][2]), len(truth[names_p[0]][2])])
    np.testing.assert_array_equal(DeepDXFDataset(rows_p).lengths, [len(r) for r in rows_f])
    eager = load_deepdxf_dir(tmp_path)[1]
    assert isinstance(eager, list) and np.array_equal(eager[7], rows_f[7])


@pytest.mark.parametrize("script", ["GF_main.py", "DeepDXF_train.py"])
def test_single_model_trainers_run_on_a_packed_archive_alone(tmp_path, script):
    import shutil
    _write_folder(tmp_path / "data", 12)
    pack(tmp_path / "data", shard_size=5, progress=False)
    shutil.rmtree(tmp_path / "data" / "GF")
    shutil.rmtree(tmp_path / "data" / "DeepDXF")
    cmd = [sys.executable, script, "--data_dir", str(tmp_path / "data"), "--epochs", "1", "--k_folds", "2",
           "--fold", "0", "--run_name", "p", "--logs_dir", str(tmp_path / "logs"),
           "--checkpoints_dir", str(tmp_path / "ckpt")]
    cmd += (["--GF_batch_size", "4", "--GF_hidden", "8"] if script == "GF_main.py" else
            ["--DeepDXF_batch_size", "3", "--DeepDXF_chunk_len", "32", "--DeepDXF_d_model", "16", "--DeepDXF_heads", "2"])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "ckpt" / "p" / "best_model.pth").is_file()
    assert "from the packed archive, 3 shard(s)" in (tmp_path / "logs" / "p" / "train.log").read_text(encoding="utf-8")
