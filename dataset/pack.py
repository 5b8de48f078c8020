"""Packed archives: the per-drawing encodings of a large archive in a few HDF5 shards.

    python dataset/pack.py --data_dir data/archive             # -> data/archive/packed/
    python dataset/pack.py --data_dir data/archive --shard_size 100000

A million drawings are two million small files after preprocessing; packed, they are
a handful of chunked, compressed HDF5 files that training reads lazily, one drawing
at a time, so the memory of a training process does not grow with the archive.

Layout of ``<data_dir>/packed/shard-00000.h5`` (one shard per ``shard_size`` drawings)::

    names              str [n]                     drawing names (UTF-8)
    gf/features        float32 [n, C, C + 1]       as in GF/<name>.npz
    gf/adjacency       float32 [n, C, C]
    deepdxf/rows       int32 [R, N_COLUMNS]        every drawing's rows, one after another
    deepdxf/offsets    int64 [n + 1]               drawing i is rows[offsets[i]:offsets[i + 1]]
    deepdxf/type_counts int64 [n, N_TYPES]
    attrs: format_version, classes

``open_archive(data_dir)`` gives the same reader interface over a packed folder or
over the per-drawing ``GF/`` + ``DeepDXF/`` folders, so training takes either:
``len``, ``name(i)``, ``names()``, ``graph(i)``, ``gf_layout(i)``, ``rows(i)``, ``type_counts(i)``, ``lengths()``,
``unpaired()``, ``layout`` (``"packed"`` or ``"folders"``) and ``describe()``.

Shards are a snapshot: :func:`pack_staleness` tells when the per-drawing folders changed
after packing (the readers' ``describe()`` then says so, and ``dataset/dxf_process.py``
packs again by itself when it changed a packed folder).

Chunks are small (``GF_CHUNK`` drawings, ``ROW_CHUNK`` rows) because training reads
drawings in random order: one drawing's read decompresses one or two chunks.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

import h5py
import numpy as np

if __package__ in (None, ""):  # run as `python dataset/pack.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.dxf_process_DeepDXF import N_COLUMNS, N_TYPES, load_h5  # noqa: E402
from dataset.dxf_process_GF import GF_CLASSES, LAYOUT_DIM, load_gf  # noqa: E402
from dataset.console import progress_bar  # noqa: E402
from dataset.files import atomic_write  # noqa: E402
from config.cli import paths_note  # noqa: E402

PACK_FORMAT_VERSION = 1
PACKED_DIR = "packed"
ROW_CHUNK = 2048  # rows per chunk of deepdxf/rows (115 KB): a random read decompresses little
GF_CHUNK = 64  # drawings per chunk of gf/features and gf/adjacency


class ArchiveError(RuntimeError):
    """A data folder that holds no usable encodings, or a damaged packed shard."""


def _paired_names(data_dir: Path) -> list[str]:
    """Names of drawings that have both encodings, sorted (the order packing and folder reading share)."""
    gf = {p.stem for p in (data_dir / "GF").glob("*.npz")}
    dd = {p.stem for p in (data_dir / "DeepDXF").glob("*.h5")}
    return sorted(gf & dd)


def pack(data_dir: str | Path, shard_size: int = 50_000, out: Optional[str | Path] = None,
         progress: bool = True) -> list[Path]:
    """Pack ``data_dir/GF`` + ``data_dir/DeepDXF`` into ``out`` (default ``data_dir/packed``).

    Returns the shard paths. Each shard is written atomically; shards of an earlier
    pack with a higher number than the new count are removed.
    """
    data_dir = Path(data_dir)
    out = Path(out) if out is not None else data_dir / PACKED_DIR
    names = _paired_names(data_dir)
    if not names:
        raise ArchiveError(f"{data_dir}: no drawing has both GF/<name>.npz and DeepDXF/<name>.h5; "
                           f"run dataset/dxf_process.py --output {data_dir} first")
    out.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    bar = None
    if progress:
        bar = progress_bar(total=len(names), desc="packing", unit="drawing")
    for k, s in enumerate(range(0, len(names), shard_size)):
        part = names[s:s + shard_size]
        path = out / f"shard-{k:05d}.h5"
        atomic_write(path, lambda tmp, part=part: _write_shard(tmp, data_dir, part, bar))
        shards.append(path)
    for stale in out.glob("shard-*.h5"):
        if stale not in shards:
            stale.unlink()
    if bar is not None:
        bar.close()
    return shards


def _write_shard(path: Path, data_dir: Path, names: Sequence[str], bar) -> None:
    n, c = len(names), len(GF_CLASSES)
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = PACK_FORMAT_VERSION
        f.attrs["classes"] = " ".join(GF_CLASSES)
        f.create_dataset("names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        feats = f.create_dataset("gf/features", (n, c, c + 1), dtype="f4", chunks=(min(n, GF_CHUNK), c, c + 1),
                                 compression="gzip", compression_opts=4)
        adj = f.create_dataset("gf/adjacency", (n, c, c), dtype="f4", chunks=(min(n, GF_CHUNK), c, c),
                               compression="gzip", compression_opts=4)
        lay = f.create_dataset("gf/layout", (n, c, LAYOUT_DIM), dtype="f4",
                               chunks=(min(n, GF_CHUNK), c, LAYOUT_DIM), compression="gzip", compression_opts=4)
        rows = f.create_dataset("deepdxf/rows", (0, N_COLUMNS), maxshape=(None, N_COLUMNS), dtype="i4",
                                chunks=(ROW_CHUNK, N_COLUMNS), compression="gzip", compression_opts=4)
        offsets = np.zeros(n + 1, dtype=np.int64)
        counts = np.zeros((n, N_TYPES), dtype=np.int64)
        pending: list[np.ndarray] = []
        pending_rows = 0
        for i, name in enumerate(names):
            gf = load_gf(data_dir / "GF" / f"{name}.npz")
            feats[i] = gf["features"]
            adj[i] = gf["adjacency"]
            if "layout" in gf:  # older GF files have none: zeros, as the per-drawing reader gives
                lay[i] = gf["layout"]
            r, attrs = load_h5(data_dir / "DeepDXF" / f"{name}.h5")
            counts[i] = attrs.get("type_counts", np.bincount(r[:, 0], minlength=N_TYPES))
            offsets[i + 1] = offsets[i] + len(r)
            pending.append(r)
            pending_rows += len(r)
            if pending_rows >= 16 * ROW_CHUNK or i == n - 1:
                block = np.concatenate(pending) if pending else np.zeros((0, N_COLUMNS), np.int32)
                start = rows.shape[0]
                rows.resize(start + len(block), axis=0)
                rows[start:] = block
                pending, pending_rows = [], 0
            if bar is not None:
                bar.update(1)
        f.create_dataset("deepdxf/offsets", data=offsets)
        f.create_dataset("deepdxf/type_counts", data=counts)


class PackedArchive:
    """Lazy reader of ``packed/shard-*.h5``: only the small offset tables stay in memory.

    HDF5 handles are opened on first use in each process (DataLoader workers fork
    the dataset; an h5py handle must not cross a fork).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.paths = sorted(self.folder.glob("shard-*.h5"))
        if not self.paths:
            raise ArchiveError(f"{self.folder}: no packed shards (run dataset/pack.py)")
        sizes = []
        self._offsets: list[np.ndarray] = []
        for p in self.paths:
            with h5py.File(p, "r") as f:
                if int(f.attrs.get("format_version", -1)) != PACK_FORMAT_VERSION:
                    raise ArchiveError(f"{p}: packed with another format version; pack again")
                sizes.append(len(f["names"]))
                self._offsets.append(f["deepdxf/offsets"][()])
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        #: Why the shards may be older than the per-drawing encodings beside them (None: they are not).
        self.stale: Optional[str] = pack_staleness(self.folder.parent) if self.folder.name == PACKED_DIR else None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self) -> dict:  # DataLoader workers under spawn: never pickle open handles
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"drawing {i} of {len(self)}")
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return k, i - int(self._starts[k])

    def _file(self, k: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours
            self._files, self._pid = {}, os.getpid()
        if k not in self._files:
            self._files[k] = h5py.File(self.paths[k], "r")
        return self._files[k]

    def name(self, i: int) -> str:
        k, j = self._locate(i)
        return self._file(k)["names"].asstr()[j]

    def names(self) -> list[str]:
        """All names (reads them: O(archive) memory; for reports, not for training)."""
        return [n for k in range(len(self.paths)) for n in self._file(k)["names"].asstr()[()]]

    def graph(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(features float32 [C, C+1], adjacency float32 [C, C])`` of drawing i."""
        k, j = self._locate(i)
        f = self._file(k)
        return f["gf/features"][j], f["gf/adjacency"][j]

    def gf_layout(self, i: int) -> np.ndarray:
        """Class layout ``float32 [C, LAYOUT_DIM]`` of drawing i (zeros when it was packed without one)."""
        k, j = self._locate(i)
        f = self._file(k)
        return f["gf/layout"][j] if "gf/layout" in f else np.zeros((len(GF_CLASSES), LAYOUT_DIM), np.float32)

    def graph_arrays(self, layout: bool = False) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Every drawing's GF graph at once, one read per shard and dataset (a per-drawing
        loop costs minutes at 10^6 drawings): ``features float32 [n, C, C+1]``,
        ``adjacency float32 [n, C, C]`` and, with ``layout``, ``float32 [n, C, LAYOUT_DIM]``
        (zeros for shards packed without one), else None."""
        feats, adjs, lays = [], [], []
        for k in range(len(self.paths)):
            f = self._file(k)
            feats.append(f["gf/features"][()])
            adjs.append(f["gf/adjacency"][()])
            if layout:
                lays.append(f["gf/layout"][()] if "gf/layout" in f
                            else np.zeros((len(feats[-1]), len(GF_CLASSES), LAYOUT_DIM), np.float32))
        return (np.concatenate(feats), np.concatenate(adjs), np.concatenate(lays) if layout else None)

    def rows(self, i: int) -> np.ndarray:
        """DeepDXF rows ``int32 [L, N_COLUMNS]`` of drawing i."""
        k, j = self._locate(i)
        lo, hi = self._offsets[k][j], self._offsets[k][j + 1]
        return self._file(k)["deepdxf/rows"][lo:hi]

    def type_counts(self, i: int) -> np.ndarray:
        """Supported entities per DeepDXF type of drawing i, ``int64 [N_TYPES]`` (before any cut)."""
        k, j = self._locate(i)
        return np.asarray(self._file(k)["deepdxf/type_counts"][j], dtype=np.int64)

    def lengths(self) -> np.ndarray:
        """Rows per drawing ``int64 [n]`` (from the offset tables, no row is read)."""
        return np.concatenate([np.diff(o) for o in self._offsets])

    layout = "packed"

    def describe(self) -> str:
        """The layout in words, for logs (with a warning when the shards are stale)."""
        text = f"packed archive, {len(self.paths)} shard(s) in {self.folder}"
        return text if self.stale is None else f"{text} (WARNING: {self.stale})"

    def unpaired(self) -> tuple[list[str], list[str]]:
        """Drawings with only a GF / only a DeepDXF encoding: none (packing takes pairs only)."""
        return [], []

    def close(self) -> None:
        """Close the open shard handles (reopened on the next read)."""
        for f in self._files.values():
            f.close()
        self._files = {}


class FolderArchive:
    """The same interface over per-drawing ``GF/<name>.npz`` + ``DeepDXF/<name>.h5`` files."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._names = _paired_names(self.data_dir)
        if not self._names:
            raise ArchiveError(f"{self.data_dir}: no drawing has both GF/<name>.npz and DeepDXF/<name>.h5; "
                               f"run dataset/dxf_process.py --output {self.data_dir} first")

    def __len__(self) -> int:
        return len(self._names)

    def name(self, i: int) -> str:
        return self._names[i]

    def names(self) -> list[str]:
        return list(self._names)

    def graph(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        gf = load_gf(self.data_dir / "GF" / f"{self._names[i]}.npz", keys=("features", "adjacency"))
        return gf["features"], gf["adjacency"]

    def gf_layout(self, i: int) -> np.ndarray:
        """Class layout ``float32 [C, LAYOUT_DIM]`` of drawing i (zeros for GF files written
        before preprocessing computed it)."""
        try:
            return load_gf(self.data_dir / "GF" / f"{self._names[i]}.npz", keys=("layout",))["layout"]
        except KeyError:
            return np.zeros((len(GF_CLASSES), LAYOUT_DIM), np.float32)

    def rows(self, i: int) -> np.ndarray:
        return load_h5(self.data_dir / "DeepDXF" / f"{self._names[i]}.h5")[0]

    def type_counts(self, i: int) -> np.ndarray:
        """Supported entities per DeepDXF type of drawing i, ``int64 [N_TYPES]`` (the file's
        ``type_counts`` attribute, counted before any cut; else counted from its rows)."""
        rows, attrs = load_h5(self.data_dir / "DeepDXF" / f"{self._names[i]}.h5")
        counts = attrs.get("type_counts")
        if counts is None:
            counts = np.bincount(np.asarray(rows)[:, 0].astype(np.int64), minlength=N_TYPES)
        return np.asarray(counts, dtype=np.int64).reshape(N_TYPES)

    def lengths(self) -> np.ndarray:
        out = np.empty(len(self), dtype=np.int64)
        for i, name in enumerate(self._names):
            with h5py.File(self.data_dir / "DeepDXF" / f"{name}.h5", "r") as f:
                out[i] = f["entities"].shape[0]
        return out

    layout = "folders"

    def describe(self) -> str:
        """The layout in words, for logs."""
        return f"per-drawing folders {self.data_dir / 'GF'} + {self.data_dir / 'DeepDXF'}"

    def unpaired(self) -> tuple[list[str], list[str]]:
        """``(only GF, only DeepDXF)``: sorted names of drawings with one encoding only (left out)."""
        gf = {p.stem for p in (self.data_dir / "GF").glob("*.npz")}
        dd = {p.stem for p in (self.data_dir / "DeepDXF").glob("*.h5")}
        return sorted(gf - dd), sorted(dd - gf)

    def close(self) -> None:
        pass


def pack_staleness(data_dir: str | Path) -> Optional[str]:
    """Why ``data_dir/packed`` may not hold today's encodings, or None when it does (or is absent).

    A drawing written or removed under ``GF/`` or ``DeepDXF/`` after the oldest shard was
    written changes that folder's modification time (every encoding is written by a
    rename): the shards then miss it, and training, which prefers the shards, would not see it.
    """
    data_dir = Path(data_dir)
    shards = list((data_dir / PACKED_DIR).glob("shard-*.h5"))
    if not shards:
        return None
    packed_at = min(p.stat().st_mtime_ns for p in shards)
    changed = [f"{d.name}/" for d in (data_dir / "GF", data_dir / "DeepDXF")
               if d.is_dir() and d.stat().st_mtime_ns > packed_at]
    if not changed:
        return None
    return (f"{' and '.join(changed)} changed after {data_dir / PACKED_DIR} was packed, and training reads the "
            f"packed shards: run python dataset/pack.py --data_dir {data_dir} again")


def packed_archive(data_dir: str | Path) -> Optional[PackedArchive]:
    """The packed shards under ``data_dir/packed`` when there are any, else None. Every
    trainer prefers them to the per-drawing folders."""
    folder = Path(data_dir) / PACKED_DIR
    return PackedArchive(folder) if any(folder.glob("shard-*.h5")) else None


def open_archive(data_dir: str | Path) -> PackedArchive | FolderArchive:
    """The packed shards under ``data_dir/packed`` when present, else the per-drawing folders."""
    packed = packed_archive(data_dir)
    return packed if packed is not None else FolderArchive(data_dir)


def iter_drawings(archive: PackedArchive | FolderArchive) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, features, adjacency, rows)`` of every drawing, in archive order."""
    for i in range(len(archive)):
        feats, adj = archive.graph(i)
        yield archive.name(i), feats, adj, archive.rows(i)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Pack the per-drawing encodings of a preprocessed folder into a few HDF5 shards "
                    "that training reads lazily (for archives of 10^5 drawings and more).",
        epilog=paths_note())
    ap.add_argument("--data_dir", default="data", help="the --output folder of dataset/dxf_process.py (default: data)")
    ap.add_argument("--shard_size", type=int, default=50_000, help="drawings per shard (default: 50000)")
    ap.add_argument("--out", default=None, help="where the shards go (default: DATA_DIR/packed)")
    args = ap.parse_args(argv)
    try:
        shards = pack(args.data_dir, args.shard_size, args.out)
    except ArchiveError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = len(PackedArchive(shards[0].parent))
    print(f"packed {n} drawings into {len(shards)} shard(s) under {shards[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
