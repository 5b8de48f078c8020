"""A preprocessed folder: where its files are, and the one reader of its encodings.

The ``--output`` of ``dataset/dxf_process.py``::

    <data_dir>/GF/<name>.npz           GF encoding of one drawing (dataset/dxf_process_GF.py)
    <data_dir>/DeepDXF/<name>.h5       DeepDXF encoding of one drawing (dataset/dxf_process_DeepDXF.py)
    <data_dir>/manifest.csv            one row per input file (dataset/manifest.py)
    <data_dir>/packed/shard-00000.h5   the same encodings packed (dataset/pack.py), when packed

:func:`open_archive` is the one reader: packed shards when ``<data_dir>/packed`` holds
any, else the per-drawing folders, behind one interface (``len``, ``name(i)``,
``names()``, ``graph(i)``, ``gf_layout(i)``, ``graph_arrays()``, ``rows(i)``,
``lengths()``, ``unpaired()``, ``layout``, ``describe()``, ``close()``). Every trainer
reads through it; ``need`` says which encodings a drawing must have (``"both"`` for joint
training, ``"gf"`` or ``"deepdxf"`` for a single model). A folder that holds raw DXF
drawings instead gets the command that preprocesses them (:func:`raw_dxf_hint`).

A packed shard (one per ``shard_size`` drawings)::

    names              str [n]                     drawing names (UTF-8), sorted
    gf/features        float32 [n, C, C + 1]       as in GF/<name>.npz
    gf/adjacency       float32 [n, C, C]
    gf/layout          float32 [n, C, LAYOUT_DIM]
    deepdxf/rows       int32 [R, N_COLUMNS]        every drawing's rows, one after another
    deepdxf/offsets    int64 [n + 1]               drawing i is rows[offsets[i]:offsets[i + 1]]
    deepdxf/type_counts int64 [n, N_TYPES]
    attrs: format_version, classes

:func:`pack` writes the shards (atomically, one by one). Shards are a snapshot:
:func:`pack_staleness` tells when the per-drawing folders changed after packing. Chunks
are small (``GF_CHUNK`` drawings, ``ROW_CHUNK`` rows) because training reads drawings
in random order: one drawing's read decompresses one or two chunks.
"""
from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Literal, Optional, Sequence

import h5py
import numpy as np

from dataset.console import progress_bar
from dataset.dxf_process_DeepDXF import h5_length, load_h5, load_h5_rows
from dataset.dxf_process_GF import load_gf, load_gf_layout, zero_layout
from dataset.files import atomic_write
from dataset.formats import GF_CLASSES, GF_FEATURES, GF_NODES, LAYOUT_DIM, N_COLUMNS, N_TYPES

log = logging.getLogger(__name__)

GF_DIR = "GF"
DEEPDXF_DIR = "DeepDXF"
PACKED_DIR = "packed"
PACK_FORMAT_VERSION = 1
ROW_CHUNK = 2048  # rows per chunk of deepdxf/rows (115 KB): a random read decompresses little
GF_CHUNK = 64  # drawings per chunk of gf/features and gf/adjacency

Need = Literal["both", "gf", "deepdxf"]


class ArchiveError(RuntimeError):
    """A data folder that holds no usable encodings, or a damaged packed shard."""


class NoEncodingsError(ArchiveError, FileNotFoundError):
    """A data folder without the encodings asked for (preprocess it first)."""


# ----------------------------------------------------------------------------- the folder layout

def output_paths(output: str | Path, name: str) -> tuple[Path, Path]:
    """Where a drawing's encodings go: ``(<output>/GF/<name>.npz, <output>/DeepDXF/<name>.h5)``."""
    out = Path(output)
    return out / GF_DIR / f"{name}.npz", out / DEEPDXF_DIR / f"{name}.h5"


def gf_twin_path(h5_path: str | Path) -> Path:
    """Where preprocessing wrote the GF encoding of ``DeepDXF/<name>.h5``: ``GF/<name>.npz``."""
    p = Path(h5_path)
    return p.parent.parent / GF_DIR / f"{p.stem}.npz"


def raw_dxf_hint(data_dir: str | Path) -> Optional[str]:
    """An error message when ``data_dir`` holds raw DXF drawings instead of preprocessing
    output (no ``GF/``/``DeepDXF/`` folders): the command to preprocess them into a
    separate folder. None when the folder does not look like that."""
    root = Path(data_dir)
    if not root.is_dir() or (root / GF_DIR).is_dir() or (root / DEEPDXF_DIR).is_dir():
        return None
    if not any(p.suffix.lower() == ".dxf" for p in root.rglob("*") if p.is_file()):
        return None
    name = root.resolve().name or "drawings"
    out = root.resolve().parent / f"{name}_processed"
    return (f"{root} holds DXF drawings, not preprocessed data. Preprocess them first into another folder:\n"
            f"    python dataset/dxf_process.py --input {shlex.quote(str(root))} --output {shlex.quote(str(out))}\n"
            f"then train with --data_dir {shlex.quote(str(out))}")


