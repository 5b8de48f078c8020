"""Joint batches streamed from disk: the same drawings for the GF and the DeepDXF model at every step.

The drawings come from the one reader of a preprocessed folder
(``dataset.archive.open_archive``): a packed folder (``<data_dir>/packed/shard-*.h5``)
or the per-drawing folders ``GF/<name>.npz`` + ``DeepDXF/<name>.h5``. A drawing belongs to the joint set when both encodings exist
and it has at least one entity. Nothing but small index arrays stays in memory: each
batch reads its drawings when it is built, so the memory of a training process does
not grow with the archive. One grouped split by drawing serves both models; the
trainer gives it (``utils.train.splits``: a saved ``Split`` or ``make_split``), this
module only needs its index lists (:class:`SplitLike`).

Batches of one epoch: the part's drawings are shuffled once (seeded by the seed and
the epoch) and cut into ``n_batches = ceil(n / (2 GF_batch_size))`` consecutive parts
of nearly equal size (``np.array_split``). Part k is GF batch k *and* DeepDXF batch
k, so both loaders give the same number of batches (``len(gf_train_loader)``) and
the DeepDXF batch size is ``int(n / len(gf_train_loader))`` (a part may hold
one drawing more when the division is not exact). In a GF batch the part's first
half is paired with its second half (pairs; an odd leftover is paired with
a drawing of another part). The views of both models are drawn from the seed of the
part, (seed, epoch, part) (``dataset.loaders.views.part_generators``), so a batch
looks the same whatever the number of processes, accumulation steps or DataLoader
workers.

With the group term on (``--group_weight`` > 0) an epoch's order is drawn by group:
the groups (a source and its revisions, by ``--group_pattern``) are shuffled and
their drawings follow each other, so the drawings of a group land in one batch
(except where a cut falls inside a group) and the term sees them together.

The pieces, in ``torch.utils.data`` terms (bulk loading: the sampler yields whole
batches, so automatic batching is off, ``batch_size=None``):

* :class:`PartSampler` yields one :class:`PartRequest` per batch of this rank: the
  part number, its view seed, its drawings and the odd leftover's partner;
* :class:`JointDataset` reads a request's drawings from the archive (``dataset[request]``
  -> :class:`PartData`, numpy arrays);
* :class:`JointCollate` draws the views and builds the :class:`~model.joint_loss.JointBatch`
  (the two GF views of the pairs, the GF graphs, the two DeepDXF views, and with the
  group term the two GF views of every drawing);
* :class:`JointLoader` runs them through a ``torch.utils.data.DataLoader`` with
  ``cfg.num_workers`` worker processes (0 = reading and collating in the training
  process). Reading, views and padding happen in the workers; the batches are the
  same with any number of workers (the views use only the request's seed, and the
  DataLoader gets its own ``torch.Generator``, so the global torch RNG, which drives
  dropout, is not touched);
* :class:`JointData` opens the archive, finds the drawings with both encodings and
  gives the loaders of a fold and of the test part of a split.

Several processes (DDP): rank r takes parts r, r + W, r + 2W, ... (wrapping around so
that every rank has the same number of steps); evaluation takes them without the
wrap (every batch once over the ranks). This is the slice
``torch.utils.data.DistributedSampler(range(n_parts), W, r, shuffle=False)`` gives
(``shard_parts``); DistributedSampler itself is not used because it shards single
items, while our unit is a whole part of the epoch's permutation, which must not
depend on W.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from config.DeepDXF_config import DeepDXFConfig
from config.joint_config import JointConfig
from dataset.archive import Archive, open_archive
from dataset.loaders.views import VAL_SEED, GFViewRates, deepdxf_two_views, gf_pair_views, gf_two_views, part_generators
from model.GF_model import GraphBatch, node_mask
from model.joint_loss import JointBatch

__all__ = ["JointDataError", "SplitLike", "epoch_parts", "n_epoch_parts", "shard_parts", "view_seed_of",
           "PartRequest", "PartData", "PartSampler", "JointDataset", "JointCollate", "JointLoader", "JointData"]


class JointDataError(RuntimeError):
    """Fewer than 4 drawings with both encodings."""


class SplitLike(Protocol):
    """What the loaders need of a split (``utils.train.splits.Split`` is one).

    Attributes:
        names: the drawings the indices refer to.
        test: indices of the test drawings.
        folds: ``folds[i] = (train indices, validation indices)``.
        groups: the group of each name (``--group_pattern``), in ``names``' order.
    """

    names: list[str]
    groups: list[str]
    test: list[int]
    folds: list[tuple[list[int], list[int]]]

    @property
    def n_folds(self) -> int: ...


def epoch_parts(n: int, n_batches: int, seed: int, epoch: int, *, shuffle: bool = True,
                groups: Optional[np.ndarray] = None, clusters: Optional[np.ndarray] = None) -> list[np.ndarray]:
    """The batches (as positions 0..n-1) of one epoch: a seeded permutation cut into ``n_batches`` parts.

    ``groups``: [n] int group ids; given, the permutation keeps each group's positions
    together (groups in a random order, a random order inside each group).
    ``clusters``: [n] int cluster ids of the groups (``--hard_negatives``: the groups that the
    floors find alike share one); given with ``groups``, the groups of one cluster come one
    after another (clusters in a random order, groups in a random order inside each), so a
    batch holds look-alike groups.
    """
    if n == 0:
        return []
    rng = np.random.default_rng([seed, epoch if shuffle else 0])
    order = rng.permutation(n)
    if groups is not None:
        _, dense = np.unique(np.asarray(groups), return_inverse=True)
        group_rank = rng.permutation(int(dense.max()) + 1)
        order = order[np.argsort(group_rank[dense[order]], kind="stable")]
        if clusters is not None:
            _, cluster_ids = np.unique(np.asarray(clusters), return_inverse=True)
            cluster_rank = rng.permutation(int(cluster_ids.max()) + 1)
            order = order[np.argsort(cluster_rank[cluster_ids[order]], kind="stable")]
    return [p for p in np.array_split(order, max(1, min(n_batches, n))) if len(p)]


def n_epoch_parts(n: int, n_batches: int) -> int:
    """``len(epoch_parts(n, n_batches, ...))`` without drawing the permutation."""
    return max(1, min(n_batches, n)) if n else 0


def shard_parts(n_parts: int, rank: int, world_size: int) -> list[int]:
    """Part numbers of one rank: r, r + W, ... wrapped so every rank gets ceil(n / W)
    (the slice of ``DistributedSampler(range(n_parts), W, r, shuffle=False)``)."""
    if n_parts == 0:
        return []
    per_rank = math.ceil(n_parts / world_size)
    return [(rank + world_size * j) % n_parts for j in range(per_rank)]


def view_seed_of(seed: int, epoch: int, part: int) -> tuple[int, int, int]:
    """The seed of part ``part``'s views (``epoch`` is 0 for a fixed-order loader)."""
    return (int(seed), int(epoch), int(part))


