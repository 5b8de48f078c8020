"""``manifest.csv``: one row per input file of preprocessing, its one reader and writer.

Columns: ``path, name, status, reason, n_entities, n_dropped, n_cut, seconds, size, mtime_ns``.
``status`` is ``ok``, ``skipped`` (the file is fine but holds nothing to learn from) or
``failed`` (the file cannot be read); ``reason`` is a short sentence for people. A row
is made here (:func:`new_row`, :func:`failed_row`), filled by ``dataset.encode.process_file``,
appended as files finish (:class:`ManifestAppender`: a killed run keeps every finished
row), and read back by the next run (:func:`earlier_rows`, :func:`is_unchanged`) and by
``--merge`` (:func:`merge_manifests`). A sharded run (``--shard I/N``) writes
``manifest-I-of-N.csv`` (:func:`manifest_path`).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Optional, Protocol

from dataset.archive import output_paths
from dataset.dxf_process_DeepDXF import h5_matches_source
from dataset.files import atomic_write_text

COLUMNS = ["path", "name", "status", "reason", "n_entities", "n_dropped", "n_cut", "seconds", "size", "mtime_ns"]
MANIFEST = "manifest.csv"
SHARD_MANIFEST = re.compile(r"manifest-(\d+)-of-(\d+)\.csv")
TRANSIENT_FAILURES = ("timed out", "worker process died", "out of memory")
"""Reasons of ``failed`` rows that a rerun tries again (they depend on limits and load, not the file)."""


class ManifestError(ValueError):
    """Shard manifests that cannot be merged (missing, of different N, overlapping)."""


class SourceFile(Protocol):
    """What a row records of its input file (``dataset.encode.EncodeTask`` is one)."""

    path: str
    name: str
    output: str
    size: int
    mtime_ns: int


def new_row(task: SourceFile) -> dict:
    """The row of a file about to be encoded: ``ok`` until something says otherwise."""
    return {"path": task.path, "name": task.name, "status": "ok", "reason": "", "n_entities": 0, "n_dropped": 0,
            "n_cut": 0, "seconds": 0.0, "size": task.size, "mtime_ns": task.mtime_ns}


def failed_row(task: SourceFile, reason: str, seconds: float = 0.0) -> dict:
    """The row of a file given up (``failed``: it cannot be read, timed out, its worker died)."""
    return {**new_row(task), "status": "failed", "reason": reason, "seconds": round(seconds, 3)}


def manifest_path(output: Path, shard: tuple[int, int] | None = None) -> Path:
    """``output/manifest.csv``, or ``output/manifest-I-of-N.csv`` for shard ``(I, N)``."""
    return output / (MANIFEST if shard is None else f"manifest-{shard[0]}-of-{shard[1]}.csv")


def read_manifest(path: Path) -> dict[str, dict]:
    """Rows of an earlier manifest keyed by path ({} if there is none); a later row of a
    path wins, and a line cut short by a killed run is ignored."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f)
                if row.get("path") and None not in row.values()}


def _csv_text(rows: list[dict], *, header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Write a whole manifest, rows sorted by path, atomically."""
    atomic_write_text(path, _csv_text(sorted(rows, key=lambda r: r["path"]), header=True))


class ManifestAppender:
    """Appends one row per finished file to a manifest and flushes it at once, so that
    a run killed at any moment leaves every finished row on disk."""

    def __init__(self, path: Path, rows: list[dict]) -> None:
        write_manifest(path, rows)  # the rows kept from earlier runs, then appends
        self._file = open(path, "a", newline="", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._file.write(_csv_text([row], header=False))  # one write per row
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def merge_manifests(output: str | Path) -> list[dict]:
    """Merge ``manifest-I-of-N.csv`` (every I of one N) under ``output`` into ``manifest.csv``.

    Returns:
        the merged rows, sorted by path: what one run over the whole input writes.

    Raises:
        ManifestError: no shard manifests, several N, a missing shard, or a file in two shards.
    """
    out = Path(output)
    found: dict[int, dict[int, Path]] = {}
    for path in sorted(out.glob("manifest-*-of-*.csv")):
        match = SHARD_MANIFEST.fullmatch(path.name)
        if match:
            found.setdefault(int(match[2]), {})[int(match[1])] = path
    if not found:
        raise ManifestError(f"no shard manifests (manifest-I-of-N.csv) in {out}: "
                            "run dataset/dxf_process.py with --shard I/N first")
    if len(found) > 1:
        raise ManifestError(f"shard manifests of different runs in {out} (N = "
                            f"{', '.join(map(str, sorted(found)))}): keep the files of one N only")
    (n, shards), = found.items()
    missing = [f"manifest-{i}-of-{n}.csv" for i in range(n) if i not in shards]
    if missing:
        raise ManifestError(f"cannot merge {out}: {', '.join(missing)} missing (run those shards first)")
    rows: dict[str, dict] = {}
    for i in range(n):
        for path, row in read_manifest(shards[i]).items():
            if path in rows:
                raise ManifestError(f"{path} is in two shard manifests of {out}: "
                                    f"were the shards run over different --input?")
            rows[path] = row
    merged = sorted(rows.values(), key=lambda r: r["path"])
    write_manifest(out / MANIFEST, merged)
    return merged


def earlier_rows(output: Path, manifest: Path) -> dict[str, dict]:
    """Rows of every manifest under ``output`` (shard manifests, the merged one, then
    ``manifest`` itself, which wins), keyed by path: whichever run did a file, sharded
    or not, a later run reuses it when the file is unchanged."""
    rows: dict[str, dict] = {}
    for path in [*sorted(output.glob("manifest-*-of-*.csv")), output / MANIFEST, manifest]:
        rows.update(read_manifest(path))
    return rows


def is_unchanged(task: SourceFile, previous: Optional[dict]) -> bool:
    """True when an earlier run already handled this exact file (same size and mtime)
    and, for an ``ok`` drawing, both encodings are still there, the DeepDXF one written
    from this very file by this encoding version (``dxf_process_DeepDXF.h5_matches_source``).
    A file that failed for a reason of the run (timed out, its worker died) is tried again."""
    if previous is None:
        return False
    if previous.get("status") == "failed" and previous.get("reason", "").startswith(TRANSIENT_FAILURES):
        return False
    if str(previous.get("size")) != str(task.size) or str(previous.get("mtime_ns")) != str(task.mtime_ns):
        return False
    if previous.get("status") != "ok":
        return True
    gf_path, h5_path = output_paths(task.output, task.name)
    return gf_path.is_file() and h5_matches_source(h5_path, source_mtime_ns=task.mtime_ns)


__all__ = [
    "COLUMNS", "MANIFEST", "TRANSIENT_FAILURES", "ManifestError", "SourceFile", "new_row", "failed_row",
    "manifest_path", "read_manifest", "write_manifest", "ManifestAppender", "merge_manifests", "earlier_rows",
    "is_unchanged",
]