def _stems(folder: Path, suffix: str) -> set[str]:
    return {p.stem for p in folder.glob(f"*{suffix}")}


# ----------------------------------------------------------------------------- per-drawing folders

class FolderArchive:
    """The reader over per-drawing ``GF/<name>.npz`` and ``DeepDXF/<name>.h5`` files.

    Args:
        data_dir: the preprocessing output folder (with ``need="deepdxf"`` also a folder
            of ``.h5`` files itself).
        need: the drawings taken: those with ``"both"`` encodings, or every ``"gf"`` /
            ``"deepdxf"`` file. Names are sorted.

    Raises:
        NoEncodingsError: no drawing has what ``need`` asks for (the message says how to
            preprocess; for a folder of raw DXF drawings, into which folder).
    """

    layout = "folders"

    def __init__(self, data_dir: str | Path, *, need: Need = "both") -> None:
        self.data_dir = Path(data_dir)
        self.need = need
        self.gf_dir = self.data_dir / GF_DIR
        self.deepdxf_dir = self.data_dir / DEEPDXF_DIR
        if need == "deepdxf" and not self.deepdxf_dir.is_dir():
            self.deepdxf_dir = self.data_dir  # a folder of .h5 files
        if need == "both":
            self._names = sorted(_stems(self.gf_dir, ".npz") & _stems(self.deepdxf_dir, ".h5"))
        else:
            self._names = sorted(_stems(self.gf_dir if need == "gf" else self.deepdxf_dir,
                                        ".npz" if need == "gf" else ".h5"))
        if not self._names:
            raise NoEncodingsError(raw_dxf_hint(self.data_dir) or self._nothing_found())

    def _nothing_found(self) -> str:
        run = f"python dataset/dxf_process.py --output {self.data_dir}"
        if self.need == "both":
            return (f"{self.data_dir}: no drawing has both GF/<name>.npz and DeepDXF/<name>.h5; "
                    f"run dataset/dxf_process.py --output {self.data_dir} first")
        if self.need == "deepdxf":
            return f"no DeepDXF .h5 files in {self.deepdxf_dir} (run python dataset/dxf_process.py first)"
        if not self.gf_dir.is_dir():
            return f"no GF data in {self.gf_dir}: create it with `{run}` (add --input DIR for your own DXF folder)"
        return f"{self.gf_dir} holds no .npz files: run `{run}` first"

    def __len__(self) -> int:
        return len(self._names)

    def name(self, i: int) -> str:
        return self._names[i]

    def names(self) -> list[str]:
        return list(self._names)

    def gf_path(self, i: int) -> Path:
        return self.gf_dir / f"{self._names[i]}.npz"

    def h5_path(self, i: int) -> Path:
        return self.deepdxf_dir / f"{self._names[i]}.h5"

    def graph(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(features float32 [C, C+1], adjacency float32 [C, C])`` of drawing i."""
        gf = load_gf(self.gf_path(i), keys=("features", "adjacency"))
        return gf["features"], gf["adjacency"]

    def gf_layout(self, i: int) -> np.ndarray:
        """Class layout ``float32 [C, LAYOUT_DIM]`` of drawing i (``load_gf_layout``: zeros
        for GF files written before preprocessing computed it)."""
        return load_gf_layout(self.gf_path(i))

    def graph_arrays(self, *, layout: bool = False) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Every drawing's GF graph, checked: ``features float32 [n, C, C+1]``, ``adjacency
        float32 [n, C, C]`` and, with ``layout``, ``float32 [n, C, LAYOUT_DIM]``, else None.

        Raises:
            ArchiveError: a file that cannot be read or has the wrong shape (named).
        """
        n = len(self)
        feats = np.zeros((n, GF_NODES, GF_FEATURES), dtype=np.float32)
        adjs = np.zeros((n, GF_NODES, GF_NODES), dtype=np.float32)
        for i in range(n):
            try:
                f, a = self.graph(i)
            except (OSError, ValueError, KeyError) as err:
                raise ArchiveError(f"{self.gf_path(i)}: not a readable GF file ({err})") from err
            if f.shape != (GF_NODES, GF_FEATURES) or a.shape != (GF_NODES, GF_NODES):
                raise ArchiveError(f"{self.gf_path(i)}: expected features [{GF_NODES}, {GF_FEATURES}] and adjacency "
                                   f"[{GF_NODES}, {GF_NODES}], got {f.shape} and {a.shape}")
            feats[i], adjs[i] = f, a
        return feats, adjs, self._layouts() if layout else None

    def _layouts(self) -> np.ndarray:
        out = zero_layout(len(self))
        missing = []
        for i in range(len(self)):
            try:
                out[i] = load_gf_layout(self.gf_path(i), missing_ok=False)
            except KeyError:
                missing.append(self._names[i])
            except (OSError, ValueError) as err:
                raise ArchiveError(f"{self.gf_path(i)}: not a readable GF file ({err})") from err
        if missing:
            log.warning("%d of %d GF files have no 'layout' array (written by an older preprocessing): zeros used, "
                        "e.g. %s; run dataset/dxf_process.py --overwrite to compute it", len(missing), len(self),
                        missing[0])
        return out

    def rows(self, i: int) -> np.ndarray:
        """DeepDXF rows ``int32 [L, N_COLUMNS]`` of drawing i."""
        return load_h5_rows(self.h5_path(i))

    def type_counts(self, i: int) -> np.ndarray:
        """Supported entities per DeepDXF type of drawing i, ``int64 [N_TYPES]`` (the file's
        ``type_counts`` attribute, counted before any cut; else counted from its rows)."""
        rows, attrs = load_h5(self.h5_path(i))
        counts = attrs.get("type_counts")
        if counts is None:
            counts = np.bincount(np.asarray(rows)[:, 0].astype(np.int64), minlength=N_TYPES)
        return np.asarray(counts, dtype=np.int64).reshape(N_TYPES)

    def lengths(self) -> np.ndarray:
        """Rows per drawing ``int64 [n]`` (read from the HDF5 headers, no row is read)."""
        return np.array([h5_length(self.h5_path(i)) for i in range(len(self))], dtype=np.int64)

    def describe(self) -> str:
        """The layout in words, for logs."""
        if self.need == "gf":
            return f"per-drawing folder {self.gf_dir}"
        if self.need == "deepdxf":
            return f"per-drawing folder {self.deepdxf_dir}"
        return f"per-drawing folders {self.gf_dir} + {self.deepdxf_dir}"

    def unpaired(self) -> tuple[list[str], list[str]]:
        """``(only GF, only DeepDXF)``: sorted names of drawings with one encoding only (left out)."""
        gf, dd = _stems(self.gf_dir, ".npz"), _stems(self.deepdxf_dir, ".h5")
        return sorted(gf - dd), sorted(dd - gf)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- packed shards

class PackedArchive:
    """The reader over ``packed/shard-*.h5``: only the small offset tables stay in memory.

    HDF5 handles are opened on first use in each process (DataLoader workers fork
    the dataset; an h5py handle must not cross a fork).
    """

    layout = "packed"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.paths = sorted(self.folder.glob("shard-*.h5"))
        if not self.paths:
            raise NoEncodingsError(f"{self.folder}: no packed shards (run dataset/pack.py)")
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

    @staticmethod
    def _layout(f: h5py.File, rows: int | slice, n: int = 0) -> np.ndarray:
        """``gf/layout[rows]`` of a shard; zeros for a shard packed before it existed."""
        if "gf/layout" in f:
            return f["gf/layout"][rows]
        return zero_layout(n) if isinstance(rows, slice) else zero_layout()

    def gf_layout(self, i: int) -> np.ndarray:
        """Class layout ``float32 [C, LAYOUT_DIM]`` of drawing i."""
        k, j = self._locate(i)
        return self._layout(self._file(k), j)

    def graph_arrays(self, *, layout: bool = False) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Every drawing's GF graph at once, one read per shard and dataset (a per-drawing
        loop costs minutes at 10^6 drawings): ``features float32 [n, C, C+1]``,
        ``adjacency float32 [n, C, C]`` and, with ``layout``, ``float32 [n, C, LAYOUT_DIM]``,
        else None.

        Raises:
            ArchiveError: a shard that cannot be read.
        """
        feats, adjs, lays = [], [], []
        try:
            for k in range(len(self.paths)):
                f = self._file(k)
                feats.append(f["gf/features"][()])
                adjs.append(f["gf/adjacency"][()])
                if layout:
                    lays.append(self._layout(f, slice(None), len(feats[-1])))
        except (OSError, KeyError) as err:
            raise ArchiveError(f"{self.folder}: packed shards that cannot be read ({err}); pack again") from err
        return np.concatenate(feats), np.concatenate(adjs), np.concatenate(lays) if layout else None

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


Archive = PackedArchive | FolderArchive


def packed_archive(data_dir: str | Path) -> Optional[PackedArchive]:
    """The packed shards under ``data_dir/packed`` when there are any, else None."""
    folder = Path(data_dir) / PACKED_DIR
    return PackedArchive(folder) if any(folder.glob("shard-*.h5")) else None


def open_archive(data_dir: str | Path, *, need: Need = "both") -> Archive:
    """The one reader of a preprocessed folder: its packed shards when ``data_dir/packed``
    holds any (every trainer prefers them), else its per-drawing folders (:class:`FolderArchive`).

    Raises:
        NoEncodingsError: nothing to read (the message says how to preprocess).
        ArchiveError: a packed shard of another format version.
    """
    packed = packed_archive(data_dir)
    return packed if packed is not None else FolderArchive(data_dir, need=need)


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
    changed = [f"{d.name}/" for d in (data_dir / GF_DIR, data_dir / DEEPDXF_DIR)
               if d.is_dir() and d.stat().st_mtime_ns > packed_at]
    if not changed:
        return None
    return (f"{' and '.join(changed)} changed after {data_dir / PACKED_DIR} was packed, and training reads the "
            f"packed shards: run python dataset/pack.py --data_dir {data_dir} again")


# ----------------------------------------------------------------------------- packing

def pack(data_dir: str | Path, *, shard_size: int = 50_000, out: Optional[str | Path] = None,
         progress: bool = True) -> list[Path]:
    """Pack the drawings of ``data_dir/GF`` + ``data_dir/DeepDXF`` that have both encodings
    into ``out`` (default ``data_dir/packed``).

    Returns the shard paths. Each shard is written atomically; shards of an earlier
    pack with a higher number than the new count are removed.

    Raises:
        NoEncodingsError: no drawing has both encodings.
    """
    folders = FolderArchive(data_dir, need="both")
    out = Path(out) if out is not None else Path(data_dir) / PACKED_DIR
    out.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    bar = progress_bar(total=len(folders), desc="packing", unit="drawing") if progress else None
    for k, s in enumerate(range(0, len(folders), shard_size)):
        part = range(s, min(s + shard_size, len(folders)))
        path = out / f"shard-{k:05d}.h5"
        atomic_write(path, lambda tmp, part=part: _write_shard(tmp, folders, part, bar))
        shards.append(path)
    for stale in out.glob("shard-*.h5"):
        if stale not in shards:
            stale.unlink()
    if bar is not None:
        bar.close()
    return shards


def _write_shard(path: Path, folders: FolderArchive, part: Sequence[int], bar) -> None:
    n, c = len(part), len(GF_CLASSES)
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = PACK_FORMAT_VERSION
        f.attrs["classes"] = " ".join(GF_CLASSES)
        f.create_dataset("names", data=np.array([folders.name(i) for i in part], dtype=object),
                         dtype=h5py.string_dtype())
        gzip = {"compression": "gzip", "compression_opts": 4}
        feats = f.create_dataset("gf/features", (n, c, c + 1), dtype="f4", chunks=(min(n, GF_CHUNK), c, c + 1), **gzip)
        adj = f.create_dataset("gf/adjacency", (n, c, c), dtype="f4", chunks=(min(n, GF_CHUNK), c, c), **gzip)
        lay = f.create_dataset("gf/layout", (n, c, LAYOUT_DIM), dtype="f4", chunks=(min(n, GF_CHUNK), c, LAYOUT_DIM),
                               **gzip)
        rows = f.create_dataset("deepdxf/rows", (0, N_COLUMNS), maxshape=(None, N_COLUMNS), dtype="i4",
                                chunks=(ROW_CHUNK, N_COLUMNS), **gzip)
        offsets = np.zeros(n + 1, dtype=np.int64)
        counts = np.zeros((n, N_TYPES), dtype=np.int64)
        pending: list[np.ndarray] = []
        pending_rows = 0
        for i, src in enumerate(part):
            gf = load_gf(folders.gf_path(src))
            feats[i], adj[i], lay[i] = gf["features"], gf["adjacency"], load_gf_layout(gf)
            r, attrs = load_h5(folders.h5_path(src))
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


__all__ = [
    "GF_DIR", "DEEPDXF_DIR", "PACKED_DIR", "PACK_FORMAT_VERSION", "Need", "Archive", "ArchiveError",
    "NoEncodingsError", "output_paths", "gf_twin_path", "raw_dxf_hint", "FolderArchive", "PackedArchive",
    "packed_archive", "open_archive", "pack_staleness", "pack",
]
