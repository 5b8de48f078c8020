"""Loading, views and batching of DeepDXF sequences.

* :func:`load_deepdxf_dir` reads every ``<data_dir>/DeepDXF/<name>.h5`` once into
  numpy (int32 ``[L, 14]`` per drawing) with ``dataset.dxf_process_DeepDXF.load_h5_rows``.
* :func:`make_view` turns one drawing into a training view: a list of handle-ordered
  chunks of at most C entities, after the switchable augmentations of the config
  (random windows, entity dropout, quantization jitter, x/y shift, hidden slots), after
  the optional revision-like edits of :func:`revision_view` (90°/180° turns and mirror
  of the quantized coordinates, deleted and duplicated entities).
* :class:`LengthGroupedBatchSampler` puts drawings of similar length into one batch
  (less padding), every drawing once per epoch, seeded.
* :func:`two_view_batch` builds the two views of each drawing of a batch with a given
  generator and pads them per batch into ``ChunkBatch`` tensors (types/params/values/mask);
  :class:`DeepDXFCollate` is the DataLoader collate around it (DeepDXF_train.py), the
  joint loader calls it with a generator seeded per batch (``model/joint_dataset.py``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from config.DeepDXF_config import DeepDXFConfig
from dataset.dxf_process_DeepDXF import KIND_MATRIX, N_PARAMS, TYPE_INDEX, h5_length, load_h5_rows
from dataset.pack import PackedArchive, packed_archive
from model.DeepDXF_embedding import ChunkBatch, chunk_rows

log = logging.getLogger(__name__)

Chunk = tuple[np.ndarray, np.ndarray, int]  # rows [l, 14], index in drawing [l], drawing length

# Slot kinds (see dataset/dxf_process_DeepDXF.py): 1 X, 2 Y, 3 L, 4 A, 5 N, 6 S.
_CONTINUOUS = np.isin(KIND_MATRIX, (1, 2, 3, 4, 6))  # [N_TYPES, N_PARAMS]: jitter these
_IS_X = KIND_MATRIX == 1
_IS_Y = KIND_MATRIX == 2
_IS_ANGLE = KIND_MATRIX == 4
#: 0-based parameter indices (column - 1) of the boxes ``xmin, ymin, xmax, ymax`` in the
#: parameter table: their corners must be re-sorted after a turn or mirror.
_BOX_SLOTS: dict[str, tuple[int, int, int, int]] = {
    "LWPOLYLINE": (2, 3, 4, 5), "HATCH": (2, 3, 4, 5), "INSERT": (5, 6, 7, 8), "SPLINE": (4, 5, 6, 7)}
#: 0-based parameter indices of the ARC start/end angles (a mirror swaps them).
_ARC_ANGLES = (3, 4)
_ANGLE_QUARTER = 64  # 90° in the 0..255 angle quantization


def deepdxf_folder(data_dir: str | Path) -> Path:
    """``<data_dir>/DeepDXF`` if it exists, else ``data_dir`` itself (a folder of .h5)."""
    data_dir = Path(data_dir)
    sub = data_dir / "DeepDXF"
    return sub if sub.is_dir() else data_dir


def load_deepdxf_dir(data_dir: str | Path, lazy: bool = False) -> tuple[list[str], Sequence[np.ndarray]]:
    """The drawings of a preprocessing output folder: its packed shards when
    ``<data_dir>/packed`` holds any (``dataset/pack.py``), else its ``.h5`` files.

    Args:
        data_dir: the ``--output`` of preprocessing (or directly a folder of .h5 files).
        lazy: return a :class:`LazyRows` that reads each drawing when it is used
            (memory independent of the archive) instead of reading every drawing now.
    Returns:
        (names sorted, rows int32 [L_i, 14] per drawing); drawings without entities are skipped.
    """
    packed = packed_archive(data_dir)
    if packed is not None:
        lengths = packed.lengths()
        keep = np.flatnonzero(lengths > 0)
        names = packed.names()
        rows = ArchiveRows(packed, keep, lengths[keep])
        return [names[i] for i in keep], (rows if lazy else [rows[i] for i in range(len(rows))])
    folder = deepdxf_folder(data_dir)
    paths = sorted(folder.glob("*.h5"))
    if not paths:
        raise FileNotFoundError(f"no DeepDXF .h5 files in {folder} (run python dataset/dxf_process.py first)")
    if lazy:
        lengths = np.array([h5_length(p) for p in paths], dtype=np.int64)
        keep = np.flatnonzero(lengths > 0)
        if len(keep) < len(paths):
            log.info("skipped %d of %d drawings without entities", len(paths) - len(keep), len(paths))
        return [paths[i].stem for i in keep], DrawingRows([paths[i] for i in keep], lengths[keep])
    names, arrays, empty = [], [], []
    for p in paths:
        rows = load_h5_rows(p)
        if rows.shape[0] == 0:
            empty.append(p.stem)
            continue
        names.append(p.stem)
        arrays.append(rows)
    if empty:
        log.info("skipped %d of %d drawings without entities", len(empty), len(paths))
    return names, arrays


# --------------------------------------------------------------------------- views

def _windows(n: int, cfg: DeepDXFConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Entity index ranges of one view (each at most chunk_len long)."""
    c = cfg.DeepDXF_chunk_len
    if not cfg.DeepDXF_aug_crop:  # deterministic: the first max_view_chunks chunks
        stop = min(n, c * cfg.DeepDXF_max_view_chunks)
        return [np.arange(s, min(s + c, stop)) for s in range(0, stop, c)]
    if n <= c:
        keep = int(rng.integers(max(1, math.ceil(cfg.DeepDXF_crop_fraction * n)), n + 1))
        start = int(rng.integers(0, n - keep + 1))
        return [np.arange(start, start + keep)]
    k = max(1, round(math.ceil(n / c) * cfg.DeepDXF_crop_fraction))
    k = min(k, cfg.DeepDXF_max_view_chunks)
    starts = np.sort(rng.integers(0, n - c + 1, size=k))
    return [np.arange(s, s + c) for s in starts]


