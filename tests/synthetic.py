"""Random GF graphs and joint corpora for tests and benchmarks (not used by the toolkit).

Files are written with the format owners (``dataset.dxf_process_GF.save_gf``,
``dataset.dxf_process_DeepDXF.save_h5``), so the trainers read them as real output.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dataset.dxf_process_DeepDXF import N_COLUMNS, N_TYPES, save_h5
from dataset.archive import GF_DIR
from dataset.dxf_process_GF import save_gf
from dataset.formats import GF_NODES as N_NODES
from dataset.loaders.gf import GFGraphs
from dataset.loaders.joint import JointData, JointLoader
from model.GF_model import node_mask
from utils.train.splits import Split, make_split


def synthetic_gf_graphs(n: int, seed: int = 0, present_rate: float = 0.7, edge_rate: float = 0.4) -> GFGraphs:
    """``n`` random GF-like graphs, normalized like the preprocessing.

    Each drawing has random class counts (some classes absent, at least two present),
    random overlap counts between present classes and random handle-order edges
    between present classes. Names are ``g00000``, ``g00001``, ...
    """
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(n, N_NODES, generator=g) < present_rate
    present[:, 0] |= present.sum(1) < 2  # at least two classes
    present[:, 1] |= present.sum(1) < 2
    pair = present.unsqueeze(1) & present.unsqueeze(2) & ~torch.eye(N_NODES, dtype=torch.bool)
    overlap = torch.poisson(torch.rand(n, N_NODES, N_NODES, generator=g) * 20, generator=g)
    overlap = torch.triu(overlap, 1)
    overlap = (overlap + overlap.transpose(1, 2)) * pair
    free = torch.poisson(torch.rand(n, N_NODES, generator=g) * 50, generator=g) * present
    free = torch.where(present & (free + overlap.sum(-1) == 0), torch.ones_like(free), free)
    col0 = free / free.sum(1, keepdim=True).clamp(min=1e-12)
    rows = overlap / overlap.sum(-1, keepdim=True).clamp(min=1e-12)
    features = torch.cat([col0.unsqueeze(-1), rows], dim=-1).float()
    a = (torch.rand(n, N_NODES, N_NODES, generator=g) < edge_rate) & pair
    a = torch.triu(a, 1)
    adjacency = (a | a.transpose(1, 2)).float()
    return GFGraphs([f"g{i:05d}" for i in range(n)], features, adjacency, node_mask(features, adjacency))


def save_gf_npz(graphs: GFGraphs, data_dir: str | Path) -> Path:
    """Write graphs as ``<data_dir>/GF/<name>.npz`` (features and adjacency). Returns the folder."""
    folder = Path(data_dir) / GF_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(graphs.names):
        save_gf(folder / f"{name}.npz", {"features": graphs.features[i].numpy(),
                                          "adjacency": graphs.adjacency[i].numpy()})
    return folder


def write_synthetic_joint_corpus(data_dir: str | Path, n: int, seed: int = 0, max_len: int = 60) -> list[str]:
    """Write ``n`` random drawings with both encodings under ``data_dir``.

    GF: :func:`synthetic_gf_graphs` as ``GF/<name>.npz``; DeepDXF: ``DeepDXF/<name>.h5``
    with ``entities`` int32 [L, 14] (random types, parameters 0..255 or -1, no DIMENSION
    value). Names are ``d<i>_<k>`` (groups of two pieces). Returns the names.
    """
    root = Path(data_dir)
    graphs = synthetic_gf_graphs(n, seed=seed)
    graphs.names = [f"d{i // 2:04d}_{i % 2 + 1}" for i in range(n)]
    save_gf_npz(graphs, root)
    folder = root / "DeepDXF"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in graphs.names:
        length = int(rng.integers(5, max_len + 1))
        rows = np.full((length, N_COLUMNS), -1, dtype=np.int32)
        rows[:, 0] = rng.integers(0, N_TYPES, size=length)
        used = rng.random((length, N_COLUMNS - 2)) < 0.5
        rows[:, 1:N_COLUMNS - 1] = np.where(used, rng.integers(0, 256, size=used.shape), -1)
        info = {"n_total": length, "n_cut": 0, "n_dropped": 0,
                "type_counts": np.bincount(rows[:, 0], minlength=N_TYPES).astype(np.int64),
                "extent": np.array([0.0, 0.0, 1.0])}
        save_h5(folder / f"{name}.h5", rows, info, source=f"synthetic:{name}")
    return graphs.names


def joint_data(cfg, rank: int = 0, world_size: int = 1, split: Split | None = None) -> tuple[JointData, Split]:
    """The joint drawings of ``cfg.data_dir`` and a split of them, drawn from the config as
    ``joint_train.py`` draws it (``utils.train.loop.start_run``) unless ``split`` is given."""
    data = JointData(cfg, rank, world_size)
    if split is None:
        split = make_split(data.names, cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern)
    return data, split


def fold_loaders(cfg, fold: int = 0, rank: int = 0, world_size: int = 1) -> tuple[JointLoader, JointLoader]:
    """(train, validation) loaders of ``fold`` of :func:`joint_data`."""
    data, split = joint_data(cfg, rank, world_size)
    return data.fold_loaders(split, fold)


def test_loader(cfg, rank: int = 0, world_size: int = 1) -> JointLoader:
    """The test loader of :func:`joint_data`."""
    data, split = joint_data(cfg, rank, world_size)
    return data.test_loader(split)


test_loader.__test__ = False  # a helper, not a test

__all__ = ["synthetic_gf_graphs", "save_gf_npz", "write_synthetic_joint_corpus", "joint_data", "fold_loaders",
           "test_loader"]