def _nth_other(sorted_all: np.ndarray, part: np.ndarray, j: int) -> int:
    """``np.setdiff1d(sorted_all, part)[j]`` without building the difference (O(|part| log n)).

    ``sorted_all``: sorted unique indices [n]; ``part``: a subset of them.
    """
    pos = np.sort(np.searchsorted(sorted_all, part))
    t = j + int(np.searchsorted(pos - np.arange(len(pos)), j, side="right"))
    return int(sorted_all[t])


@dataclass(frozen=True)
class PartRequest:
    """One batch to build: what :class:`PartSampler` yields and :class:`JointDataset` reads.

    Attributes:
        part: the part number k in this epoch (seeds the views).
        view_seed: ``(seed, epoch, k)``.
        index: [B] int64 joint-drawing indices, in batch order.
        partner: the joint index paired with the odd leftover (the part's last drawing), -1 when B is even.
        groups: [B] int64 group ids of the drawings (group term on), else None.
    """

    part: int
    view_seed: tuple[int, int, int]
    index: np.ndarray
    partner: int = -1
    groups: Optional[np.ndarray] = None


@dataclass
class PartData:
    """The drawings of one :class:`PartRequest`, read from the archive (numpy, picklable).

    Attributes:
        request: the request.
        features: [B + p, 10, 11] float32: the B drawings, then the partner (p = 1) if any.
        adjacency: [B + p, 10, 10] float32, same rows.
        rows: B arrays int32 [L_i, 14], DeepDXF rows of the B drawings.
    """

    request: PartRequest
    features: np.ndarray
    adjacency: np.ndarray
    rows: list[np.ndarray]