def _coordinate_extent(params: np.ndarray, types: np.ndarray) -> tuple[int, int, int, int]:
    """``(xmin, ymin, xmax, ymax)`` of the used X and Y slots of ``params [L, 12]``
    (``(0, 0, 0, 0)`` when a drawing has no coordinate)."""
    is_x, is_y = _IS_X[types] & (params >= 0), _IS_Y[types] & (params >= 0)
    if not is_x.any() or not is_y.any():
        return 0, 0, 0, 0
    xs, ys = params[is_x], params[is_y]
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _resort_boxes(params: np.ndarray, types: np.ndarray) -> None:
    """In place: the box slots of ``params [L, 12]`` back to ``xmin <= xmax``, ``ymin <= ymax``."""
    for name, (a, b, c, d) in _BOX_SLOTS.items():
        sel = (types == TYPE_INDEX[name]) & (params[:, a] >= 0) & (params[:, c] >= 0)
        if sel.any():
            x0, x1 = params[sel, a], params[sel, c]
            y0, y1 = params[sel, b], params[sel, d]
            params[sel, a], params[sel, c] = np.minimum(x0, x1), np.maximum(x0, x1)
            params[sel, b], params[sel, d] = np.minimum(y0, y1), np.maximum(y0, y1)


def turn_rows(rows: np.ndarray, quarter_turns: int) -> np.ndarray:
    """The drawing turned counter-clockwise by ``quarter_turns`` x 90°, in quantized space.

    A quarter turn maps ``(x, y)`` to ``(xmin + ymax - y, ymin + x - xmin)`` (the
    drawing's used coordinate box keeps its lower-left corner, as preprocessing anchors
    a drawing at 0), adds 64 (90°) to every angle slot and re-sorts box slots. Four
    turns give the rows back. Unused slots (-1) and the DIMENSION value stay as they are.

    Args:
        rows: int ``[L, 14]`` (type, 12 parameters, value).
        quarter_turns: any integer (taken modulo 4).
    Returns:
        int64 ``[L, 14]``; values clipped to 0..255.
    """
    out = np.asarray(rows).astype(np.int64, copy=True)
    k = int(quarter_turns) % 4
    if k == 0 or len(out) == 0:
        return out
    types = out[:, 0]
    for _ in range(k):
        params = out[:, 1:1 + N_PARAMS]
        xmin, ymin, _, ymax = _coordinate_extent(params, types)
        is_x = _IS_X[types] & (params >= 0)
        x_next = np.zeros_like(params)  # for each X slot: its Y partner (the next slot)
        x_next[:, :-1] = params[:, 1:]
        y_prev = np.zeros_like(params)  # for each Y slot: its X partner (the slot before)
        y_prev[:, 1:] = params[:, :-1]
        is_y = _IS_Y[types] & (params >= 0)
        new = params.copy()
        new[is_x] = xmin + ymax - x_next[is_x]
        new[is_y] = ymin + y_prev[is_y] - xmin
        is_a = _IS_ANGLE[types] & (params >= 0)
        new[is_a] = (params[is_a] + _ANGLE_QUARTER) % 256
        _resort_boxes(new, types)
        out[:, 1:1 + N_PARAMS] = np.where(params >= 0, np.clip(new, 0, 255), params)
    return out


