"""Joint batches: the same drawings for the GF and the DeepDXF model at every step (SPEC §6).

A drawing belongs to the joint set when both encodings exist (``GF/<name>.npz`` and
``DeepDXF/<name>.h5``, matched by name). One grouped split by drawing serves both
models; the trainer gives it (``utils.splits``: a saved ``Split`` or ``make_split``),
this module only needs its index lists (:class:`SplitLike`).

Batches of one epoch: the part's drawings are shuffled once (seeded by the seed and
the epoch) and cut into ``n_batches = ceil(n / (2 GF_batch_size))`` consecutive parts
of nearly equal size (``np.array_split``). Part k is GF batch k *and* DeepDXF batch
k, so both loaders give the same number of batches (``len(gf_train_loader)``) and
the DeepDXF batch size is ``int(n / len(gf_train_loader))`` (SPEC §6; a part may hold
one drawing more when the division is not exact). In a GF batch the part's first
half is paired with its second half (SPEC §4 pairs; an odd leftover is paired with
a drawing of another part). Views are seeded per (seed, epoch, part), so a batch
looks the same whatever the number of processes or accumulation steps.

Several processes (DDP): rank r takes parts r, r + W, r + 2W, ... (wrapping around
so that every rank has the same number of steps).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch

from config.joint_config import JointConfig
from model.DeepDXF_dataset import DeepDXFBatch, DeepDXFCollate, load_deepdxf_dir
from model.GF_dataset import GFGraphs, load_gf_graphs
from model.joint_loss import JointBatch


VAL_SEED = 12345  # validation/test order and views: the same every epoch


class JointDataError(RuntimeError):
    """No drawing has both encodings, or too few for a split."""


class SplitLike(Protocol):
    """What the loaders need of a split (``utils.splits.Split`` is one).

    Attributes:
        names: the drawings the indices refer to.
        test: indices of the test drawings.
        folds: ``folds[i] = (train indices, validation indices)``.
    """

    names: list[str]
    test: list[int]
    folds: list[tuple[list[int], list[int]]]

    @property
    def n_folds(self) -> int: ...


#: ``make_split(names, test_fraction, k_folds, seed, group_pattern)`` (``utils.splits.make_split``).
SplitMaker = Callable[[Sequence[str], float, int, int, str], SplitLike]


def epoch_parts(n: int, n_batches: int, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """The batches (as positions 0..n-1) of one epoch: a seeded permutation cut into ``n_batches`` parts."""
    if n == 0:
        return []
    rng = np.random.default_rng([seed, epoch if shuffle else 0])
    order = rng.permutation(n)
    return [p for p in np.array_split(order, max(1, min(n_batches, n))) if len(p)]


def shard_parts(n_parts: int, rank: int, world_size: int) -> list[int]:
    """Part numbers of one rank: r, r + W, ... wrapped so every rank gets ceil(n / W)."""
    if n_parts == 0:
        return []
    per_rank = math.ceil(n_parts / world_size)
    return [(rank + world_size * j) % n_parts for j in range(per_rank)]


class JointLoader:
    """Iterates :class:`JointBatch` items over a subset of the joint drawings.

    Args:
        graphs: GF graphs of **all** joint drawings (row i = drawing i).
        arrays: DeepDXF rows of all joint drawings (same order).
        indices: the drawings of this loader (e.g. a fold's training part).
        cfg: the joint config (GF_batch_size, DeepDXF views, max_steps_per_epoch).
        shuffle: a new order every epoch (training) or a fixed one (validation, test).
        seed: seed of order and views.
        rank, world_size: DDP sharding of the batches.
        max_steps: at most this many batches per rank and epoch (0 = all).

    ``len(loader)`` is the number of batches this rank gets; :attr:`n_batches` the
    global number; :attr:`deepdxf_batch_size` the derived DeepDXF batch size.
    ``set_epoch(e)`` changes the order (training) before each epoch.
    """

    def __init__(self, graphs: GFGraphs, arrays: Sequence[np.ndarray], indices: Sequence[int], cfg: JointConfig,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1, max_steps: int = 0) -> None:
        self.graphs = graphs
        self.arrays = arrays
        self.indices = np.asarray(list(indices), dtype=np.int64)
        self.cfg = cfg
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.max_steps = max_steps
        self.epoch = 0
        n = len(self.indices)
        self.n_batches = math.ceil(n / (2 * cfg.GF_batch_size)) if n else 0
        self.deepdxf_batch_size = int(n / self.n_batches) if self.n_batches else 0
        self.collate = DeepDXFCollate(cfg.deepdxf_config(self.deepdxf_batch_size or None), seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def parts(self) -> list[tuple[int, np.ndarray]]:
        """``(part number, drawing indices)`` of this rank for the current epoch."""
        parts = epoch_parts(len(self.indices), self.n_batches, self.seed, self.epoch, self.shuffle)
        mine = shard_parts(len(parts), self.rank, self.world_size)
        if self.max_steps > 0:
            mine = mine[: self.max_steps]
        return [(k, self.indices[parts[k]]) for k in mine]

    def __len__(self) -> int:
        return len(self.parts())

    def _pairs(self, part: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """GF pairs of one part: first half with second half; an odd leftover meets a drawing of another part."""
        h = len(part) // 2
        first, second = part[:h], part[h:2 * h]
        if len(part) % 2:
            others = np.setdiff1d(self.indices, part)
            partner = rng.choice(others) if len(others) else part[0]
            first, second = np.append(first, part[-1]), np.append(second, partner)
        return first, second

    def make_batch(self, k: int, part: np.ndarray) -> JointBatch:
        """The joint batch of part ``k`` (drawings ``part``), with its seeded views."""
        view_seed = [self.seed, self.epoch if self.shuffle else 0, k]
        rng = np.random.default_rng(view_seed)
        first, second = self._pairs(part, rng)
        g = self.graphs
        f, s, p = torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(part)
        gf_pairs = (g.features[f], g.adjacency[f], g.mask[f], g.features[s], g.adjacency[s], g.mask[s])
        self.collate.reset(int(np.random.SeedSequence(view_seed).generate_state(1)[0]))
        dx: DeepDXFBatch = self.collate([(int(i), self.arrays[i]) for i in part])
        return JointBatch(gf_pairs, (g.features[p], g.adjacency[p], g.mask[p]), dx, p, k)

    def view_generator_seed(self, k: int) -> int:
        """Seed of the GF view generator of part ``k`` this epoch."""
        return int(np.random.SeedSequence([self.seed, self.epoch if self.shuffle else 0, k, 1]).generate_state(1)[0])

    def __iter__(self) -> Iterator[JointBatch]:
        for k, part in self.parts():
            yield self.make_batch(k, part)

    # The two views of one loader, for callers that want them apart (same batches, same order).
    def gf_batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """The GF pair batches of this epoch (``GFPairLoader`` layout)."""
        for b in self:
            yield b.gf_pairs

    def deepdxf_batches(self) -> Iterator[DeepDXFBatch]:
        """The DeepDXF batches of this epoch."""
        for b in self:
            yield b.deepdxf


class JointDataLoader:
    """The joint drawings of a data folder, their split, and fold/test loaders.

    Args:
        cfg: joint config (data_dir, split settings, batch sizes).
        rank, world_size: DDP sharding (single process: 0, 1).
        graphs, names, arrays: already loaded data instead of ``cfg.data_dir``
            (tests): ``graphs`` GF graphs and ``names``/``arrays`` DeepDXF drawings.
        split: the split of the joint drawings (e.g. a resumed run's saved split);
            its ``names`` must be the joint drawings.
        make_split: when ``split`` is None, called as ``make_split(names,
            cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern)`` on the joint
            drawings (pass ``utils.splits.make_split``).

    Raises:
        JointDataError: fewer than 4 joint drawings, or ``split`` is of other drawings.
        TypeError: neither ``split`` nor ``make_split`` is given.

    Attributes: ``names`` (joint drawings, sorted), ``graphs``, ``arrays``, ``split``.
    """

    def __init__(self, cfg: JointConfig, rank: int = 0, world_size: int = 1, graphs: Optional[GFGraphs] = None,
                 names: Optional[Sequence[str]] = None, arrays: Optional[Sequence[np.ndarray]] = None,
                 split: Optional[SplitLike] = None, make_split: Optional[SplitMaker] = None) -> None:
        if split is None and make_split is None:
            raise TypeError("JointDataLoader needs a split or a make_split function (utils.splits.make_split)")
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        if graphs is None:
            graphs = load_gf_graphs(cfg.data_dir, layout=cfg.GF_layout_features)
        if names is None or arrays is None:
            names, arrays = load_deepdxf_dir(cfg.data_dir)
        gf_pos = {n: i for i, n in enumerate(graphs.names)}
        dx_pos = {n: i for i, n in enumerate(names)}
        joint = sorted(set(gf_pos) & set(dx_pos))
        self.only_gf = sorted(set(gf_pos) - set(dx_pos))
        self.only_deepdxf = sorted(set(dx_pos) - set(gf_pos))
        if len(joint) < 4:
            raise JointDataError(
                f"{len(joint)} drawing(s) have both a GF and a DeepDXF encoding in {cfg.data_dir}: "
                "at least 4 are needed (run python dataset/dxf_process.py)")
        self.names = joint
        self.graphs = graphs.subset([gf_pos[n] for n in joint])
        self.arrays = [arrays[dx_pos[n]] for n in joint]
        if split is None:
            split = make_split(joint, cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern)
        elif list(split.names) != joint:
            raise JointDataError(f"the given split is of {len(split.names)} other drawings, not of the "
                                 f"{len(joint)} joint drawings in {cfg.data_dir}")
        self.split: SplitLike = split

    def describe(self) -> str:
        """One line for the log: how many drawings, how many had only one encoding."""
        extra = ""
        if self.only_gf or self.only_deepdxf:
            extra = (f" ({len(self.only_gf)} with only a GF and {len(self.only_deepdxf)} with only a "
                     "DeepDXF encoding left out)")
        return (f"{len(self.names)} drawings with both encodings{extra}; test {len(self.split.test)}, "
                f"{self.split.n_folds} folds")

    def _loader(self, indices: Sequence[int], shuffle: bool, seed: int, max_steps: int = 0) -> JointLoader:
        return JointLoader(self.graphs, self.arrays, indices, self.cfg, shuffle=shuffle, seed=seed,
                           rank=self.rank, world_size=self.world_size, max_steps=max_steps)

    def get_fold_loaders(self, fold: int) -> tuple[JointLoader, JointLoader]:
        """(train, validation) loaders of ``fold``; training reshuffles with ``set_epoch``."""
        if not 0 <= fold < self.split.n_folds:
            raise IndexError(f"fold {fold} is not one of the split's {self.split.n_folds} folds")
        train_idx, val_idx = self.split.folds[fold]
        train = self._loader(train_idx, True, self.cfg.seed + 1000 * fold, self.cfg.max_steps_per_epoch)
        val = self._loader(val_idx, False, VAL_SEED)
        return train, val

    def get_test_loaders(self) -> JointLoader:
        """The test loader (fixed order and views)."""
        return self._loader(self.split.test, False, VAL_SEED)


__all__ = ["JointDataError", "JointDataLoader", "JointLoader", "SplitLike", "SplitMaker", "epoch_parts",
           "shard_parts", "VAL_SEED"]
