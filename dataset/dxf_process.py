"""Preprocess a DXF archive into both encodings (SPEC §2, §3, §8).

    python dataset/dxf_process.py                      # data/DXF -> data/GF, data/DeepDXF
    python dataset/dxf_process.py --input DIR --output OUT --workers 4

Each file is parsed once (``dataset.dxf_read``) and written as ``OUT/GF/<name>.npz``
and ``OUT/DeepDXF/<name>.h5``; ``OUT/manifest.csv`` gets one row per input file with
its status (``ok`` / ``skipped`` / ``failed``) and a reason a person understands.
One bad file never stops a run. Drawings already done and unchanged (same size and
modification time) are skipped unless ``--overwrite``.
"""
from __future__ import annotations

import csv
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py
import numpy as np
from tqdm import tqdm

from config.cli import parse_config
from config.process_config import ProcessConfig
from dataset.dxf_process_DeepDXF import DEEPDXF_TYPES, N_COLUMNS, deepdxf_encode, save_h5
from dataset.dxf_process_GF import GF_CLASSES, gf_encode, save_gf
from dataset.dxf_read import TYPE_ALIASES, DrawingError, drawing_name, read_drawing

MANIFEST_COLUMNS = ["path", "name", "status", "reason", "n_entities", "n_dropped", "n_cut",
                    "seconds", "size", "mtime_ns"]
DEFAULT_INPUT = "data/DXF"


@dataclass
class Task:
    """One file to preprocess."""

    path: str
    name: str
    output: str
    max_len: int
    classes: tuple[str, ...]
    timeout: int
    size: int
    mtime_ns: int


class FileTimeout(Exception):
    """Raised inside a worker when one file takes longer than the allowed time."""


def _on_alarm(signum, frame):
    raise FileTimeout()


def process_file(task: Task) -> dict:
    """Read one drawing, write its two encodings, and return its manifest row.

    Never raises for a bad file: every problem becomes a ``skipped``/``failed`` row.
    """
    start = time.perf_counter()
    row = {"path": task.path, "name": task.name, "status": "ok", "reason": "",
           "n_entities": 0, "n_dropped": 0, "n_cut": 0, "size": task.size, "mtime_ns": task.mtime_ns}
    use_alarm = task.timeout > 0 and hasattr(signal, "SIGALRM")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(task.timeout)
    try:
        row.update(encode_file(task))
    except DrawingError as err:
        row.update(status="failed", reason=err.reason)
    except FileTimeout:
        row.update(status="failed", reason=f"timed out after {task.timeout} s")
    except MemoryError:
        row.update(status="failed", reason="out of memory")
    except Exception as err:  # one bad file must not stop the run: record what happened
        row.update(status="failed", reason=f"unexpected error ({type(err).__name__}: {err})"[:300])
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    row["seconds"] = round(time.perf_counter() - start, 3)
    if row["status"] != "ok":
        remove_outputs(Path(task.output), task.name)
    return row


def encode_drawing(path: str | Path, classes: tuple[str, ...] = GF_CLASSES,
                   max_len: int = 50_000) -> tuple[dict | None, np.ndarray, dict]:
    """Parse one DXF file and compute both encodings in memory (nothing is written).

    Args:
        path: the DXF file.
        classes: the GF classes, in node order.
        max_len: keep at most this many DeepDXF rows.

    Returns:
        ``(gf, rows, info)``: the GF encoding (``dxf_process_GF.gf_encode`` dict, None
        when skipped), the DeepDXF rows int32 ``[L, N_COLUMNS]`` (``L = 0`` when skipped)
        and ``info``: the ``deepdxf_encode`` info plus ``n_modelspace`` (modelspace
        entities, kept or not), ``recovered`` (read with ``ezdxf.recover``) and
        ``skip_reason`` ("" for a usable drawing, else why it holds nothing to learn from).

    Raises:
        DrawingError: the file cannot be read as a DXF drawing.
    """
    keep = set(classes) | set(DEEPDXF_TYPES)
    drawing = read_drawing(path, keep_types=keep)
    n_all = drawing.n_modelspace
    info: dict = {"n_modelspace": n_all, "recovered": drawing.recovered, "skip_reason": ""}
    empty = np.zeros((0, N_COLUMNS), dtype=np.int32)
    if len(drawing) == 0:
        found = drawing.other_types.most_common(3)
        what = ", ".join(f"{n} {t}" for t, n in found) if found else "an empty modelspace"
        damaged = " in a damaged file read with ezdxf.recover" if drawing.recovered else ""
        info["skip_reason"] = f"no supported entities ({what}){damaged}"
        return None, empty, info
    types, boxes, invalid, entities = drawing.types, drawing.boxes, drawing.invalid, drawing.entities
    rows, dd_info = deepdxf_encode(entities, types, boxes, invalid, max_len)
    info.update(dd_info)
    if len(rows) == 0:
        info["skip_reason"] = "no supported entities with valid coordinates"
        return None, rows, info
    valid = ~invalid
    gf = gf_encode([t for t, v in zip(types, valid) if v], boxes[valid], classes)
    return gf, rows, info


