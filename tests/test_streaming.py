"""Streaming joint batches: the same tensors as the in-memory loader of the first release,
with or without DataLoader workers, from a packed archive or per-drawing folders; the
global torch RNG is left alone; DDP slices are DistributedSampler's; training memory
does not grow with the archive."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from config.joint_config import JointConfig
from dataset.dxf_process_DeepDXF import N_COLUMNS, N_TYPES, save_h5
from dataset.dxf_process_GF import save_gf
from dataset.archive import open_archive, pack
from dataset.loaders.deepdxf import DeepDXFCollate, load_deepdxf_dir
from dataset.loaders.gf import load_gf_graphs
from dataset.loaders.joint import _nth_other, shard_parts
from dataset.loaders.views import GFViewRates, gf_pair_views
from model.GF_model import GraphBatch
from tests.synthetic import fold_loaders, joint_data, write_synthetic_joint_corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """41 drawings (one without its GF file) as per-drawing folders, and a packed copy."""
    root = tmp_path_factory.mktemp("stream_corpus")
    write_synthetic_joint_corpus(root, 41, seed=3)
    (root / "GF" / "d0000_1.npz").unlink()
    packed = tmp_path_factory.mktemp("stream_packed")
    pack(root, shard_size=16, out=packed / "packed", progress=False)  # 3 shards
    return root, packed


def _cfg(root, **kw):
    base = dict(data_dir=str(root), k_folds=3, GF_batch_size=4, DeepDXF_d_model=16, DeepDXF_heads=2,
                GF_layout_features=False, group_weight=0.0)  # the reference below draws the ungrouped order
    base.update(kw)
    return JointConfig(**base)


# ------------------------------------------------------------------ the reference: the in-memory loader

def _reference_batches(root: Path, cfg: JointConfig, indices, seed: int, shuffle: bool, epoch: int) -> list[dict]:
    """The batches of the first release's in-memory JointLoader (every drawing in RAM, built in-process)."""
    graphs = load_gf_graphs(root)
    names, arrays = load_deepdxf_dir(root)
    gf_pos = {n: i for i, n in enumerate(graphs.names)}
    dx_pos = {n: i for i, n in enumerate(names)}
    joint = sorted(set(gf_pos) & set(dx_pos))
    g = graphs.subset([gf_pos[n] for n in joint])
    arrays = [arrays[dx_pos[n]] for n in joint]
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    n_batches = math.ceil(n / (2 * cfg.GF_batch_size))
    collate = DeepDXFCollate(cfg.deepdxf_config(int(n / n_batches)), seed=seed)
    order = np.random.default_rng([seed, epoch if shuffle else 0]).permutation(n)
    parts = [p for p in np.array_split(order, max(1, min(n_batches, n))) if len(p)]
    out = []
    for k, pos in enumerate(parts):
        part = indices[pos]
        view_seed = [seed, epoch if shuffle else 0, k]
        rng = np.random.default_rng(view_seed)
        h = len(part) // 2
        first, second = part[:h], part[h:2 * h]
        if len(part) % 2:
            others = np.setdiff1d(indices, part)
            partner = rng.choice(others) if len(others) else part[0]
            first, second = np.append(first, part[-1]), np.append(second, partner)
        f, s, p = torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(part)
        collate.reset(int(np.random.SeedSequence(view_seed).generate_state(1)[0]))
        dx = collate([(int(i), arrays[i]) for i in part])
        # the GF views: a torch generator from the same part seed, stream 1
        gf_gen = torch.Generator().manual_seed(int(np.random.SeedSequence([*view_seed, 1]).generate_state(1)[0]))
        gv = gf_pair_views(GraphBatch(g.features[f], g.adjacency[f], g.mask[f]),
                           GraphBatch(g.features[s], g.adjacency[s], g.mask[s]), GFViewRates.of(cfg), gf_gen)
        out.append({"part": k, "index": p, "gf": (gv.x, gv.adj, gv.mask1, gv.mask2,
                                                   g.features[p], g.adjacency[p], g.mask[p]),
                    "views": (dx.view1, dx.view2)})
    return out