def mirror_rows(rows: np.ndarray) -> np.ndarray:
    """The drawing mirrored left-right in quantized space: ``x -> xmin + xmax - x``,
    angles ``a -> 128 - a`` (mod 256), ARC start/end angles swapped (an arc still runs
    counter-clockwise), box slots re-sorted. Applying it twice gives the rows back.

    Args:
        rows: int ``[L, 14]``.
    Returns:
        int64 ``[L, 14]``.
    """
    out = np.asarray(rows).astype(np.int64, copy=True)
    if len(out) == 0:
        return out
    types = out[:, 0]
    params = out[:, 1:1 + N_PARAMS]
    xmin, _, xmax, _ = _coordinate_extent(params, types)
    new = params.copy()
    is_x = _IS_X[types] & (params >= 0)
    new[is_x] = xmin + xmax - params[is_x]
    is_a = _IS_ANGLE[types] & (params >= 0)
    new[is_a] = (128 - params[is_a]) % 256
    arc = types == TYPE_INDEX["ARC"]
    s, e = _ARC_ANGLES
    new[arc, s], new[arc, e] = new[arc, e].copy(), new[arc, s].copy()
    _resort_boxes(new, types)
    out[:, 1:1 + N_PARAMS] = np.where(params >= 0, new, params)
    return out


def edit_rows(rows: np.ndarray, delete_fraction: float, duplicate_fraction: float,
              rng: np.random.Generator, shift: int = 4) -> np.ndarray:
    """Entities deleted and duplicated like a CAD revision: ``round(delete_fraction * L)``
    random rows removed (at least one row is always kept), ``round(duplicate_fraction * L)``
    random rows copied, shifted by up to ``shift`` quantization steps in x and y, and
    appended at the end (new entities get the last handles).

    Args:
        rows: int ``[L, 14]``.
    Returns:
        int64 ``[L', 14]``.
    """
    out = np.asarray(rows).astype(np.int64, copy=False)
    n = len(out)
    if n == 0:
        return out.copy()
    n_del = min(n - 1, int(round(delete_fraction * n)))
    n_dup = int(round(duplicate_fraction * n))
    keep = np.ones(n, dtype=bool)
    if n_del > 0:
        keep[rng.choice(n, size=n_del, replace=False)] = False
    kept = out[keep]
    if n_dup <= 0:
        return kept.copy()
    dup = kept[rng.integers(0, len(kept), size=n_dup)].copy()
    types = dup[:, 0]
    params = dup[:, 1:1 + N_PARAMS]
    dx, dy = (rng.integers(-shift, shift + 1, size=(2, n_dup, 1)) if shift > 0 else np.zeros((2, n_dup, 1), np.int64))
    delta = dx * _IS_X[types] + dy * _IS_Y[types]
    dup[:, 1:1 + N_PARAMS] = np.where(params >= 0, np.clip(params + delta, 0, 255), params)
    return np.concatenate([kept, dup], axis=0)