def encode_file(task: Task) -> dict:
    """Parse, encode and write one drawing; returns the manifest fields it sets."""
    gf, rows, info = encode_drawing(task.path, task.classes, task.max_len)
    n_all = info["n_modelspace"]
    if info["skip_reason"]:
        return {"status": "skipped", "reason": info["skip_reason"], "n_entities": n_all, "n_dropped": n_all}
    out = Path(task.output)
    save_gf(out / "GF" / f"{task.name}.npz", gf)
    save_h5(out / "DeepDXF" / f"{task.name}.h5", rows, info, source=task.path,
            source_size=task.size, source_mtime_ns=task.mtime_ns, recovered=info["recovered"])
    n_dropped = n_all - info["n_total"]
    reason = "read with ezdxf.recover" if info["recovered"] else ""
    return {"n_entities": n_all, "n_dropped": n_dropped, "n_cut": info["n_cut"], "reason": reason}


def remove_outputs(output: Path, name: str) -> None:
    """Delete a drawing's encodings (stale results of a file that now fails)."""
    for path in (output / "GF" / f"{name}.npz", output / "DeepDXF" / f"{name}.h5"):
        path.unlink(missing_ok=True)


def find_dxf_files(roots: list[str]) -> list[tuple[Path, str]]:
    """All ``.dxf`` files (any case) under ``roots``, recursively, with their drawing
    names; a name seen twice gets its root folder's name as prefix."""
    found: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for root in roots:
        root_path = Path(root)
        files = [root_path] if root_path.is_file() else sorted(
            p for p in root_path.rglob("*") if p.suffix.lower() == ".dxf" and p.is_file())
        for path in files:
            name = path.stem if root_path.is_file() else drawing_name(path, root_path)
            if name in seen:
                name = f"{root_path.name}__{name}"
            seen.add(name)
            found.append((path, name))
    return found


