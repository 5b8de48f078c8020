"""DeepDXF encoder: padding, chunked long drawings, pooling, checkpoints, autocast."""
import numpy as np
import torch

from config.DeepDXF_config import DeepDXFConfig
from model.DeepDXF_embedding import chunk_rows, split_into_chunks
from config.cli import config_to_dict
from model.DeepDXF_loss import nt_xent_loss
from model.DeepDXF_model import build_deepdxf_model, embed_sequences
from utils.train.checkpoint import load_trained_models, save_checkpoint


def fake_drawing(n: int, seed: int) -> np.ndarray:
    """int32 [n, 14]: random types, some used params, -1 elsewhere, DIMENSION values."""
    rng = np.random.default_rng(seed)
    rows = np.full((n, 14), -1, dtype=np.int32)
    rows[:, 0] = rng.integers(0, 12, n)
    rows[:, 1:6] = rng.integers(0, 256, (n, 5))
    dim = rows[:, 0] == 7
    rows[dim, 13] = rng.integers(-5000, 90000, dim.sum())
    return rows


def small_model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = DeepDXFConfig(DeepDXF_chunk_len=32, DeepDXF_d_model=32, DeepDXF_heads=4, **kw)
    return build_deepdxf_model(cfg).eval()


def test_padding_does_not_change_embedding():
    model = small_model()
    a, long_ = fake_drawing(20, 1), fake_drawing(75, 2)
    with torch.no_grad():
        alone = model.embed(chunk_rows([split_into_chunks(a, 32)], 32))
        padded = model.embed(chunk_rows([split_into_chunks(a, 32)], 32, pad_to_chunk_len=True))
        with_long = model.embed(chunk_rows([split_into_chunks(a, 32), split_into_chunks(long_, 32)], 32))
    assert torch.allclose(alone, padded, atol=1e-5)
    assert torch.allclose(alone[0], with_long[0], atol=1e-5)


def test_long_drawing_is_embedded_from_all_chunks():
    model = small_model()
    rows = fake_drawing(100, 3)  # 4 chunks of 32 (the last has 4 rows)
    changed = rows.copy()
    changed[98, 1:6] = (changed[98, 1:6] + 100) % 256
    e = embed_sequences(model, [rows, changed])
    assert not np.allclose(e[0], e[1], atol=1e-6)
    # truncated to the first chunk, the change is invisible (the ablation setting)
    t = embed_sequences(model, [rows, changed], max_len=32)
    assert np.allclose(t[0], t[1], atol=1e-6)


def test_chunk_minibatches_and_order_do_not_change_embeddings():
    model = small_model()
    drawings = [fake_drawing(n, s) for s, n in enumerate((90, 5, 300, 33))]
    full = embed_sequences(model, drawings, chunk_batch=0, drawings_per_batch=4)
    small = embed_sequences(model, drawings, chunk_batch=3, drawings_per_batch=2)
    single = np.concatenate([embed_sequences(model, [d]) for d in drawings])
    assert np.allclose(full, small, atol=1e-5)
    assert np.allclose(full, single, atol=1e-5)


def test_count_pooling_keeps_size_mean_pooling_does_not():
    rows = fake_drawing(8, 4)
    doubled = np.concatenate([rows, rows])  # same composition, twice the size
    for pooling, should_differ in (("count", True), ("mean", False)):
        model = small_model(DeepDXF_pooling=pooling, DeepDXF_global_pos_bins=0, DeepDXF_dropout=0.0)
        # make position irrelevant so that only size can tell the two apart
        torch.nn.init.zeros_(model.embedding.pos_emb.weight)
        for layer in model.layers:
            torch.nn.init.zeros_(layer.qkv.weight)
            torch.nn.init.zeros_(layer.qkv.bias)
        e = embed_sequences(model, [rows, doubled])
        assert (not np.allclose(e[0], e[1], atol=1e-5)) == should_differ


def test_checkpoint_round_trip(tmp_path):
    cfg = DeepDXFConfig(DeepDXF_chunk_len=32, DeepDXF_d_model=32)
    model = build_deepdxf_model(cfg).eval()
    d = [fake_drawing(50, 5)]
    path = save_checkpoint(tmp_path / "m.pth", "DeepDXF", config_to_dict(cfg), {"model": model.state_dict()})
    trained = load_trained_models(path)
    assert trained.kind == "DeepDXF" and trained.gf is None and not trained.deepdxf.training
    again = trained.deepdxf
    assert np.allclose(embed_sequences(model, d), embed_sequences(again, d), atol=1e-6)


def test_no_nan_under_bf16_autocast():
    model = small_model().train()
    b = chunk_rows([split_into_chunks(fake_drawing(n, n), 32) for n in (10, 70, 40)], 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e1, z1 = model(b)
        e2, z2 = model(b)
        loss = nt_xent_loss(z1, z2, 0.15)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(e1).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_embed_sequences_restores_training_mode_and_handles_no_drawing():
    model = small_model().train()
    e = embed_sequences(model, [fake_drawing(10, 7)])
    assert model.training and e.dtype == np.float32
    assert embed_sequences(model, []).shape == (0, model.embed_dim)
    # dropout is off while embedding: two calls agree
    assert np.array_equal(e, embed_sequences(model, [fake_drawing(10, 7)]))