class PartSampler(Sampler[PartRequest]):
    """The batches of one rank and epoch as :class:`PartRequest` items.

    Args:
        indices: the loader's drawings (joint indices, e.g. a fold's training part).
        n_batches: parts per epoch (all ranks together).
        seed: seed of the order, the pairing and the views.
        shuffle: a new order every epoch (training) or a fixed one (validation, test).
        rank, world_size: DDP sharding of the parts.
        max_steps: at most this many parts per rank (0 = all).
        wrap: True (training): every rank gets ``ceil(n_parts / W)`` parts, wrapping
            around; False (evaluation): parts r, r + W, ... < n_parts, each part once
            over all ranks.
        groups: [len(indices)] int64 group ids of ``indices`` (group term on): parts keep
            groups together (:func:`epoch_parts`) and carry their ids.
        clusters: [len(indices)] int64 cluster ids of the drawings' groups (``--hard_negatives``):
            parts hold groups of one cluster (:func:`epoch_parts`).

    Memory: ``indices``, their sorted copy and ``groups`` (int64), nothing per drawing else.
    """

    def __init__(self, indices: Sequence[int] | np.ndarray, n_batches: int, seed: int, *, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, max_steps: int = 0, wrap: bool = True,
                 groups: Optional[np.ndarray] = None, clusters: Optional[np.ndarray] = None) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.clusters = None if clusters is None else np.asarray(clusters, dtype=np.int64)
        if self.clusters is not None and len(self.clusters) != len(self.indices):
            raise ValueError(f"{len(self.clusters)} cluster ids for {len(self.indices)} drawings")
        self.sorted = np.unique(self.indices)
        self.n_batches = n_batches
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.max_steps = max_steps
        self.wrap = wrap
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def evaluation_copy(self) -> "PartSampler":
        """The same order with ``wrap=False``: every part once over all ranks."""
        other = copy.copy(self)
        other.wrap = False
        return other

    def part_numbers(self) -> list[int]:
        """This rank's part numbers, in the order they are trained."""
        n_parts = n_epoch_parts(len(self.indices), self.n_batches)
        mine = (shard_parts(n_parts, self.rank, self.world_size) if self.wrap
                else list(range(self.rank, n_parts, self.world_size)))
        return mine[: self.max_steps] if self.max_steps > 0 else mine

    def __len__(self) -> int:
        return len(self.part_numbers())

    def __iter__(self) -> Iterator[PartRequest]:
        mine = self.part_numbers()
        if not mine:
            return
        epoch = self.epoch if self.shuffle else 0
        parts = epoch_parts(len(self.indices), self.n_batches, self.seed, self.epoch, shuffle=self.shuffle,
                            groups=self.groups, clusters=self.clusters)
        for k in mine:
            index = self.indices[parts[k]]
            groups = None if self.groups is None else self.groups[parts[k]]
            seed = view_seed_of(self.seed, epoch, k)
            partner = -1
            if len(index) % 2:  # the odd leftover meets a drawing of another part
                rng = np.random.default_rng(list(seed))
                n_others = len(self.sorted) - len(index)
                partner = _nth_other(self.sorted, index, int(rng.choice(n_others))) if n_others > 0 else int(index[0])
            yield PartRequest(k, seed, index, partner, groups)


