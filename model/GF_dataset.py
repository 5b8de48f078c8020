"""GF graphs (``<data_dir>/GF/*.npz``, read by ``dataset.dxf_process_GF.load_gf``) and their pair batches.

All graphs are loaded once into three tensors (they are tiny: 10 nodes each), so a
batch is an index into them, on whatever device they were moved to.

Pairs: each epoch the graphs are shuffled; every batch holds ``2 × batch_size``
distinct graphs paired into ``batch_size`` pairs (first half with second half);
every graph is used once per epoch. The last batch may be smaller. With an odd
number of graphs, the one left over joins the last batch (which then may hold
``batch_size + 1`` pairs), paired with a graph drawn from an earlier batch, so the
graphs of a batch stay distinct; only when everything fits in one batch does that
partner come from the same batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import logging

import numpy as np
import torch
from torch import Tensor

from dataset.dxf_process_GF import LAYOUT_DIM, load_gf
from dataset.pack import ArchiveError, PackedArchive, packed_archive
from model.layers.DenseGraphMatching import node_mask

log = logging.getLogger(__name__)

N_NODES = 10
N_FEATURES = 11


class GFDataError(RuntimeError):
    """The GF folder is missing, empty, or holds a file of the wrong shape."""


@dataclass
class GFGraphs:
    """A set of GF graphs as stacked tensors.

    Attributes:
        names: drawing names (docs/architecture.md), length G.
        features: ``[G, 10, 11]`` float32.
        adjacency: ``[G, 10, 10]`` float32, symmetric 0/1.
        mask: ``[G, 10]`` bool, classes present in the drawing.
        source: where they were read (packed archive or GF folder), for logs.
    """

    names: list[str]
    features: Tensor
    adjacency: Tensor
    mask: Tensor
    source: str = ""  # where they were read, for logs

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


def gf_dir(data_dir: str | Path) -> Path:
    """``<data_dir>/GF``, the folder ``python dataset/dxf_process.py --output <data_dir>`` writes."""
    return Path(data_dir) / "GF"


def load_gf_graphs(data_dir: str | Path, names: Optional[Sequence[str]] = None, layout: bool = False) -> GFGraphs:
    """Load every ``<data_dir>/GF/*.npz`` (sorted by name), or only ``names``; from the
    packed shards instead when ``<data_dir>/packed`` holds any (``dataset/pack.py``).

    ``layout``: append each file's ``layout`` array ``[10, LAYOUT_DIM]`` to the node
    features (``[G, 10, 11 + LAYOUT_DIM]``, see :func:`with_layout`); the node mask
    comes from the 11 GF features alone.

    Raises:
        GFDataError: the folder is missing or empty, or a file has the wrong shape.
    """
    try:
        packed = packed_archive(data_dir)
    except ArchiveError as err:
        raise GFDataError(str(err)) from err
    if packed is not None:
        return _packed_graphs(packed, names, layout)
    folder = gf_dir(data_dir)
    if not folder.is_dir():
        raise GFDataError(
            f"no GF data in {folder}: create it with `python dataset/dxf_process.py --output {data_dir}` "
            "(add --input DIR for your own DXF folder)"
        )
    paths = sorted(folder.glob("*.npz")) if names is None else [folder / f"{n}.npz" for n in names]
    if not paths:
        raise GFDataError(f"{folder} holds no .npz files: run `python dataset/dxf_process.py --output {data_dir}` first")
    feats = np.zeros((len(paths), N_NODES, N_FEATURES), dtype=np.float32)
    adjs = np.zeros((len(paths), N_NODES, N_NODES), dtype=np.float32)
    for i, p in enumerate(paths):
        try:
            enc = load_gf(p, keys=("features", "adjacency"))
        except (OSError, ValueError, KeyError) as err:
            raise GFDataError(f"{p}: not a readable GF file ({err})") from err
        f, a = enc["features"], enc["adjacency"]
        if f.shape != (N_NODES, N_FEATURES) or a.shape != (N_NODES, N_NODES):
            raise GFDataError(f"{p}: expected features [10, 11] and adjacency [10, 10], got {f.shape} and {a.shape}")
        feats[i], adjs[i] = f, a
    features, adjacency = torch.from_numpy(feats), torch.from_numpy(adjs)
    mask = node_mask(features, adjacency)
    if layout:
        features = torch.cat([features, torch.from_numpy(read_layout(paths))], dim=2)
    return GFGraphs([p.stem for p in paths], features, adjacency, mask, f"per-drawing folder {folder}")


def _packed_graphs(archive: PackedArchive, names: Optional[Sequence[str]], layout: bool) -> GFGraphs:
    """:func:`load_gf_graphs` from a packed archive (one bulk read per shard), in name order."""
    try:
        all_names = archive.names()
        feats, adjs, lays = archive.graph_arrays(layout)
    except (OSError, KeyError) as err:
        raise GFDataError(f"{archive.folder}: packed shards that cannot be read ({err}); pack again") from err
    finally:
        archive.close()
    where = {n: i for i, n in enumerate(all_names)}
    wanted = sorted(all_names) if names is None else list(names)
    missing = [n for n in wanted if n not in where]
    if missing:
        raise GFDataError(f"{archive.folder}: {len(missing)} drawing(s) not in the packed archive, e.g. {missing[0]!r}")
    if not wanted:
        raise GFDataError(f"{archive.folder}: the packed archive holds no drawing")
    idx = np.fromiter((where[n] for n in wanted), dtype=np.int64, count=len(wanted))
    features, adjacency = torch.from_numpy(feats[idx]), torch.from_numpy(adjs[idx])
    mask = node_mask(features, adjacency)
    if layout:
        features = torch.cat([features, torch.from_numpy(lays[idx])], dim=2)
    return GFGraphs(wanted, features, adjacency, mask, archive.describe())


def read_layout(paths: Sequence[Path]) -> np.ndarray:
    """The ``layout`` arrays of GF files, ``float32 [G, 10, LAYOUT_DIM]``; zeros for files
    written before the key existed (a warning counts them: preprocess again with
    ``dataset/dxf_process.py --overwrite`` to fill them)."""
    out = np.zeros((len(paths), N_NODES, LAYOUT_DIM), dtype=np.float32)
    missing = []
    for i, p in enumerate(paths):
        try:
            enc = load_gf(p, keys=("layout",))
        except KeyError:
            missing.append(p.stem)
            continue
        except (OSError, ValueError) as err:
            raise GFDataError(f"{p}: not a readable GF file ({err})") from err
        if enc["layout"].shape != (N_NODES, LAYOUT_DIM):
            raise GFDataError(f"{p}: layout of shape {enc['layout'].shape}, expected [{N_NODES}, {LAYOUT_DIM}]")
        out[i] = enc["layout"]
    if missing:
        log.warning("%d of %d GF files have no 'layout' array (written by an older preprocessing): zeros used, "
                    "e.g. %s; run dataset/dxf_process.py --overwrite to compute it", len(missing), len(paths), missing[0])
    return out


def pair_indices(n: int, batch_size: int, generator: Optional[torch.Generator] = None, shuffle: bool = True) -> list[tuple[Tensor, Tensor]]:
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
    """Iterates pair batches of :class:`GFGraphs` for one epoch at a time.

    Each item is ``(x1, adj1, mask1, x2, adj2, mask2)``: ``[b, 10, 11]``,
    ``[b, 10, 10]``, ``[b, 10]`` for the first and the second graph of the ``b``
    pairs, on the graphs' device. Call :meth:`set_epoch` before each epoch for a
    new shuffle (the shuffle is a function of ``seed`` and the epoch only).

    Args:
        graphs: the graphs (move them to the training device first).
        batch_size: pairs per batch (``GF_batch_size``).
        shuffle: False gives the same pairs every epoch (validation, test); they
            are still a seeded shuffle, so that pairs mix drawings.
        seed: seed of the pairing.
    """

    def __init__(self, graphs: GFGraphs, batch_size: int, shuffle: bool = True, seed: int = 0) -> None:
        self.graphs = graphs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        """This epoch's index pairs (see :func:`pair_indices`)."""
        g = torch.Generator().manual_seed(self.seed + (self.epoch if self.shuffle else 0))
        return pair_indices(len(self.graphs), self.batch_size, generator=g)

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        gr = self.graphs
        dev = gr.features.device
        for first, second in self.batches():
            first, second = first.to(dev), second.to(dev)
            yield (gr.features[first], gr.adjacency[first], gr.mask[first],
                   gr.features[second], gr.adjacency[second], gr.mask[second])


__all__ = [
    "GFDataError", "GFGraphs", "GFPairLoader", "gf_dir", "load_gf_graphs", "read_layout", "pair_indices", "N_NODES", "N_FEATURES",
]