def read_manifest(path: Path) -> dict[str, dict]:
    """Rows of an earlier manifest keyed by path ({} if there is none)."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def write_manifest(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["path"]))
    tmp.replace(path)


def is_unchanged(task: Task, previous: dict | None) -> bool:
    """True when an earlier run already handled this exact file (same size and mtime)
    and, for an ``ok`` drawing, both encodings are still there."""
    if previous is None:
        return False
    if str(previous.get("size")) != str(task.size) or str(previous.get("mtime_ns")) != str(task.mtime_ns):
        return False
    if previous.get("status") != "ok":
        return True
    out = Path(task.output)
    h5_path = out / "DeepDXF" / f"{task.name}.h5"
    if not (out / "GF" / f"{task.name}.npz").is_file() or not h5_path.is_file():
        return False
    try:
        with h5py.File(h5_path, "r") as f:
            return int(f.attrs.get("source_mtime_ns", -1)) == task.mtime_ns
    except OSError:
        return False


def reason_key(reason: str) -> str:
    """The reason without its details, for counting ("unreadable DXF (...)" -> "unreadable DXF")."""
    return reason.split(" (", 1)[0]


def summarize(rows: list[dict], n_reused: int) -> str:
    """A short report for people: counts by status and by reason."""
    by_status = Counter(r["status"] for r in rows)
    lines = [f"{len(rows)} files: " + ", ".join(f"{by_status[s]} {s}" for s in ("ok", "skipped", "failed"))
             + (f" ({n_reused} unchanged since the last run)" if n_reused else "")]
    for status in ("skipped", "failed"):
        reasons = Counter(reason_key(r["reason"]) for r in rows if r["status"] == status)
        if reasons:
            lines.append(f"  {status}: " + "; ".join(f"{n} {why}" for why, n in reasons.most_common()))
    recovered = sum(1 for r in rows if r["status"] == "ok" and "recover" in r["reason"])
    if recovered:
        lines.append(f"  {recovered} damaged files were read with ezdxf.recover")
    cut = [r for r in rows if int(r.get("n_cut") or 0) > 0]
    if cut:
        lines.append(f"  {len(cut)} drawings longer than --max_len were cut")
    return "\n".join(lines)


def ensure_sample_corpus(cfg: ProcessConfig) -> None:
    """Fill the default input folder with the bundled sample corpus when it is empty."""
    if cfg.input != [DEFAULT_INPUT]:
        return
    folder = Path(DEFAULT_INPUT)
    if folder.is_dir() and any(p.suffix.lower() == ".dxf" for p in folder.rglob("*")):
        return
    from dataset.make_sample_dxf import make_sample_corpus

    print(f"{folder}/ is empty: writing the bundled sample corpus there first.")
    written = make_sample_corpus(folder, seed=cfg.seed)
    print(f"wrote {len(written)} sample drawings to {folder}/")


def run(cfg: ProcessConfig) -> list[dict]:
    """Preprocess every DXF file under ``cfg.input``; returns the manifest rows."""
    ensure_sample_corpus(cfg)
    missing = [p for p in cfg.input if not Path(p).exists()]
    if missing:
        raise SystemExit(f"error: input folder not found: {', '.join(missing)}")
    if len(cfg.gf_classes) != len(set(cfg.gf_classes)):
        raise SystemExit("error: --gf_classes has duplicates")
    classes = tuple(TYPE_ALIASES.get(c.upper(), c.upper()) for c in cfg.gf_classes)
    out = Path(cfg.output)
    (out / "GF").mkdir(parents=True, exist_ok=True)
    (out / "DeepDXF").mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.csv"
    previous = {} if cfg.overwrite else read_manifest(manifest_path)

    files = find_dxf_files(cfg.input)
    if not files:
        raise SystemExit(f"error: no .dxf files under {', '.join(cfg.input)}")
    tasks, rows = [], []
    for path, name in files:
        stat = path.stat()
        task = Task(str(path), name, str(out), cfg.max_len, classes, cfg.timeout, stat.st_size, stat.st_mtime_ns)
        if is_unchanged(task, previous.get(task.path)):
            rows.append(previous[task.path])
        else:
            tasks.append(task)
    n_reused = len(rows)
    workers = cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)
    workers = max(1, min(workers, len(tasks)))
    tasks.sort(key=lambda t: -t.size)  # big files first: better load balance
    bar = tqdm(total=len(tasks), desc="preprocessing", unit="file", dynamic_ncols=True)
    if workers == 1:
        results = map(process_file, tasks)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(workers, maxtasksperchild=200)
        results = pool.imap_unordered(process_file, tasks, chunksize=1)
    try:
        for row in results:
            rows.append(row)
            bar.update(1)
            if row["status"] != "ok":
                bar.write(f"{row['status']}: {row['path']}: {row['reason']}")
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
        write_manifest(manifest_path, rows)
    print(summarize(rows, n_reused))
    print(f"wrote {out / 'GF'}/, {out / 'DeepDXF'}/ and {manifest_path}")
    return rows


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ProcessConfig, argv, description=__doc__.split("\n\n")[0])
    run(cfg)


if __name__ == "__main__":
    main()