def _assert_same(batch, ref) -> None:
    assert batch.part == ref["part"]
    assert torch.equal(batch.index, ref["index"])
    v, own = batch.gf_views, batch.gf_graphs
    for got, want in zip((v.x, v.adj, v.mask1, v.mask2, own.x, own.adj, own.mask), ref["gf"], strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    for got, want in zip((batch.deepdxf.view1, batch.deepdxf.view2), ref["views"]):
        for name in got.__dataclass_fields__:
            a, b = getattr(got, name), getattr(want, name)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name


@pytest.mark.parametrize("layout,workers", [("folders", 0), ("folders", 2), ("packed", 0), ("packed", 2)])
def test_streamed_batches_equal_the_in_memory_loader(corpus, layout, workers):
    root, packed = corpus
    data, split = joint_data(_cfg(root if layout == "folders" else packed, num_workers=workers))
    assert data.layout == layout and len(data.names) == 40
    cfg = data.cfg
    train, val = data.fold_loaders(split, 0)
    for epoch in (1, 2):
        train.set_epoch(epoch)
        got = list(train)
        want = _reference_batches(root, cfg, train.indices, train.seed, True, epoch)
        assert len(got) == len(want) == train.n_batches
        for b, r in zip(got, want):
            _assert_same(b, r)
    for loader in (val, data.test_loader(split)):
        got = list(loader)
        want = _reference_batches(root, cfg, loader.indices, loader.seed, False, 0)
        assert len(got) == len(want)
        for b, r in zip(got, want):
            _assert_same(b, r)


@pytest.mark.parametrize("workers", [0, 2])
def test_iterating_a_loader_leaves_the_global_torch_rng_alone(corpus, workers):
    """Dropout draws from the global RNG: the loader must not shift it (losses stay those of in-process loading)."""
    root, _ = corpus
    train, _ = fold_loaders(_cfg(root, num_workers=workers), 0)
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    assert len(list(train)) == train.n_batches
    assert torch.equal(torch.rand(4), expected)


def test_two_ranks_with_workers_build_the_batches_of_one_process(corpus):
    root, packed = corpus
    one = fold_loaders(_cfg(packed), 0)[0]
    one.set_epoch(3)
    by_part = {b.part: b for b in one}
    seen = set()
    for rank in (0, 1):
        loader = fold_loaders(_cfg(packed, num_workers=2), 0, rank=rank, world_size=2)[0]
        loader.set_epoch(3)
        for b in loader:
            ref = by_part[b.part]
            assert torch.equal(b.index, ref.index) and torch.equal(b.gf_views.x, ref.gf_views.x)
            assert torch.equal(b.deepdxf.view2.params, ref.deepdxf.view2.params)
            seen.add(b.part)
    assert seen == set(by_part)


def test_rank_slices_are_those_of_distributed_sampler():
    for n, w in [(5, 2), (4, 2), (1, 3), (7, 4), (10, 3)]:
        for r in range(w):
            assert shard_parts(n, r, w) == list(DistributedSampler(range(n), num_replicas=w, rank=r, shuffle=False))


def test_partner_lookup_equals_the_set_difference():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pool = np.sort(rng.choice(1000, size=int(rng.integers(2, 60)), replace=False))
        part = rng.choice(pool, size=int(rng.integers(1, len(pool))), replace=False)
        others = np.setdiff1d(pool, part)
        for j in (0, len(others) - 1, int(rng.integers(len(others)))):
            assert _nth_other(pool, part, j) == others[j]


def test_the_log_line_names_the_layout_and_the_count(corpus):
    root, packed = corpus
    data, split = joint_data(_cfg(root))
    assert "from per-drawing folders" in data.describe(split)
    data, split = joint_data(_cfg(packed))
    line = data.describe(split)
    assert line.startswith("40 drawings with both encodings from packed archive, 3 shard(s)")


def test_drawings_without_entities_are_left_out(tmp_path):
    write_synthetic_joint_corpus(tmp_path, 8, seed=1)
    rows = np.zeros((0, N_COLUMNS), np.int32)
    save_h5(tmp_path / "DeepDXF" / "d0000_1.h5", rows, {"n_total": 0, "n_cut": 0, "n_dropped": 0,
            "type_counts": np.zeros(N_TYPES, np.int64), "extent": np.zeros(3)}, source="empty")
    data, split = joint_data(_cfg(tmp_path, k_folds=2))
    assert "d0000_1" not in data.names and len(data.names) == 7 and data.n_empty == 1
    assert "1 without entities left out" in data.describe(split)
    i = data.names.index("d0000_2")
    np.testing.assert_array_equal(data.dataset.rows(i), open_archive(tmp_path).rows(1))


# ------------------------------------------------------------------ memory

_MEASURE = textwrap.dedent("""
    import resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def _big_corpus(root: Path, n_files: int, copies: int, length: int) -> None:
    """``n_files`` drawings of ``length`` rows, each linked under ``copies`` names (c<j>_d<i>)."""
    rng = np.random.default_rng(0)
    files = root / "files"
    files.mkdir()
    for i in range(n_files):
        rows = np.full((length, N_COLUMNS), -1, np.int32)
        rows[:, 0] = rng.integers(0, N_TYPES, length)
        rows[:, 1:5] = rng.integers(0, 256, (length, 4))
        save_h5(files / f"d{i}.h5", rows, {"n_total": length, "n_cut": 0, "n_dropped": 0,
                "type_counts": np.bincount(rows[:, 0], minlength=N_TYPES), "extent": np.zeros(3)}, source="big")
        feats = rng.random((10, 11)).astype(np.float32)
        adj = np.triu((rng.random((10, 10)) < 0.4), 1).astype(np.float32)
        save_gf(files / f"d{i}.npz", {"features": feats, "adjacency": adj + adj.T})
    for sub, ext in (("GF", "npz"), ("DeepDXF", "h5")):
        (root / sub).mkdir()
        for j in range(copies):
            for i in range(n_files):
                os.symlink(files / f"d{i}.{ext}", root / sub / f"c{j}_d{i}.{ext}")


def _peak_rss_kb(root: Path, tmp: Path) -> int:
    cmd = [sys.executable, str(ROOT / "joint_main.py"), "--data_dir", str(root), "--logs_dir", str(tmp / "logs"),
           "--checkpoints_dir", str(tmp / "ckpt"), "--run_name", root.name, "--k_folds", "2", "--fold", "0",
           "--epochs", "1", "--max_steps_per_epoch", "2", "--GF_batch_size", "8", "--GF_hidden", "8",
           "--GF_proj_dim", "8", "--GF_num_layers", "1", "--DeepDXF_d_model", "8", "--DeepDXF_heads", "2",
           "--DeepDXF_layers", "1", "--DeepDXF_proj_dim", "8", "--DeepDXF_size_dim", "4", "--DeepDXF_chunk_len", "16",
           "--DeepDXF_max_view_chunks", "1", "--warmup_steps", "0"]
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_training_memory_does_not_grow_with_the_archive(tmp_path):
    """60 drawings of 20k entities (1.1 MB of rows each) vs the same files under 10x the names:
    loading every drawing would add ~600 MB to the large run; streaming keeps the peak within 1.5x."""
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    _big_corpus(small, 60, 1, 20_000)
    _big_corpus(large, 60, 10, 20_000)
    assert len(open_archive(large)) == 600
    rss_small = _peak_rss_kb(small, tmp_path)
    rss_large = _peak_rss_kb(large, tmp_path)
    assert rss_large <= 1.5 * rss_small, (rss_small, rss_large)


def test_gf_layout_features_stream_from_folders_and_packed_shards(tmp_path):
    """With --GF_layout_features the streamed node features are the 11 GF columns and the
    class layout, as the in-memory GF loader gives them, from either layout of the data."""
    from dataset.dxf_process_GF import LAYOUT_DIM, load_gf

    write_synthetic_joint_corpus(tmp_path, 12, seed=5)
    rng = np.random.default_rng(0)
    for p in sorted((tmp_path / "GF").glob("*.npz")):
        enc = load_gf(p)
        enc["layout"] = rng.random((10, LAYOUT_DIM)).astype(np.float32)
        save_gf(p, enc)
    packed = tmp_path / "packed_copy"
    pack(tmp_path, out=packed / "packed", progress=False)
    reference = load_gf_graphs(tmp_path, layout=True)
    by_name = {n: reference.features[i].numpy() for i, n in enumerate(reference.names)}
    for root in (tmp_path, packed):
        data, split = joint_data(_cfg(root, GF_layout_features=True))
        for i in (0, 5, len(data.names) - 1):
            features, _ = data.dataset.graph(i)
            assert features.shape == (10, 11 + LAYOUT_DIM)
            np.testing.assert_array_equal(features, by_name[data.names[i]])
        plain, split = joint_data(_cfg(root))
        assert plain.dataset.graph(0)[0].shape == (10, 11)
