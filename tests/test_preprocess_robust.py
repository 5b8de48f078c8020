"""dataset/dxf_process.py survives, resumes and spreads: a dying worker, a killed run,
Ctrl-C, shards and their merge, an empty input folder."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ezdxf
import pytest

from config.process_config import ProcessConfig
from dataset import dxf_process
from dataset.dxf_process import manifest_path, run, shard_of
from dataset.encode import process_file

REPO = Path(__file__).resolve().parents[1]
N_FILES = 16

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc") or not hasattr(signal, "SIGKILL"),
                                reason="needs Linux signals and /proc")

# The CLI in a subprocess, with process_file slowed down (and, for one file, killing
# its own worker) so that a test can interrupt the run half way.
FAKE_CLI = """
import os, signal, sys, time
sys.path.insert(0, {repo!r})
from dataset import dxf_process, encode

def fake(task):
    if os.path.basename(task.path) == {kill_name!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep({delay})
    return encode.process_file(task)

dxf_process.process_file = fake
dxf_process.main(sys.argv[1:])
"""


def write_drawing(path: Path, k: int) -> Path:
    doc = ezdxf.new()
    msp = doc.modelspace()
    msp.add_line((k, 0), (10 + k, 5))
    msp.add_circle((3, 3), 1 + k)
    msp.add_lwpolyline([(0, 0), (4, 0), (4, 4 + k)], close=True)
    doc.saveas(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    for k in range(N_FILES):
        write_drawing(root / f"d{k:02d}.dxf", k)
    return root


def manifest_rows(path: Path) -> list[dict]:
    """Complete rows of a manifest (a line cut short is not a row)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if None not in r.values()]