def revision_view(rows: np.ndarray, cfg: DeepDXFConfig, rng: np.random.Generator) -> np.ndarray:
    """The revision-like edits of a view, switched by the config (each off by default):

    * ``DeepDXF_aug_turn``: with probability ``DeepDXF_turn_prob`` turn by 90°, 180° or 270°;
    * ``DeepDXF_aug_mirror``: with probability 0.5 mirror left-right;
    * ``DeepDXF_aug_edit``: delete and duplicate up to ``DeepDXF_edit_fraction`` of the
      entities (each share uniform in ``[0, DeepDXF_edit_fraction]``).

    Args:
        rows: int ``[L, 14]`` of the whole drawing (before windows).
    Returns:
        int ``[L', 14]`` (the input itself when nothing is switched on).
    """
    out = rows
    if cfg.DeepDXF_aug_edit and cfg.DeepDXF_edit_fraction > 0:
        f = cfg.DeepDXF_edit_fraction
        out = edit_rows(out, rng.uniform(0, f), rng.uniform(0, f), rng)
    if cfg.DeepDXF_aug_turn and rng.random() < cfg.DeepDXF_turn_prob:
        out = turn_rows(out, int(rng.integers(1, 4)))
    if cfg.DeepDXF_aug_mirror and rng.random() < 0.5:
        out = mirror_rows(out)
    return out


def make_view(rows: np.ndarray, cfg: DeepDXFConfig, rng: np.random.Generator) -> list[Chunk]:
    """One augmented view of a drawing as chunks.

    Args:
        rows: int [L, 14], L >= 1, handle order.
        cfg: augmentation switches ``DeepDXF_aug_*`` and their amounts.
        rng: numpy generator (seeded by the caller).
    Returns:
        Chunks ``(rows [l, 14], index [l], L)`` with 1 <= l <= chunk_len (index and L
        refer to the drawing after :func:`revision_view`).
    """
    rows = revision_view(rows, cfg, rng)
    n = rows.shape[0]
    sx = sy = 0
    if cfg.DeepDXF_aug_shift and cfg.DeepDXF_shift > 0:
        sx, sy = (int(v) for v in rng.integers(-cfg.DeepDXF_shift, cfg.DeepDXF_shift + 1, size=2))
    chunks: list[Chunk] = []
    for idx in _windows(n, cfg, rng):
        if cfg.DeepDXF_aug_drop and cfg.DeepDXF_drop_prob > 0 and idx.size > 1:
            keep = rng.random(idx.size) >= cfg.DeepDXF_drop_prob
            if not keep.any():
                keep[rng.integers(idx.size)] = True
            idx = idx[keep]
        r = rows[idx].astype(np.int64)
        params = r[:, 1:13]
        used = params >= 0
        kinds = r[:, 0]
        delta = np.zeros_like(params)
        if cfg.DeepDXF_aug_jitter and cfg.DeepDXF_jitter > 0:
            j = rng.integers(-cfg.DeepDXF_jitter, cfg.DeepDXF_jitter + 1, size=params.shape)
            delta += j * _CONTINUOUS[kinds]
        if sx or sy:
            delta += sx * _IS_X[kinds] + sy * _IS_Y[kinds]
        if cfg.DeepDXF_aug_param_mask and cfg.DeepDXF_param_mask_prob > 0:
            used = used & (rng.random(params.shape) >= cfg.DeepDXF_param_mask_prob)
        r[:, 1:13] = np.where(used, np.clip(params + delta, 0, 255), -1)
        chunks.append((r, idx, n))
    return chunks


# --------------------------------------------------------------------------- batching

class LazyRows(Sequence):
    """DeepDXF rows read when an item is asked for: ``rows[i]`` is ``int32 [L_i, 14]``;
    ``lengths`` (``int64 [n]``) is known up front; ``subset`` keeps the laziness."""

    lengths: np.ndarray

    def subset(self, indices: Sequence[int]) -> "LazyRows":
        raise NotImplementedError

    def describe(self) -> str:
        """Where the rows are read, for logs."""
        raise NotImplementedError


