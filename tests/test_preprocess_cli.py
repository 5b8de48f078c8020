"""dataset/dxf_process.py end to end: bad inputs, odd names, workers, resume, manifest."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import ezdxf
import numpy as np
import pytest

from config.process_config import ProcessConfig
from dataset.dxf_process import run
from dataset.dxf_process_DeepDXF import load_h5
from dataset.dxf_process_GF import load_gf

REPO = Path(__file__).resolve().parents[1]


def write_drawing(path: Path, shift: float = 0.0) -> Path:
    doc = ezdxf.new()
    msp = doc.modelspace()
    msp.add_line((0 + shift, 0), (10, 5))
    msp.add_circle((3, 3), 1 + shift)
    msp.add_text("引线框架", height=1, dxfattribs={"insert": (1, 1)})
    msp.add_lwpolyline([(0, 0), (4, 0), (4, 4)], close=True)
    doc.saveas(path)
    return path


def read_rows(output: Path) -> dict[str, dict]:
    with open(output / "manifest.csv", newline="", encoding="utf-8") as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Good drawings with odd names next to every kind of bad input."""
    root = tmp_path / "in"
    (root / "sub dir").mkdir(parents=True)
    write_drawing(root / "QFN21LA(Cu) -508 Rev1_5.dxf")
    write_drawing(root / "sub dir" / "引线框架 [A] rev2.dxf", shift=1)
    (root / "empty.dxf").write_bytes(b"")
    (root / "binary.dxf").write_bytes(bytes(range(256)) * 8)
    (root / "notes.dxf").write_text("this is a text file, not a drawing\n")
    good = (root / "QFN21LA(Cu) -508 Rev1_5.dxf").read_bytes()
    (root / "truncated.dxf").write_bytes(good[: len(good) // 3])
    doc = ezdxf.new()
    doc.modelspace().add_point((1, 1))
    doc.saveas(root / "points only.dxf")
    doc = ezdxf.new()
    msp = doc.modelspace()
    msp.add_line((float("nan"), 0), (1, 1))
    msp.add_line((1e300, 0), (1, 1))
    msp.add_circle((0, 0), 1)
    doc.saveas(root / "nan and huge.dxf")
    doc = ezdxf.new()
    doc.modelspace().add_line((1e300, 0), (1, 1))
    doc.saveas(root / "only huge.dxf")
    return root


def test_bad_inputs_end_with_reasons_and_the_run_finishes(messy_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rows = run(ProcessConfig(input=[str(messy_folder)], output=str(out), workers=1))
    assert len(rows) == 9
    m = read_rows(out)
    assert m["QFN21LA(Cu) -508 Rev1_5.dxf"]["status"] == "ok"
    assert m["引线框架 [A] rev2.dxf"]["status"] == "ok"
    assert m["empty.dxf"]["status"] == "failed" and m["empty.dxf"]["reason"] == "empty file"
    assert m["binary.dxf"]["status"] == "failed" and "not a DXF" in m["binary.dxf"]["reason"]
    assert m["notes.dxf"]["status"] == "failed" and "not a DXF" in m["notes.dxf"]["reason"]
    assert m["truncated.dxf"]["status"] == "skipped" and "damaged" in m["truncated.dxf"]["reason"]
    assert m["points only.dxf"]["status"] == "skipped"
    assert "no supported entities" in m["points only.dxf"]["reason"] and "POINT" in m["points only.dxf"]["reason"]
    nan_row = m["nan and huge.dxf"]
    assert nan_row["status"] == "ok" and int(nan_row["n_dropped"]) == 2  # the circle survives
    assert m["only huge.dxf"]["status"] == "skipped"
    for row in m.values():
        assert not row["reason"].startswith("unexpected"), row
    summary = capsys.readouterr().out
    assert "9 files: 3 ok, 3 skipped, 3 failed" in summary
    assert "empty file" in summary and "not a DXF file" in summary


def test_outputs_keep_odd_names_and_formats(messy_folder, tmp_path):
    out = tmp_path / "out"
    run(ProcessConfig(input=[str(messy_folder)], output=str(out), workers=1))
    name = "sub dir__引线框架 [A] rev2"
    gf = load_gf(out / "GF" / f"{name}.npz")
    assert gf["features"].shape == (10, 11) and gf["adjacency"].shape == (10, 10)
    rows, attrs = load_h5(out / "DeepDXF" / f"{name}.h5")
    assert rows.shape == (4, 14) and attrs["n_total"] == 4
    nan_rows, _ = load_h5(out / "DeepDXF" / "nan and huge.h5")
    assert len(nan_rows) == 1
    assert not (out / "GF" / "empty.npz").exists()


def test_workers_give_the_same_output_as_one_worker(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(6):
        write_drawing(src / f"d{k}.dxf", shift=k)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        run(ProcessConfig(input=[str(src)], output=str(out), workers=workers))
        outs.append(out)
    for k in range(6):
        a, b = (load_gf(o / "GF" / f"d{k}.npz") for o in outs)
        for key in ("features", "adjacency", "overlap", "free", "counts"):
            np.testing.assert_array_equal(a[key], b[key])
        ra, rb = (load_h5(o / "DeepDXF" / f"d{k}.h5")[0] for o in outs)
        np.testing.assert_array_equal(ra, rb)


def _preprocessed_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two drawings ``in/a.dxf``, ``in/b.dxf`` preprocessed once into ``out``."""
    src = tmp_path / "in"
    src.mkdir()
    write_drawing(src / "a.dxf")
    write_drawing(src / "b.dxf")
    out = tmp_path / "out"
    run(ProcessConfig(input=[str(src)], output=str(out), workers=1))
    return src, out


def test_resume_skips_unchanged_and_redoes_changed(tmp_path, capsys):
    src, out = _preprocessed_pair(tmp_path)
    first = read_rows(out)
    capsys.readouterr()
    write_drawing(src / "b.dxf", shift=2)
    os.utime(src / "b.dxf", ns=(1, 1))  # a different modification time
    run(ProcessConfig(input=[str(src)], output=str(out), workers=1))
    assert "1 unchanged since the last run" in capsys.readouterr().out
    second = read_rows(out)
    assert second["a.dxf"]["seconds"] == first["a.dxf"]["seconds"]  # reused row
    assert second["b.dxf"]["mtime_ns"] == "1"
    run(ProcessConfig(input=[str(src)], output=str(out), workers=1, overwrite=True))
    assert "since the last run" not in capsys.readouterr().out


def test_resume_encodes_again_what_an_older_encoding_version_wrote(tmp_path, capsys):
    import h5py
    src, out = _preprocessed_pair(tmp_path)
    with h5py.File(out / "DeepDXF" / "a.h5", "r+") as f:
        f.attrs["format_version"] = f.attrs["format_version"] - 1  # as an older toolkit wrote it
    capsys.readouterr()
    run(ProcessConfig(input=[str(src)], output=str(out), workers=1))
    assert "1 unchanged since the last run" in capsys.readouterr().out
    _rows, attrs = load_h5(out / "DeepDXF" / "a.h5")
    from dataset.dxf_process_DeepDXF import FORMAT_VERSION
    assert attrs["format_version"] == FORMAT_VERSION


def _age_outputs(out: Path) -> None:
    """Date the encodings back two minutes and the packed shards one, as if preprocessing and
    packing had happened a while before this run (file times are coarser than a test)."""
    for path, minutes in [(out / "GF", 2), (out / "DeepDXF", 2), *((p, 1) for p in (out / "packed").glob("*.h5"))]:
        t = path.stat().st_mtime_ns - minutes * 60 * 10**9
        os.utime(path, ns=(t, t))


def test_a_run_that_changes_a_packed_folder_packs_it_again(tmp_path, capsys):
    from dataset.archive import open_archive, pack
    src, out = _preprocessed_pair(tmp_path)
    pack(out, progress=False)
    _age_outputs(out)
    run(ProcessConfig(input=[str(src)], output=str(out), workers=1))  # nothing changed: shards kept
    assert "packing again" not in capsys.readouterr().out
    write_drawing(src / "c.dxf", shift=3)
    run(ProcessConfig(input=[str(src)], output=str(out), workers=1, repack=False))
    assert "run python dataset/pack.py" in capsys.readouterr().out
    archive = open_archive(out)
    assert archive.names() == ["a", "b"] and "WARNING: GF/ and DeepDXF/ changed" in archive.describe()
    run(ProcessConfig(input=[str(src)], output=str(out), workers=1))
    assert "packing again" in capsys.readouterr().out
    archive = open_archive(out)
    assert archive.names() == ["a", "b", "c"] and archive.stale is None
    assert "WARNING" not in archive.describe()


def test_cli_help_and_missing_input(tmp_path):
    script = str(REPO / "dataset" / "dxf_process.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert help_text.returncode == 0
    for flag in ("--input", "--output", "--workers", "--max_len", "--overwrite"):
        assert flag in help_text.stdout
    missing = subprocess.run([sys.executable, script, "--input", "nowhere"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert missing.returncode != 0 and "input folder not found: nowhere" in missing.stderr
