"""Fused embeddings of a checkpoint: blocks of learned parts and floors (utils.retrieval.embedders)."""
import numpy as np
import pytest
import torch

from config.cli import config_to_dict
from config.GF_config import GFConfig
from dataset.dxf_process_GF import LAYOUT_DIM
from tests.test_similarity_cli import deepdxf_config, make_corpus
from utils.train.checkpoint import save_checkpoint
from model.floors import floor_block
from utils.retrieval.embedders import PRESETS, Block, block_statistics, fuse, make_embedder
from utils.retrieval.encodings import load_drawing, stack_encodings


def test_fused_blocks_have_their_weights_as_lengths_and_their_stored_zscores():
    rng = np.random.default_rng(0)
    learned = rng.normal(size=(5, 4)) * 7.0
    a = rng.normal(loc=100.0, size=(5, 3))
    b = rng.normal(loc=-5.0, size=(5, 2))
    blocks = [Block("learned"), Block("a", 0.5, *block_statistics(a)), Block("b", 0.5)]
    out = fuse({"learned": learned, "a": a, "b": b}, blocks)
    assert out.shape == (5, 9) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:, :4], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[:, 4:7], axis=1), 0.5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[:, 7:], axis=1), 0.5, atol=1e-6)
    z = (a - a.mean(0)) / a.std(0)
    np.testing.assert_allclose(out[:, 4:7], 0.5 * z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)
    # block b is not z-scored: only L2-normalized (its direction keeps the raw values' signs)
    np.testing.assert_allclose(out[:, 7:], 0.5 * b / np.linalg.norm(b, axis=1, keepdims=True), atol=1e-5)
    # the stored statistics, not the rows at hand, z-score a block: one row alone gives the same
    one = fuse({"learned": learned[:1], "a": a[:1], "b": b[:1]}, blocks)
    np.testing.assert_allclose(one, out[:1], atol=1e-6)
    # weight 0: the learned part alone decides a cosine ranking
    zero = fuse({"learned": learned, "a": a, "b": b}, [Block("learned"), Block("a", 0.0), Block("b", 0.0)])
    assert np.abs(zero[:, 4:]).max() == 0.0
    again = Block.from_dict(blocks[1].to_dict())  # what a checkpoint stores reads back the same
    np.testing.assert_allclose(fuse({"a": a}, [again]), out[:, 4:7], atol=1e-6)


def _joint_checkpoint(path, layout: bool):
    from model.DeepDXF_model import build_deepdxf_model
    from model.GF_model import build_gf_model

    torch.manual_seed(0)
    gcfg, dcfg = GFConfig(GF_hidden=8, GF_num_layers=1, GF_proj_dim=8, GF_layout_features=layout), deepdxf_config()
    config = {**config_to_dict(gcfg), **config_to_dict(dcfg)}
    state = {"gf": build_gf_model(gcfg).state_dict(), "deepdxf": build_deepdxf_model(dcfg).state_dict()}
    return save_checkpoint(path, "joint", config, state)


@pytest.mark.parametrize("layout", [False, True])
def test_joint_floors_embedder_appends_the_raw_gf_block_of_length_four(tmp_path, layout):
    dxf = make_corpus(tmp_path / "dxf")
    ckpt = _joint_checkpoint(tmp_path / "joint.pth", layout)
    encs = [load_drawing(p) for p in dxf]
    assert encs[0].gf_layout.shape == (10, LAYOUT_DIM) and encs[0].gf_layout.sum() > 0
    joint = make_embedder(ckpt, "joint").embed(encs)
    comb = make_embedder(ckpt, "joint_floors")
    assert comb.row_wise and [b.name for b in comb.blocks] == ["joint", "gf_raw"]
    rows = comb.embed(encs)
    raw_gf = floor_block("gf_raw", stack_encodings(encs))
    assert rows.shape == (3, joint.shape[1] + raw_gf.shape[1])
    np.testing.assert_allclose(rows[:, :joint.shape[1]], joint, atol=1e-6)  # the unit joint vector
    np.testing.assert_allclose(rows[:, joint.shape[1]:], 4.0 * raw_gf / np.linalg.norm(raw_gf, axis=1, keepdims=True),
                               atol=1e-5)
    np.testing.assert_array_equal(comb.finalize(rows, rows), rows)  # the rows are what is compared


def test_learn_ablation_combines_every_block_set_and_weight():
    from bench.learn_ablation import BLOCK_SETS, combined_rows

    rng = np.random.default_rng(1)
    n = 6
    arrays = {"type_counts": rng.integers(0, 50, size=(n, 12)),
              "gf_features": rng.random((n, 10, 11)).astype(np.float32),
              "gf_adjacency": (rng.random((n, 10, 10)) > 0.5).astype(np.float32),
              "layout": rng.integers(0, 5, size=(n, 12, 8, 8))}
    learned = rng.normal(size=(n, 5))
    rows = combined_rows(learned, arrays, [0.5, 2.0])
    assert len(rows) == 2 * len(BLOCK_SETS)
    emb = rows["joint + gf_raw (w=2)"]
    assert emb.shape == (n, 5 + 210)
    np.testing.assert_allclose(np.linalg.norm(emb[:, 5:], axis=1), 2.0, atol=1e-5)
    # the raw GF block is not z-scored: it is the flattened matrices, scaled to length 2
    raw = np.concatenate([arrays["gf_features"].reshape(n, -1), arrays["gf_adjacency"].reshape(n, -1)], axis=1)
    np.testing.assert_allclose(emb[:, 5:], 2.0 * raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_auto_gives_the_default_floor_for_a_joint_checkpoint_without_a_choice(tmp_path):
    from utils.retrieval.embedders import AUTO_JOINT

    ckpt = _joint_checkpoint(tmp_path / "joint.pth", False)
    assert AUTO_JOINT == "features"
    assert make_embedder(ckpt, "auto").kind == "features"
    assert make_embedder(ckpt, "joint_floors").kind == "joint_floors"
    assert make_embedder(ckpt, "joint").kind == "joint"


def test_joint_vectors_are_the_training_formula_with_two_unit_blocks():
    from model.joint_loss import joint_embedding
    from utils.retrieval.embedders import joint_vectors
    rng = np.random.default_rng(1)
    gf = rng.normal(size=(4, 6)) * 9.0
    dx = rng.normal(size=(4, 3)).astype(np.float32)
    gf[2] = 0.0  # an all-zero part stays zero, not NaN
    out = joint_vectors(gf, dx)
    assert out.shape == (4, 9) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 6:], dx / np.linalg.norm(dx, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[[0, 1, 3], :6], axis=1), 1.0, atol=1e-6)
    assert np.all(out[2, :6] == 0.0)
    with torch.no_grad():
        want = joint_embedding(torch.from_numpy(gf), torch.from_numpy(dx)).numpy()
    np.testing.assert_array_equal(out, want)