class ArchiveRows(LazyRows):
    """The rows of drawings ``indices`` of a packed archive (``dataset.pack.PackedArchive``),
    read from its shards when asked (nothing in memory but indices and lengths)."""

    def __init__(self, archive: PackedArchive, indices: np.ndarray, lengths: np.ndarray) -> None:
        self.archive = archive
        self.indices = np.asarray(indices, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.archive.rows(int(self.indices[i]))

    def subset(self, indices: Sequence[int]) -> "ArchiveRows":
        ix = np.asarray(indices, dtype=np.int64)
        return ArchiveRows(self.archive, self.indices[ix], self.lengths[ix])

    def describe(self) -> str:
        return self.archive.describe()


class DrawingRows(LazyRows):
    """The DeepDXF rows of preprocessed drawings, read from their ``.h5`` files when an
    item is asked for (nothing is kept in memory but the paths and the lengths).

    Args:
        paths: the ``.h5`` files.
        lengths: ``int64 [n]`` rows per file (read from the file headers when None).
    """

    def __init__(self, paths: Sequence[Path], lengths: Optional[np.ndarray] = None) -> None:
        self.paths = list(paths)
        self.lengths = (np.array([h5_length(p) for p in self.paths], dtype=np.int64)
                        if lengths is None else np.asarray(lengths, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        """Rows ``int32 [L_i, 14]`` of drawing i."""
        return load_h5_rows(self.paths[i])

    def subset(self, indices: Sequence[int]) -> "DrawingRows":
        """The drawings ``indices`` (in that order), still read lazily."""
        return DrawingRows([self.paths[i] for i in indices], self.lengths[np.asarray(indices, dtype=np.int64)])

    def describe(self) -> str:
        return f"per-drawing folder {self.paths[0].parent}" if self.paths else "no drawings"


class DeepDXFDataset(Dataset):
    """Item i is ``(i, rows int32 [L_i, 14])`` of ``arrays``: a list of arrays in memory,
    or a lazy :class:`LazyRows` that reads each drawing when asked."""

    def __init__(self, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> None:
        self.arrays = arrays if isinstance(arrays, LazyRows) else list(arrays)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.arrays))]

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        return i, self.arrays[i]

    @property
    def lengths(self) -> np.ndarray:
        if isinstance(self.arrays, LazyRows):
            return self.arrays.lengths
        return np.array([a.shape[0] for a in self.arrays], dtype=np.int64)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of drawings of similar length, every drawing once per epoch.

    Each epoch: sort by length with random tie-breaking (lengths jittered by up to
    ``noise`` relative), cut into batches of ``batch_size``, shuffle the batch order.
    A last batch of one drawing is merged into the previous one (NT-Xent needs two
    drawings for a negative). ``grouped=False`` gives plain shuffled batches.

    Args:
        lengths: [n] entity counts.
        batch_size: drawings per batch.
        seed: base seed; epoch e uses ``seed + e`` (call ``set_epoch``).
        shuffle: shuffle (training) or keep a fixed order (validation).
        grouped: group by length.
        noise: relative length jitter that varies the groups between epochs.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, shuffle: bool = True,
                 grouped: bool = True, noise: float = 0.1) -> None:
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.shuffle = shuffle
        self.grouped = grouped
        self.noise = noise
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng(self.seed + self.epoch)
        if self.grouped:
            key = np.log1p(self.lengths)
            if self.shuffle:
                key = key + rng.uniform(-self.noise, self.noise, size=n)
            order = np.argsort(key, kind="stable")
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        out = [order[s:s + self.batch_size].tolist() for s in range(0, n, self.batch_size)]
        if len(out) > 1 and len(out[-1]) == 1:
            out[-2].extend(out.pop())
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        n = len(self.lengths)
        k = math.ceil(n / self.batch_size)
        return k - 1 if k > 1 and n % self.batch_size == 1 else k


@dataclass
class DeepDXFBatch:
    """Two views of N drawings: ``view1``/``view2`` are ``ChunkBatch`` of the same N drawings
    (row i = drawing ``index[i]``); ``n_entities`` counts the real entities of both views."""

    view1: ChunkBatch
    view2: ChunkBatch
    index: torch.Tensor

    @property
    def n_drawings(self) -> int:
        return int(self.index.numel())

    @property
    def n_entities(self) -> int:
        return int(self.view1.mask.sum() + self.view2.mask.sum())

    def to(self, device: torch.device | str) -> "DeepDXFBatch":
        return DeepDXFBatch(self.view1.to(device), self.view2.to(device), self.index.to(device))