class JointDataset(Dataset):
    """The joint drawings of an archive, read lazily; ``dataset[request]`` reads one batch.

    Args:
        archive: the reader (``dataset.archive.open_archive``).
        ids: [n] int64, ``ids[i]`` = archive position of joint drawing i.

    Item ``dataset[PartRequest]`` is the :class:`PartData` of the request (bulk loading:
    a DataLoader over this dataset runs with ``batch_size=None`` and a :class:`PartSampler`).
    """

    def __init__(self, archive: Archive, ids: np.ndarray, *, layout: bool = False) -> None:
        self.archive = archive
        self.ids = np.asarray(ids, dtype=np.int64)
        self.layout = layout

    def __len__(self) -> int:
        return len(self.ids)

    def graph(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(features float32 [10, F], adjacency float32 [10, 10])`` of joint drawing i:
        ``F = 11``, or ``11 + LAYOUT_DIM`` with the class layout appended (``layout=True``)."""
        features, adjacency = self.archive.graph(int(self.ids[i]))
        if self.layout:
            features = np.concatenate([features, self.archive.gf_layout(int(self.ids[i]))], axis=1)
        return features, adjacency

    def rows(self, i: int) -> np.ndarray:
        """DeepDXF rows int32 ``[L, 14]`` of joint drawing i."""
        return np.asarray(self.archive.rows(int(self.ids[i])), dtype=np.int32)

    def __getitem__(self, request: PartRequest) -> PartData:
        graph_idx = list(request.index) + ([request.partner] if request.partner >= 0 else [])
        graphs = [self.graph(int(i)) for i in graph_idx]
        features = np.stack([np.asarray(f, dtype=np.float32) for f, _ in graphs])
        adjacency = np.stack([np.asarray(a, dtype=np.float32) for _, a in graphs])
        return PartData(request, features, adjacency, [self.rows(int(i)) for i in request.index])


class JointCollate:
    """Draw the views of a :class:`PartData` and build its :class:`JointBatch` (runs in the
    DataLoader workers).

    GF pairs: the part's first half with its second half, the odd leftover with the
    partner. Every view comes from the part's generators (``part_generators(view_seed)``):
    the GF views of the pairs, then (group term on) two GF views of every drawing, from
    the GF one; two DeepDXF views of every drawing from the DeepDXF one.

    Args:
        cfg: the joint config (GF view rates, DeepDXF view settings, group term on or off).
        deepdxf_batch_size: the derived DeepDXF batch size (``JointConfig.deepdxf_config``).
    """

    def __init__(self, cfg: JointConfig, deepdxf_batch_size: Optional[int] = None) -> None:
        self.deepdxf_cfg: DeepDXFConfig = cfg.deepdxf_config(deepdxf_batch_size)
        self.rates = GFViewRates.of(cfg)
        self.group_views = cfg.group_weight > 0

    def __call__(self, data: PartData) -> JointBatch:
        req = data.request
        b = len(req.index)
        h = b // 2
        first, second = np.arange(h), np.arange(h, 2 * h)
        if b % 2:
            first, second = np.append(first, b - 1), np.append(second, b)
        feats, adj = torch.from_numpy(data.features), torch.from_numpy(data.adjacency)
        graphs = GraphBatch(feats, adj, node_mask(feats, adj))
        f, s = torch.from_numpy(first), torch.from_numpy(second)
        dx_rng, gf_gen = part_generators(req.view_seed)
        gf_views = gf_pair_views(GraphBatch(feats[f], adj[f], graphs.mask[f]),
                                 GraphBatch(feats[s], adj[s], graphs.mask[s]), self.rates, gf_gen)
        own = GraphBatch(feats[:b], adj[:b], graphs.mask[:b])
        group_views = gf_two_views(own, self.rates, gf_gen) if self.group_views else None
        dx = deepdxf_two_views([(int(i), r) for i, r in zip(req.index, data.rows)], self.deepdxf_cfg, dx_rng)
        index = torch.from_numpy(np.ascontiguousarray(req.index))
        group = None if req.groups is None else torch.from_numpy(np.ascontiguousarray(req.groups))
        return JointBatch(gf_views, own, dx, index, req.part, group, group_views)


class JointLoader:
    """Iterates :class:`JointBatch` items over a subset of the joint drawings.

    Args:
        dataset: the joint drawings (:class:`JointDataset`).
        indices: the drawings of this loader (e.g. a fold's training part).
        cfg: the joint config (GF_batch_size, DeepDXF views, num_workers).
        shuffle: a new order every epoch (training) or a fixed one (validation, test).
        seed: seed of order and views.
        rank, world_size: DDP sharding of the batches.
        max_steps: at most this many batches per rank and epoch (0 = all).
        groups: [len(indices)] int64 group ids of ``indices`` for the group term
            (batches keep groups together and carry the ids); None: off.
        clusters: [len(indices)] int64 cluster ids of their groups (``--hard_negatives``:
            batches hold look-alike groups); None: groups in a random order.

    ``len(loader)`` is the number of batches this rank gets; :attr:`n_batches` the
    global number; :attr:`deepdxf_batch_size` the derived DeepDXF batch size.
    ``set_epoch(e)`` changes the order (training) before each epoch.
    """

    def __init__(self, dataset: JointDataset, indices: Sequence[int], cfg: JointConfig, *, shuffle: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1, max_steps: int = 0,
                 groups: Optional[np.ndarray] = None, clusters: Optional[np.ndarray] = None) -> None:
        self.dataset = dataset
        self.cfg = cfg
        self.num_workers = int(getattr(cfg, "num_workers", 0))
        n = len(indices)
        self.n_batches = math.ceil(n / (2 * cfg.GF_batch_size)) if n else 0
        self.deepdxf_batch_size = int(n / self.n_batches) if self.n_batches else 0
        self.collate = JointCollate(cfg, self.deepdxf_batch_size or None)
        # The order (drawings, groups, seed, epoch, sharding) lives in one sampler.
        self.part_sampler = PartSampler(indices, self.n_batches, seed, shuffle=shuffle, rank=rank,
                                        world_size=world_size, max_steps=max_steps, wrap=True, groups=groups,
                                        clusters=clusters)

    @property
    def indices(self) -> np.ndarray:
        """[n] int64 joint indices of this loader's drawings."""
        return self.part_sampler.indices

    @property
    def seed(self) -> int:
        return self.part_sampler.seed

    def set_epoch(self, epoch: int) -> None:
        self.part_sampler.set_epoch(epoch)

    def sampler(self, *, wrap: bool = True) -> PartSampler:
        """This epoch's :class:`PartSampler` (``wrap=False``: evaluation, every part once over the ranks)."""
        return self.part_sampler if wrap else self.part_sampler.evaluation_copy()

    def parts(self) -> list[tuple[int, np.ndarray]]:
        """``(part number, drawing indices)`` of this rank for the current epoch."""
        return [(r.part, r.index) for r in self.sampler()]

    def __len__(self) -> int:
        return len(self.sampler())

    def batches(self, *, wrap: bool = True) -> Iterator[JointBatch]:
        """This epoch's batches of this rank, read and collated by ``cfg.num_workers`` DataLoader workers."""
        sampler = self.sampler(wrap=wrap)
        if len(sampler) == 0:
            return
        workers = self.num_workers
        if workers > 0:
            # an HDF5 handle must not cross a fork: the workers open their own
            self.dataset.archive.close()
        loader = DataLoader(self.dataset, batch_size=None, sampler=sampler, collate_fn=self.collate,
                            num_workers=workers, prefetch_factor=2 if workers else None,
                            generator=torch.Generator().manual_seed(self.seed))
        yield from loader

    def __iter__(self) -> Iterator[JointBatch]:
        return self.batches(wrap=True)


class JointData:
    """The drawings of a data folder that have both encodings, and the loaders of a split of them.

    Args:
        cfg: joint config (data_dir, batch sizes, group term, num_workers).
        rank, world_size: DDP sharding (single process: 0, 1).
        archive: an opened archive instead of ``open_archive(cfg.data_dir)``.

    Raises:
        dataset.archive.ArchiveError: ``cfg.data_dir`` holds neither a packed archive nor
            drawings with both encodings (the message says how to preprocess).
        JointDataError: fewer than 4 joint drawings.

    Attributes: ``names`` (joint drawings, sorted: what a split of them indexes),
    ``dataset`` (:class:`JointDataset`), ``archive``, ``only_gf``/``only_deepdxf`` (names
    left out for a missing encoding), ``n_empty`` (left out for having no entity).
    Memory: the names (for the split) and int64 index arrays; no drawing is held.
    """

    def __init__(self, cfg: JointConfig, rank: int = 0, world_size: int = 1, *,
                 archive: Optional[Archive] = None) -> None:
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.archive: Archive = archive if archive is not None else open_archive(cfg.data_dir)
        self.only_gf, self.only_deepdxf = self.archive.unpaired()
        lengths = self.archive.lengths()
        ids = np.flatnonzero(lengths > 0).astype(np.int64)
        self.n_empty = int(len(lengths) - len(ids))
        del lengths
        if len(ids) < 4:
            raise JointDataError(
                f"{len(ids)} drawing(s) have both a GF and a DeepDXF encoding (and entities) in {cfg.data_dir}: "
                "at least 4 are needed (run python dataset/dxf_process.py)")
        all_names = self.archive.names()
        self.names: list[str] = all_names if self.n_empty == 0 else [all_names[i] for i in ids]
        del all_names
        self.dataset = JointDataset(self.archive, ids, layout=cfg.GF_layout_features)
        #: the group term's label of every joint drawing (``names``' order); None: the split's groups
        self.group_labels: Optional[list[str]] = None

    def use_group_labels(self, labels: Sequence[str]) -> None:
        """Give the group term these labels instead of the split's ``--group_pattern`` groups
        (``names``' order; e.g. the split's groups merged with a user's groups file)."""
        if len(labels) != len(self.names):
            raise JointDataError(f"{len(labels)} group labels for {len(self.names)} drawings")
        self.group_labels = list(labels)

    @property
    def layout(self) -> str:
        """``"packed"`` or ``"folders"``."""
        return self.archive.layout

    def describe(self, split: SplitLike) -> str:
        """One line for the log: the layout, how many drawings, how many were left out, the split."""
        left = []
        if self.only_gf or self.only_deepdxf:
            left.append(f"{len(self.only_gf)} with only a GF and {len(self.only_deepdxf)} with only a DeepDXF encoding")
        if self.n_empty:
            left.append(f"{self.n_empty} without entities")
        extra = f" ({' and '.join(left)} left out)" if left else ""
        return (f"{len(self.names)} drawings with both encodings{extra} from {self.archive.describe()}; "
                f"test {len(split.test)}, {split.n_folds} folds")

    def group_ids(self, split: SplitLike, indices: Sequence[int]) -> Optional[np.ndarray]:
        """[len(indices)] int64 group ids of the group term (the split's ``--group_pattern`` groups,
        or :meth:`use_group_labels`'), a dense id per group in order of appearance; None when the
        group term is off."""
        if self.cfg.group_weight <= 0:
            return None
        first_seen: dict[str, int] = {}
        labels = self.group_labels if self.group_labels is not None else split.groups
        ids = np.fromiter((first_seen.setdefault(g, len(first_seen)) for g in labels), dtype=np.int64,
                          count=len(labels))
        return ids[np.asarray(indices, dtype=np.int64)]

    def _loader(self, split: SplitLike, indices: Sequence[int], *, shuffle: bool, seed: int,
                max_steps: int = 0, clusters: Optional[np.ndarray] = None) -> JointLoader:
        groups = self.group_ids(split, indices)
        return JointLoader(self.dataset, indices, self.cfg, shuffle=shuffle, seed=seed, rank=self.rank,
                           world_size=self.world_size, max_steps=max_steps, groups=groups,
                           clusters=clusters if groups is not None else None)

    def fold_loaders(self, split: SplitLike, fold: int, train_clusters: Optional[np.ndarray] = None
                     ) -> tuple[JointLoader, JointLoader]:
        """(train, validation) loaders of ``fold`` of ``split``; training reshuffles with ``set_epoch``.
        ``train_clusters``: [len(train part)] cluster ids of the training drawings' groups
        (``--hard_negatives``: training batches hold look-alike groups)."""
        if not 0 <= fold < split.n_folds:
            raise IndexError(f"fold {fold} is not one of the split's {split.n_folds} folds")
        train_idx, val_idx = split.folds[fold]
        train = self._loader(split, train_idx, shuffle=True, seed=self.cfg.seed + 1000 * fold,
                             max_steps=self.cfg.max_steps_per_epoch, clusters=train_clusters)
        return train, self._loader(split, val_idx, shuffle=False, seed=VAL_SEED)

    def test_loader(self, split: SplitLike) -> JointLoader:
        """The loader of the test part of ``split`` (fixed order and views)."""
        return self._loader(split, split.test, shuffle=False, seed=VAL_SEED)
