"""One drawing file -> both encodings in memory (:class:`DrawingEncoding`).

A ``.dxf`` is parsed and encoded on the fly (``dataset.encode.encode_drawing``, nothing
written), unless a preprocessed folder already holds its encodings for exactly this
file (:class:`PreprocessedIndex`: same path, size and modification time in its
``manifest.csv``); a preprocessed ``.h5`` is read with its GF twin when present.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from dataset.archive import gf_twin_path, output_paths
from dataset.dxf_process_DeepDXF import load_h5
from dataset.dxf_process_GF import load_gf
from dataset.formats import FORMAT_VERSION, GF_CLASSES, LAYOUT_DIM, N_COLUMNS, N_TYPES
from dataset.manifest import read_manifest
from dataset.dxf_read import DrawingError
from model.floors import GRID, layout_grid

DXF_SUFFIXES = (".dxf",)
H5_SUFFIXES = (".h5", ".hdf5")
SUPPORTED_SUFFIXES = DXF_SUFFIXES + H5_SUFFIXES
_C = len(GF_CLASSES)


@dataclass
class DrawingEncoding:
    """Both encodings of one drawing, in memory.

    Attributes:
        path: the file it came from (``.dxf`` or ``.h5``).
        source: the DXF source (the ``.dxf`` itself, or the ``.h5``'s ``source`` attribute).
        rows: DeepDXF rows int32 ``[L, 14]``.
        type_counts: int64 ``[12]`` supported entities per DeepDXF type (before any cut).
        gf_features: float32 ``[10, 11]`` or None (an ``.h5`` without its GF twin).
        gf_adjacency: float32 ``[10, 10]`` or None.
        layout: int32 ``[12, 8, 8]`` entities per type and grid cell (``model.floors.layout_grid``).
        gf_layout: float32 ``[10, LAYOUT_DIM]`` the GF file's per-class occupancy (zeros when
            the file predates it), for GF models trained with ``GF_layout_features``.
    """

    path: str
    source: Optional[str]
    rows: np.ndarray
    type_counts: np.ndarray
    gf_features: Optional[np.ndarray] = None
    gf_adjacency: Optional[np.ndarray] = None
    layout: np.ndarray = field(default_factory=lambda: np.zeros((N_TYPES, GRID, GRID), dtype=np.int32))
    gf_layout: np.ndarray = field(default_factory=lambda: np.zeros((_C, LAYOUT_DIM), dtype=np.float32))

    @property
    def has_gf(self) -> bool:
        return self.gf_features is not None and self.gf_adjacency is not None


def sha1_files(paths: Iterable[str | Path], chunk: int = 1 << 20) -> str:
    """Hex SHA-1 of the bytes of one or more files (each prefixed by a marker, so that
    moving bytes from one file to the next changes the hash)."""
    h = hashlib.sha1()
    for p in paths:
        h.update(b"\0file\0")
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


def _load_dxf(path: Path, max_len: int) -> DrawingEncoding:
    from dataset.encode import encode_drawing

    try:
        gf, rows, info = encode_drawing(path, GF_CLASSES, max_len)
    except DrawingError:
        raise
    except MemoryError as err:
        raise DrawingError(path, "out of memory while reading") from err
    except Exception as err:  # ezdxf can raise many types on odd files: name it, do not crash
        raise DrawingError(path, f"cannot be read ({type(err).__name__}: {err})"[:300]) from err
    if info["skip_reason"]:
        raise DrawingError(path, info["skip_reason"])
    return DrawingEncoding(
        path=str(path), source=str(path), rows=rows,
        type_counts=np.asarray(info["type_counts"], dtype=np.int64),
        gf_features=gf["features"].astype(np.float32), gf_adjacency=gf["adjacency"].astype(np.float32),
        layout=layout_grid(rows), gf_layout=np.asarray(gf["layout"], dtype=np.float32),
    )


def _load_h5(path: Path) -> DrawingEncoding:
    try:
        rows, attrs = load_h5(path)
    except KeyError as err:
        raise DrawingError(path, "HDF5 file without an 'entities' dataset: not a DeepDXF encoding") from err
    except OSError as err:
        raise DrawingError(path, f"not a readable HDF5 file ({str(err).splitlines()[0][:120]})") from err
    version = int(attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise DrawingError(path, f"DeepDXF format_version {version}, expected {FORMAT_VERSION}: "
                                 "preprocess the DXF again with dataset/dxf_process.py")
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != N_COLUMNS or len(rows) == 0:
        raise DrawingError(path, f"entities of shape {rows.shape}, expected [L >= 1, {N_COLUMNS}]")
    counts = attrs.get("type_counts")
    if counts is None:
        counts = np.bincount(rows[:, 0], minlength=N_TYPES)
    source = attrs.get("source")
    enc = DrawingEncoding(path=str(path), source=str(source) if source else None,
                          rows=rows.astype(np.int32), type_counts=np.asarray(counts, dtype=np.int64),
                          layout=layout_grid(rows))
    twin = gf_twin_path(path)
    if twin.is_file():
        try:
            gf = load_gf(twin)
            enc.gf_features = np.asarray(gf["features"], dtype=np.float32)
            enc.gf_adjacency = np.asarray(gf["adjacency"], dtype=np.float32)
            if "layout" in gf:  # older files: zeros (the default)
                enc.gf_layout = np.asarray(gf["layout"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as err:
            raise DrawingError(path, f"its GF twin {twin} cannot be read ({err})") from err
    return enc


def load_drawing(path: str | Path, max_len: int = 50_000, encoded: Optional[Path] = None) -> DrawingEncoding:
    """Both encodings of a ``.dxf`` (parsed now, or read from ``encoded``, the ``.h5`` that
    preprocessing wrote for this very file: :meth:`PreprocessedIndex.lookup`) or of a
    preprocessed ``.h5`` file.

    Raises:
        DrawingError: the file is missing, of another type, or cannot be read (with why).
    """
    return read_encoding(path, max_len, encoded)[0]


def read_encoding(path: str | Path, max_len: int = 50_000, encoded: Optional[Path] = None
                  ) -> tuple[DrawingEncoding, bool]:
    """:func:`load_drawing`, and whether the encoding was read from ``encoded`` (True) rather
    than parsed (an unusable preprocessed copy is ignored: the drawing is parsed)."""
    path = Path(path)
    if path.is_dir():
        raise DrawingError(path, "is a folder, not a drawing: give a .dxf or .h5 file "
                                 "(to search a folder of drawings, use --gallery FOLDER --query FILE)")
    if not path.is_file():
        raise DrawingError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in DXF_SUFFIXES:
        if encoded is not None:
            try:
                enc = _load_h5(Path(encoded))
            except DrawingError:
                enc = None
            if enc is not None and enc.has_gf and len(enc.rows) <= max_len:
                enc.path, enc.source = str(path), str(path)
                return enc, True
        return _load_dxf(path, max_len), False
    if suffix in H5_SUFFIXES:
        return _load_h5(path), False
    raise DrawingError(path, f"unsupported file type {path.suffix or '(none)'!r}: give a .dxf or a "
                             "preprocessed DeepDXF .h5 file")


class PreprocessedIndex:
    """The DXF files that preprocessing (``dataset/dxf_process.py``) already encoded, from
    the ``manifest.csv`` of one or more output folders.

    ``lookup(dxf)`` gives the ``.h5`` of a file whose manifest row has the same file name,
    size and modification time (nanoseconds; the manifest's paths may be relative to
    wherever preprocessing ran) and was not cut by ``--max_len``, else None: a file
    changed since it was preprocessed is parsed again. Folders without a manifest are
    ignored.
    """

    def __init__(self, folders: Sequence[str | Path] = ()) -> None:
        self._rows: dict[tuple[str, int, int], Path] = {}  # (file name, size, mtime_ns) -> .h5
        self.folders: list[Path] = []
        for folder in folders:
            self._read(Path(folder))

    def __len__(self) -> int:
        return len(self._rows)

    def _read(self, folder: Path) -> None:
        manifest = folder / "manifest.csv"
        if not manifest.is_file():
            return
        added = 0
        for row in read_manifest(manifest).values():
            if row.get("status") != "ok" or not row.get("size") or not row.get("mtime_ns") \
                    or int(row.get("n_cut") or 0):
                continue
            key = (os.path.basename(row["path"]), int(row["size"]), int(row["mtime_ns"]))
            self._rows[key] = output_paths(folder, row["name"])[1]
            added += 1
        if added:
            self.folders.append(folder)

    def lookup(self, dxf: str | Path) -> Optional[Path]:
        """The preprocessed ``.h5`` of this very file, or None."""
        if not self._rows:
            return None
        try:
            st = os.stat(dxf)
        except OSError:
            return None
        h5 = self._rows.get((os.path.basename(dxf), st.st_size, st.st_mtime_ns))
        return h5 if h5 is not None and h5.is_file() else None


def stack_encodings(encs: Sequence[DrawingEncoding]) -> dict[str, np.ndarray]:
    """Encodings stacked as ``EmbeddingCache.encodings_at`` gives them: ``type_counts [n, 12]``,
    ``gf_features [n, 10, 11]`` / ``gf_adjacency [n, 10, 10]`` (zeros where missing),
    ``has_gf [n]``, ``layout [n, 12, 8, 8]``, ``source [n]``."""
    return {
        "type_counts": np.stack([np.asarray(e.type_counts, dtype=np.int64) for e in encs]),
        "gf_features": np.stack([e.gf_features if e.has_gf else np.zeros((_C, _C + 1), np.float32) for e in encs]),
        "gf_adjacency": np.stack([e.gf_adjacency if e.has_gf else np.zeros((_C, _C), np.float32) for e in encs]),
        "has_gf": np.array([e.has_gf for e in encs], dtype=bool),
        "layout": np.stack([e.layout for e in encs]),
        "source": np.array([e.source or "" for e in encs]),
    }


__all__ = ["DXF_SUFFIXES", "H5_SUFFIXES", "SUPPORTED_SUFFIXES", "DrawingEncoding", "sha1_files",
           "load_drawing", "read_encoding", "PreprocessedIndex", "stack_encodings"]
