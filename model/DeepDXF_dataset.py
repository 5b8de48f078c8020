"""Loading, views and batching of DeepDXF sequences (SPEC §3, §5, §6).

* :func:`load_deepdxf_dir` reads every ``<data_dir>/DeepDXF/<name>.h5`` once into
  numpy (int32 ``[L, 14]`` per drawing) with ``dataset.dxf_process_DeepDXF.load_h5_rows``.
* :func:`make_view` turns one drawing into a training view: a list of handle-ordered
  chunks of at most C entities, after the switchable augmentations of the config
  (random windows, entity dropout, quantization jitter, x/y shift, hidden slots).
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
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from config.DeepDXF_config import DeepDXFConfig
from dataset.dxf_process_DeepDXF import KIND_MATRIX, load_h5_rows
from model.DeepDXF_embedding import ChunkBatch, chunk_rows

log = logging.getLogger(__name__)

Chunk = tuple[np.ndarray, np.ndarray, int]  # rows [l, 14], index in drawing [l], drawing length

# Slot kinds (see dataset/dxf_process_DeepDXF.py): 1 X, 2 Y, 3 L, 4 A, 5 N, 6 S.
_CONTINUOUS = np.isin(KIND_MATRIX, (1, 2, 3, 4, 6))  # [N_TYPES, N_PARAMS]: jitter these
_IS_X = KIND_MATRIX == 1
_IS_Y = KIND_MATRIX == 2


def deepdxf_folder(data_dir: str | Path) -> Path:
    """``<data_dir>/DeepDXF`` if it exists, else ``data_dir`` itself (a folder of .h5)."""
    data_dir = Path(data_dir)
    sub = data_dir / "DeepDXF"
    return sub if sub.is_dir() else data_dir


def load_deepdxf_dir(data_dir: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """Read every drawing of a preprocessing output folder once.

    Args:
        data_dir: the ``--output`` of preprocessing (or directly a folder of .h5 files).
    Returns:
        (names sorted, arrays int32 [L_i, 14]); drawings without entities are skipped.
    """
    folder = deepdxf_folder(data_dir)
    paths = sorted(folder.glob("*.h5"))
    if not paths:
        raise FileNotFoundError(f"no DeepDXF .h5 files in {folder} (run python dataset/dxf_process.py first)")
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


def make_view(rows: np.ndarray, cfg: DeepDXFConfig, rng: np.random.Generator) -> list[Chunk]:
    """One augmented view of a drawing as chunks (SPEC §5 views).

    Args:
        rows: int [L, 14], L >= 1, handle order.
        cfg: augmentation switches ``DeepDXF_aug_*`` and their amounts.
        rng: numpy generator (seeded by the caller).
    Returns:
        Chunks ``(rows [l, 14], index [l], L)`` with 1 <= l <= chunk_len.
    """
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

class DeepDXFDataset(Dataset):
    """Drawings held in memory; item i is ``(i, rows int32 [L_i, 14])``."""

    def __init__(self, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> None:
        self.arrays = list(arrays)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.arrays))]

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        return i, self.arrays[i]

    @property
    def lengths(self) -> np.ndarray:
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
    "LengthGroupedBatchSampler",
    "deepdxf_folder",
    "load_deepdxf_dir",
    "make_loader",
    "make_view",
    "two_view_batch",
]