class DeepDXFCollate:
    """Collate ``(i, rows)`` items into two augmented, per-batch padded views.

    Args:
        cfg: view settings.
        seed: seed of the view generator; ``reset()`` restarts it (validation uses the
            same views every epoch, so its loss is comparable across epochs).
        pad_to_chunk_len: pad chunks to C instead of the longest chunk of the batch.
    """

    def __init__(self, cfg: DeepDXFConfig, seed: int = 0, pad_to_chunk_len: bool = False) -> None:
        self.cfg = cfg
        self.seed = seed
        self.pad_to_chunk_len = pad_to_chunk_len
        self.rng = np.random.default_rng(seed)
        self._worker: int | None = None

    def reset(self, seed: int | None = None) -> None:
        self.seed = self.seed if seed is None else seed
        self.rng = np.random.default_rng(self.seed)
        self._worker = None

    def __call__(self, items: list[tuple[int, np.ndarray]]) -> DeepDXFBatch:
        info = get_worker_info()
        if info is not None and self._worker != info.id:
            # each worker its own stream; info.seed comes from torch's RNG (new every epoch,
            # reproducible under a seeded torch RNG, as in validation)
            self._worker = info.id
            self.rng = np.random.default_rng([self.seed, info.seed % 2**63])
        return two_view_batch(items, self.cfg, self.rng, self.pad_to_chunk_len)


def two_view_batch(items: Sequence[tuple[int, np.ndarray]], cfg: DeepDXFConfig, rng: np.random.Generator,
                   pad_to_chunk_len: bool = False) -> DeepDXFBatch:
    """Two augmented views of each drawing of a batch, padded per batch.

    Args:
        items: ``(index, rows int [L, 14])`` per drawing, L >= 1.
        cfg: view settings.
        rng: the generator of the views: first every drawing's view 1, then every view 2.
        pad_to_chunk_len: pad chunks to C instead of the longest chunk of the batch.
    Returns:
        ``DeepDXFBatch`` with ``index`` [N] the items' indices.
    """
    c = cfg.DeepDXF_chunk_len
    v1 = [make_view(rows, cfg, rng) for _, rows in items]
    v2 = [make_view(rows, cfg, rng) for _, rows in items]
    return DeepDXFBatch(
        view1=chunk_rows(v1, c, pad_to_chunk_len),
        view2=chunk_rows(v2, c, pad_to_chunk_len),
        index=torch.tensor([i for i, _ in items], dtype=torch.long),
    )


def make_loader(arrays: Sequence[np.ndarray], cfg: DeepDXFConfig, train: bool, seed: int,
                grouped: bool | None = None, batch_size: int | None = None) -> DataLoader:
    """A DataLoader of two-view batches over ``arrays``.

    Training: shuffled batches (length-grouped when ``grouped``, default
    ``cfg.DeepDXF_length_grouping``), fresh views every epoch. Validation
    (``train=False``): fixed batches; call ``loader.collate_fn.reset()`` before each
    pass for identical views (the trainer does).
    """
    ds = DeepDXFDataset(arrays)
    grouped = cfg.DeepDXF_length_grouping if grouped is None else grouped
    view_len = np.minimum(ds.lengths, cfg.DeepDXF_chunk_len * cfg.DeepDXF_max_view_chunks)  # what a view holds
    sampler = LengthGroupedBatchSampler(view_len, batch_size or cfg.DeepDXF_batch_size, seed=seed,
                                        shuffle=train, grouped=grouped)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=DeepDXFCollate(cfg, seed=seed),
                      num_workers=cfg.num_workers)


__all__ = [
    "DeepDXFBatch",
    "DeepDXFCollate",
    "DeepDXFDataset",
    "ArchiveRows",
    "DrawingRows",
    "LazyRows",
    "LengthGroupedBatchSampler",
    "deepdxf_folder",
    "load_deepdxf_dir",
    "edit_rows",
    "make_loader",
    "make_view",
    "mirror_rows",
    "revision_view",
    "turn_rows",
    "two_view_batch",
]