def start_cli(src: Path, out: Path, delay: float = 0.5, kill_name: str = "", workers: int = 2) -> subprocess.Popen:
    code = FAKE_CLI.format(repo=str(REPO), kill_name=kill_name, delay=delay)
    return subprocess.Popen(
        [sys.executable, "-c", code, "--input", str(src), "--output", str(out), "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=default_sigint)


def default_sigint() -> None:
    """Ctrl-C as in a terminal, also when the test run itself was started in the
    background (a shell's background job inherits SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_rows(path: Path, n: int, proc: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while len(manifest_rows(path)) < n:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the run wrote too few manifest rows"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_worker_killed_mid_run_costs_that_file_only(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = start_cli(folder, out, delay=0.0, kill_name="d05.dxf")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    rows = {Path(r["path"]).name: r for r in manifest_rows(out / "manifest.csv")}
    assert len(rows) == N_FILES
    assert rows["d05.dxf"]["status"] == "failed"
    assert rows["d05.dxf"]["reason"] == "worker process died (killed, out of memory?)"
    assert all(r["status"] == "ok" for name, r in rows.items() if name != "d05.dxf")
    assert f"{N_FILES} files: {N_FILES - 1} ok, 0 skipped, 1 failed" in stdout
    assert not (out / "GF" / "d05.npz").exists()


def test_a_killed_run_keeps_its_finished_rows_and_the_rerun_does_only_the_rest(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    proc = start_cli(folder, out)
    wait_for_rows(out / "manifest.csv", 3, proc)
    workers = children(proc.pid)
    proc.kill()  # SIGKILL the parent only, as the OOM killer or a lost machine would
    proc.communicate(timeout=30)
    kept = manifest_rows(out / "manifest.csv")
    assert 3 <= len(kept) < N_FILES
    assert all(r["status"] == "ok" for r in kept)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "workers outlived their killed parent"

    capsys.readouterr()
    rows = run(ProcessConfig(input=[str(folder)], output=str(out), workers=1))
    assert f"({len(kept)} unchanged since the last run)" in capsys.readouterr().out
    assert len(rows) == N_FILES and all(r["status"] == "ok" for r in rows)
    final = {r["path"]: r for r in manifest_rows(out / "manifest.csv")}
    assert len(final) == N_FILES
    for row in kept:  # reused, not redone
        assert final[row["path"]]["seconds"] == row["seconds"]


def test_ctrl_c_stops_within_seconds_with_one_message_and_the_rerun_resumes(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    proc = start_cli(folder, out)
    wait_for_rows(out / "manifest.csv", 2, proc)
    workers = children(proc.pid)
    assert len(workers) >= 2  # the two workers (to check that none is left behind)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    stdout, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - start < 8
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stdout + stderr
    messages = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(messages) == 1 and "run the same command again to resume" in messages[0]
    kept = manifest_rows(out / "manifest.csv")
    assert f"{len(kept)} of {N_FILES} in all" in messages[0]
    assert not any(alive(pid) for pid in workers), "worker processes left behind"
    assert not list(out.rglob(".*.tmp*")), "temporary files left behind"

    capsys.readouterr()
    rows = run(ProcessConfig(input=[str(folder)], output=str(out), workers=1))
    assert f"({len(kept)} unchanged since the last run)" in capsys.readouterr().out
    assert len(rows) == N_FILES and all(r["status"] == "ok" for r in rows)


def test_shards_are_disjoint_cover_the_input_and_merge_into_a_single_runs_manifest(
        folder: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    run(ProcessConfig(input=[str(folder)], output=str(single), workers=1))
    sharded = tmp_path / "sharded"
    parts = [run(ProcessConfig(input=[str(folder)], output=str(sharded), workers=1, shard=f"{i}/2"))
             for i in range(2)]
    names = [{r["name"] for r in part} for part in parts]
    assert names[0] and names[1] and not names[0] & names[1]
    assert names[0] | names[1] == {f"d{k:02d}" for k in range(N_FILES)}
    for i in range(2):
        assert {r["name"] for r in manifest_rows(manifest_path(sharded, (i, 2)))} == names[i]
        assert all(shard_of(name, 2) == i for name in names[i])
    assert not (sharded / "manifest.csv").exists()

    run(ProcessConfig(output=str(sharded), merge=True))
    merged = manifest_rows(sharded / "manifest.csv")
    assert without_seconds(merged) == without_seconds(manifest_rows(single / "manifest.csv"))
    assert sorted(p.name for p in (sharded / "GF").iterdir()) == sorted(p.name for p in (single / "GF").iterdir())


def test_an_unsharded_run_reuses_what_the_shards_did(folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    rows = run(ProcessConfig(input=[str(folder)], output=str(tmp_path), workers=1, shard="0/2"))
    capsys.readouterr()
    run(ProcessConfig(input=[str(folder)], output=str(tmp_path), workers=1))
    assert f"{N_FILES} files: {N_FILES} ok, 0 skipped, 0 failed ({len(rows)} unchanged since the last run)" \
        in capsys.readouterr().out


def test_merge_names_a_missing_shard(folder: Path, tmp_path: Path) -> None:
    run(ProcessConfig(input=[str(folder)], output=str(tmp_path), workers=1, shard="1/3"))
    with pytest.raises(SystemExit, match=r"manifest-0-of-3\.csv, manifest-2-of-3\.csv missing"):
        run(ProcessConfig(output=str(tmp_path), merge=True))


def test_a_bad_shard_flag_is_refused() -> None:
    for text in ("2/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            ProcessConfig(shard=text)


def test_an_empty_input_says_so_and_leaves_no_output_folders(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "notes.txt").write_text("no drawings here")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="nothing to do: no .dxf files under"):
        run(ProcessConfig(input=[str(src)], output=str(out), workers=1))
    assert not (out / "GF").exists() and not (out / "DeepDXF").exists()


def slow_for_d03(task):
    if task.path.endswith("d03.dxf"):
        time.sleep(5)
    return process_file(task)


def test_a_timed_out_file_is_tried_again_by_the_next_run(folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(dxf_process, "process_file", slow_for_d03)
    run(ProcessConfig(input=[str(folder)], output=str(out), workers=1, timeout=1))
    first = {Path(r["path"]).name: r for r in manifest_rows(out / "manifest.csv")}
    assert first["d03.dxf"]["status"] == "failed" and first["d03.dxf"]["reason"] == "timed out after 1 s"
    monkeypatch.setattr(dxf_process, "process_file", process_file)
    run(ProcessConfig(input=[str(folder)], output=str(out), workers=1, timeout=1))
    second = {Path(r["path"]).name: r for r in manifest_rows(out / "manifest.csv")}
    assert second["d03.dxf"]["status"] == "ok"
    assert second["d00.dxf"]["seconds"] == first["d00.dxf"]["seconds"]  # the others are reused
