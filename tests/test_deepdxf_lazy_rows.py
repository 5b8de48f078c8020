"""DeepDXF_train.py reads drawings lazily: the same rows and batches as reading them all
at once, with only paths and lengths kept in memory."""
from __future__ import annotations

import pickle

import numpy as np
import torch

from config.DeepDXF_config import DeepDXFConfig
from dataset.loaders.deepdxf import ArchiveRows, load_deepdxf_dir, make_loader
from tests.synthetic import write_synthetic_joint_corpus


def test_lazy_rows_equal_the_eager_ones_and_hold_no_arrays(tmp_path):
    write_synthetic_joint_corpus(tmp_path, 9, seed=2)
    names, eager = load_deepdxf_dir(tmp_path)
    lazy_names, lazy = load_deepdxf_dir(tmp_path, lazy=True)
    assert isinstance(lazy, ArchiveRows) and lazy_names == names
    assert lazy.lengths.tolist() == [len(a) for a in eager]
    for i in range(len(eager)):
        np.testing.assert_array_equal(lazy[i], eager[i])
    part = lazy.subset([4, 1])
    np.testing.assert_array_equal(part[0], eager[4])
    assert part.lengths.tolist() == [len(eager[4]), len(eager[1])]
    state = pickle.dumps(lazy)  # what a DataLoader worker receives: paths and lengths, no rows
    assert len(state) < 200 * len(lazy) + 1000


def test_lazy_and_eager_loaders_give_the_same_batches(tmp_path):
    write_synthetic_joint_corpus(tmp_path, 12, seed=4)
    cfg = DeepDXFConfig(data_dir=str(tmp_path), DeepDXF_batch_size=4)
    _, eager = load_deepdxf_dir(tmp_path)
    _, lazy = load_deepdxf_dir(tmp_path, lazy=True)
    a = list(make_loader(eager, cfg, train=True, seed=7))
    b = list(make_loader(lazy, cfg, train=True, seed=7))
    assert len(a) == len(b) > 0
    compared = 0
    for x, y in zip(a, b):
        assert torch.equal(x.index, y.index)
        for view in ("view1", "view2"):
            u, v = getattr(x, view), getattr(y, view)
            for f in u.__dataclass_fields__:
                if isinstance(getattr(u, f), torch.Tensor):
                    assert torch.equal(getattr(u, f), getattr(v, f)), (view, f)
                    compared += 1
    assert compared > 0
