"""Packed archives read back exactly what the per-drawing files hold, lazily."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset.dxf_process_DeepDXF import N_COLUMNS, N_TYPES, save_h5
from dataset.dxf_process_GF import GF_CLASSES, save_gf
from dataset.pack import ArchiveError, FolderArchive, PackedArchive, open_archive, pack

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
