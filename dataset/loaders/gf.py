"""GF graphs of a preprocessed folder and their pair batches (``GF_main.py``).

All graphs are read once (:func:`load_gf_graphs`, through the one reader
``dataset.archive.open_archive``) into three tensors (they are tiny: 10 nodes each),
so a batch is an index into them, on whatever device they were moved to.

Pairs: each epoch the graphs are shuffled; every batch holds ``2 × batch_size``
distinct graphs paired into ``batch_size`` pairs (first half with second half);
every graph is used once per epoch. The last batch may be smaller. With an odd
number of graphs, the one left over joins the last batch (which then may hold
``batch_size + 1`` pairs), paired with a graph drawn from an earlier batch, so the
graphs of a batch stay distinct; only when everything fits in one batch does that
partner come from the same batch. :class:`GFPairLoader` yields the two views of
every graph of a batch (``dataset.loaders.views.gf_pair_views``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from dataset.archive import ArchiveError, open_archive
from dataset.loaders.views import GFViewRates, gf_pair_views
from model.GF_model import GraphBatch, PairViews, node_mask

__all__ = ["GFDataError", "GFGraphs", "load_gf_graphs", "pair_indices", "GFPairLoader"]


class GFDataError(RuntimeError):
    """The GF folder is missing, empty, or holds a file of the wrong shape."""


@dataclass
class GFGraphs:
    """A set of GF graphs as stacked tensors.

    Attributes:
        names: drawing names (docs/architecture.md), length G.
        features: ``[G, 10, F]`` float32 (F = 11, or 11 + LAYOUT_DIM with the class layout).
        adjacency: ``[G, 10, 10]`` float32, symmetric 0/1.
        mask: ``[G, 10]`` bool, classes present in the drawing.
        source: where they were read (packed archive or GF folder), for logs.
    """

    names: list[str]
    features: Tensor
    adjacency: Tensor
    mask: Tensor
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> "GFGraphs":
        """The graphs at ``indices`` (e.g. one side of a split)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.features.device)
        return GFGraphs([self.names[i] for i in idx.tolist()], self.features[idx], self.adjacency[idx], self.mask[idx],
                        self.source)

    def to(self, device: str | torch.device) -> "GFGraphs":
        """A copy on ``device``."""
        return GFGraphs(self.names, self.features.to(device), self.adjacency.to(device), self.mask.to(device),
                        self.source)

    def batch(self, idx: Tensor) -> GraphBatch:
        """The graphs at ``idx`` (a long tensor on their device)."""
        return GraphBatch(self.features[idx], self.adjacency[idx], self.mask[idx])


def load_gf_graphs(data_dir: str | Path, names: Optional[Sequence[str]] = None, *, layout: bool = False) -> GFGraphs:
    """Every GF graph of a preprocessed folder (sorted by name), or only ``names``: from its
    packed shards when it has any, else from ``<data_dir>/GF/*.npz``.

    ``layout``: append each drawing's ``layout`` array ``[10, LAYOUT_DIM]`` to the node
    features (``[G, 10, 11 + LAYOUT_DIM]``); the node mask comes from the 11 GF features alone.

    Raises:
        GFDataError: nothing to read, a drawing of ``names`` missing, a file of the wrong
            shape (the message names the file and says how to preprocess).
    """
    try:
        archive = open_archive(data_dir, need="gf")
        try:
            feats, adjs, lays = archive.graph_arrays(layout=layout)
            all_names = archive.names()
        finally:
            archive.close()
    except ArchiveError as err:
        raise GFDataError(str(err)) from err
    where = {n: i for i, n in enumerate(all_names)}
    wanted = all_names if names is None else list(names)
    missing = [n for n in wanted if n not in where]
    if missing:
        raise GFDataError(f"{len(missing)} drawing(s) not in the {archive.describe()}, e.g. {missing[0]!r}")
    idx = np.fromiter((where[n] for n in wanted), dtype=np.int64, count=len(wanted))
    features, adjacency = torch.from_numpy(feats[idx]), torch.from_numpy(adjs[idx])
    mask = node_mask(features, adjacency)
    if layout:
        features = torch.cat([features, torch.from_numpy(lays[idx])], dim=2)
    return GFGraphs(wanted, features, adjacency, mask, archive.describe())


def pair_indices(n: int, batch_size: int, generator: Optional[torch.Generator] = None,
                 *, shuffle: bool = True) -> list[tuple[Tensor, Tensor]]:
    """Index pairs of one epoch.

    Args:
        n: number of graphs.
        batch_size: pairs per batch.
        generator: CPU generator for the shuffle.

    Returns:
        a list of ``(first [b], second [b])`` long tensors, one per batch; every
        index in ``0..n-1`` occurs exactly once, except the partner of an odd
        leftover, which occurs twice (in different batches when there are several).
    """
    if n < 1:
        return []
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if n == 1:
        return [(order[:1], order[:1])]  # nothing to pair with: the graph meets itself
    leftover = None
    if n % 2:
        leftover, order = order[-1:], order[:-1]
    batches = []
    step = 2 * batch_size
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        half = len(chunk) // 2
        batches.append((chunk[:half], chunk[half:]))
    if leftover is not None:  # joins the last batch, its partner from another batch when there is one
        first, second = batches[-1]
        others = order[: len(order) - 2 * len(first)]
        pool = others if len(others) else order
        partner = pool[torch.randint(len(pool), (1,), generator=generator)]
        batches[-1] = (torch.cat([first, leftover]), torch.cat([second, partner]))
    return batches


class GFPairLoader:
    """Iterates the two views of every graph of one epoch's pair batches (:class:`PairViews`).

    The pairs are a shuffle of ``seed`` and the epoch (call :meth:`set_epoch` before each
    epoch); the views come from a generator on the graphs' device seeded with
    ``view_seed``: a training loader (``shuffle=True``) draws one stream over all its
    epochs, an evaluation loader (``shuffle=False``) restarts it at every pass, so its
    pairs and views are the same every epoch (its loss compares across epochs).

    Args:
        graphs: the graphs (move them to the training device first).
        batch_size: pairs per batch (``GF_batch_size``).
        rates: the view rates (``GFViewRates.of(cfg)``).
        shuffle: False gives the same pairs and views every pass (validation, test);
            they are still a seeded shuffle, so that pairs mix drawings.
        seed: seed of the pairing.
        view_seed: seed of the views.
    """

    def __init__(self, graphs: GFGraphs, batch_size: int, rates: GFViewRates, *, shuffle: bool = True, seed: int = 0,
                 view_seed: int = 0) -> None:
        self.graphs = graphs
        self.batch_size = batch_size
        self.rates = rates
        self.shuffle = shuffle
        self.seed = seed
        self.view_seed = view_seed
        self.epoch = 0
        self._views = torch.Generator(device=graphs.features.device).manual_seed(view_seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        """This epoch's index pairs (see :func:`pair_indices`)."""
        g = torch.Generator().manual_seed(self.seed + (self.epoch if self.shuffle else 0))
        return pair_indices(len(self.graphs), self.batch_size, generator=g)

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self) -> Iterator[PairViews]:
        gr = self.graphs
        dev = gr.features.device
        if not self.shuffle:
            self._views.manual_seed(self.view_seed)
        for first, second in self.batches():
            yield gf_pair_views(gr.batch(first.to(dev)), gr.batch(second.to(dev)), self.rates, self._views)
