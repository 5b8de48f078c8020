"""DeepDXF drawings of a preprocessed folder and their two-view batches (``DeepDXF_train.py``).

* :func:`load_deepdxf_dir` lists the drawings (through the one reader
  ``dataset.archive.open_archive``: packed shards or ``DeepDXF/*.h5``), as
  :class:`ArchiveRows` read when used (memory independent of the archive) or all in memory.
* :class:`LengthGroupedBatchSampler` puts drawings of similar length into one batch
  (less padding), every drawing once per epoch, seeded.
* :class:`DeepDXFCollate` draws two views of each drawing of a batch
  (``dataset.loaders.views.deepdxf_two_views``) and pads them per batch into the
  model's ``DeepDXFBatch``; :func:`make_loader` puts them into a ``DataLoader``.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from config.DeepDXF_config import DeepDXFConfig
from dataset.archive import Archive, open_archive
from dataset.loaders.views import deepdxf_two_views
from model.DeepDXF_model import DeepDXFBatch

__all__ = ["ArchiveRows", "load_deepdxf_dir", "DeepDXFDataset", "LengthGroupedBatchSampler", "DeepDXFCollate",
           "make_loader"]

log = logging.getLogger(__name__)


class ArchiveRows(Sequence):
    """The DeepDXF rows of drawings ``indices`` of an archive (``dataset.archive``: packed
    shards or per-drawing files), read when an item is asked for: ``rows[i]`` is
    ``int32 [L_i, 14]``; nothing is kept in memory but the indices and ``lengths`` (``int64 [n]``)."""

    def __init__(self, archive: Archive, indices: np.ndarray, lengths: np.ndarray) -> None:
        self.archive = archive
        self.indices = np.asarray(indices, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.archive.rows(int(self.indices[i]))

    def subset(self, indices: Sequence[int]) -> "ArchiveRows":
        """The drawings ``indices`` (in that order), still read lazily."""
        ix = np.asarray(indices, dtype=np.int64)
        return ArchiveRows(self.archive, self.indices[ix], self.lengths[ix])

    def describe(self) -> str:
        """Where the rows are read, for logs."""
        return self.archive.describe()


def load_deepdxf_dir(data_dir: str | Path, *, lazy: bool = False) -> tuple[list[str], Sequence[np.ndarray]]:
    """The DeepDXF drawings of a preprocessing output folder (or of a folder of ``.h5`` files).

    Args:
        data_dir: the ``--output`` of preprocessing.
        lazy: return :class:`ArchiveRows` that read each drawing when it is used instead
            of reading every drawing now.
    Returns:
        (names sorted, rows int32 [L_i, 14] per drawing); drawings without entities are left out.
    Raises:
        dataset.archive.NoEncodingsError: (a ``FileNotFoundError``) no DeepDXF encoding there.
    """
    archive = open_archive(data_dir, need="deepdxf")
    lengths = archive.lengths()
    keep = np.flatnonzero(lengths > 0)
    if len(keep) < len(lengths):
        log.info("skipped %d of %d drawings without entities", len(lengths) - len(keep), len(lengths))
    names = archive.names()
    rows = ArchiveRows(archive, keep, lengths[keep])
    return [names[i] for i in keep], (rows if lazy else [rows[i] for i in range(len(rows))])


class DeepDXFDataset(Dataset):
    """Item i is ``(i, rows int32 [L_i, 14])`` of ``arrays``: a list of arrays in memory,
    or :class:`ArchiveRows` that reads each drawing when asked."""

    def __init__(self, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> None:
        self.arrays = arrays if isinstance(arrays, ArchiveRows) else list(arrays)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.arrays))]

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        return i, self.arrays[i]

    @property
    def lengths(self) -> np.ndarray:
        if isinstance(self.arrays, ArchiveRows):
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

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, *, shuffle: bool = True,
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


class DeepDXFCollate:
    """Collate ``(i, rows)`` items into two augmented, per-batch padded views.

    Args:
        cfg: view settings.
        seed: seed of the view generator; ``reset()`` restarts it (validation uses the
            same views every epoch, so its loss is comparable across epochs).
        pad_to_chunk_len: pad chunks to C instead of the longest chunk of the batch.
    """

    def __init__(self, cfg: DeepDXFConfig, seed: int = 0, *, pad_to_chunk_len: bool = False) -> None:
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
        return deepdxf_two_views(items, self.cfg, self.rng, pad_to_chunk_len=self.pad_to_chunk_len)


def make_loader(arrays: Sequence[np.ndarray], cfg: DeepDXFConfig, *, train: bool, seed: int,
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
