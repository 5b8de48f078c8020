"""Grid pooling of the DeepDXF model (the counting floor plus a learned residual), the turns
and mirrors of a drawing (d4_transform_rows), and a grid model trained, saved and loaded."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from config.DeepDXF_config import DeepDXFConfig
from config.cli import config_to_dict, parse_config
from config.joint_config import JointConfig
from dataset.formats import BOX_SLOTS, N_TYPES, PARAM_TABLE, TYPE_INDEX
from dataset.loaders.views import deepdxf_two_views, revision_view
from model.DeepDXF_embedding import N_D4, chunk_rows, d4_transform_rows, split_into_chunks
from model.DeepDXF_model import DeepDXFModel, build_deepdxf_model, deepdxf_model_from_config, embed_sequences
from model.floors import layout_grid, reference_points
from model.layers.grid_pooling import GridPooling

SCALES = (1, 4, 8, 16)
TYPES = list(PARAM_TABLE)


def drawing(n: int, seed: int, spread: float = 60.0) -> np.ndarray:
    """int64 [n, 14] rows of every type with the slots its type uses (boxes sorted), points
    scattered around a few random centres, -1 in unused slots."""
    rng = np.random.default_rng(seed)
    rows = np.full((n, 14), -1, dtype=np.int64)
    centres = rng.uniform(40, 215, (3, 2))
    weights = rng.dirichlet(np.full(N_TYPES, 0.5))
    for i in range(n):
        t = int(rng.choice(N_TYPES, p=weights))
        kinds = PARAM_TABLE[TYPES[t]]
        c = centres[rng.integers(3)]
        for j, kind in enumerate(kinds):
            if kind in "XY":
                rows[i, 1 + j] = int(np.clip(rng.normal(c["XY".index(kind)], spread), 0, 255))
            else:
                rows[i, 1 + j] = int(rng.integers(0, 256)) if kind in "LAS" else int(rng.integers(0, 4))
        rows[i, 0] = t
        box = BOX_SLOTS.get(TYPES[t])
        if box:
            p = rows[i, 1:13]
            (x0, x1), (y0, y1) = sorted(p[[box[0], box[2]]]), sorted(p[[box[1], box[3]]])
            p[box[0]], p[box[2]], p[box[1]], p[box[3]] = x0, x1, y0, y1
    return rows


def grid_model(**kw) -> DeepDXFModel:
    torch.manual_seed(0)
    cfg = dict(d_model=16, heads=2, layers=1, chunk_len=16, pooling="grid", dropout=0.0)
    cfg.update(kw)
    return DeepDXFModel(**cfg).eval()


def floor_blocks(e: np.ndarray, scales=SCALES) -> dict[int, np.ndarray]:
    """The F block of each scale of embeddings ``e [n, D]``, as ``[n, 12, s, s]``."""
    out, start = {}, 0
    for s in scales:
        out[s] = e[:, start:start + N_TYPES * s * s].reshape(len(e), N_TYPES, s, s)
        start += N_TYPES * s * s
    return out


# ------------------------------------------------------------------------ the floor
def test_floor_equals_the_layout_grid_and_histogram_exactly():
    rows = [drawing(n, i) for i, n in enumerate([3, 40, 90, 200])]
    rows[1][5, 1:13] = -1  # an entity without reference point: in the histogram only
    model = grid_model()
    e = embed_sequences(model, rows, drawings_per_batch=3)  # drawings spread over many 16-entity chunks
    f = floor_blocks(e)
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(f[8][i], np.log1p(layout_grid(r, 8)).astype(np.float32))
        for s in (4, 16):
            np.testing.assert_array_equal(f[s][i], np.log1p(layout_grid(r, s)).astype(np.float32))
        hist = np.bincount(r[:, 0], minlength=N_TYPES)
        np.testing.assert_array_equal(f[1][i, :, 0, 0], np.log1p(hist).astype(np.float32))
    assert model.embed_dim == N_TYPES * sum(s * s for s in SCALES) + 64 == e.shape[1]


def test_untrained_model_ranks_like_the_floor_and_the_residual_is_small_not_zero():
    rows = [drawing(int(n), 100 + i) for i, n in enumerate(np.random.default_rng(1).integers(20, 400, 20))]
    model = grid_model(d_model=32, heads=4, layers=2)
    e = embed_sequences(model, rows)
    f, r = e[:, :model.grid_pool.floor_dim], e[:, model.grid_pool.floor_dim:]
    ratio = np.linalg.norm(r, axis=1) / np.linalg.norm(f, axis=1)
    assert 0.01 < ratio.min() and ratio.max() < 0.25 and 0.02 < np.median(ratio) < 0.1, ratio

    def cosines(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return (x @ x.T)[np.triu_indices(len(x), 1)]

    assert spearmanr(cosines(e), cosines(f)).statistic > 0.99


def test_the_residual_and_the_token_states_get_gradients():
    model = grid_model().train()
    batch = chunk_rows([split_into_chunks(drawing(50, 3), 16), split_into_chunks(drawing(20, 4), 16)], 16)
    e, z = model(batch)
    z.pow(2).sum().backward()
    assert model.grid_pool.readout[-1].weight.grad.abs().sum() > 0
    assert model.grid_pool.token_proj.weight.grad.abs().sum() > 0
    assert model.layers[0].qkv.weight.grad.abs().sum() > 0


# ------------------------------------------------------------- chunking and masking
def test_embedding_does_not_depend_on_the_chunk_mini_batch():
    rows = [drawing(n, 10 + i) for i, n in enumerate([70, 5, 130])]
    model = grid_model()
    ref = embed_sequences(model, rows, chunk_batch=0)
    for chunk_batch in (1, 3):
        np.testing.assert_allclose(embed_sequences(model, rows, chunk_batch=chunk_batch), ref, atol=1e-5, rtol=1e-5)


def _entity_states(batch, d: int = 6) -> torch.Tensor:
    """[M, C, d] token states that depend on the entity only (not on its chunk)."""
    p = batch.params.float().clamp(min=0) / 255.0
    t = batch.types.float().unsqueeze(-1) / N_TYPES
    return torch.cat([t, p], dim=-1)[..., :d] * batch.mask.unsqueeze(-1)


def _pool(pool: GridPooling, batch, h=None) -> torch.Tensor:
    h = _entity_states(batch) if h is None else h
    return pool(h, batch.types, batch.params, batch.mask, batch.drawing, batch.n_drawings)


def test_pooling_does_not_depend_on_chunk_len():
    torch.manual_seed(0)
    pool = GridPooling(6).eval()
    rows = [drawing(n, 20 + i) for i, n in enumerate([45, 7, 100])]
    outs = [_pool(pool, chunk_rows([split_into_chunks(r, c) for r in rows], c)) for c in (7, 16, 128)]
    for out in outs[1:]:
        torch.testing.assert_close(out[:, :pool.floor_dim], outs[0][:, :pool.floor_dim], rtol=0, atol=0)
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-5)


def test_padding_and_padded_chunks_change_nothing():
    torch.manual_seed(0)
    pool = GridPooling(6).eval()
    rows = [drawing(n, 30 + i) for i, n in enumerate([21, 9])]
    batch = chunk_rows([split_into_chunks(r, 16) for r in rows], 16)
    ref = _pool(pool, batch)
    padded = chunk_rows([split_into_chunks(r, 16) for r in rows], 16, pad_to_chunk_len=True)
    assert padded.mask.shape[1] > batch.mask.shape[1] or not padded.mask.all()
    pad = ~padded.mask
    g = torch.Generator().manual_seed(1)
    padded.types[pad] = torch.randint(0, N_TYPES, (int(pad.sum()),), generator=g)  # garbage at padding
    padded.params[pad] = torch.randint(0, 256, (int(pad.sum()), 12), generator=g)
    h = torch.randn(*padded.mask.shape, 6, generator=g)  # states at padding too
    h[padded.mask] = _entity_states(padded)[padded.mask]
    torch.testing.assert_close(_pool(pool, padded, h), ref, rtol=1e-5, atol=1e-5)
    # an extra chunk of padding only, of drawing 0
    extra = chunk_rows([split_into_chunks(r, 16) for r in rows] + [split_into_chunks(drawing(16, 5), 16)], 16)
    extra.mask[-1] = False
    extra.drawing[-1] = 0
    extra.size_features = extra.size_features[:2]
    torch.testing.assert_close(_pool(pool, extra, _entity_states(extra) + 1.0 * ~extra.mask.unsqueeze(-1)), ref,
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------- turns and mirrors
def test_quarter_turns_and_mirrors_compose_to_the_identity():
    rows = drawing(300, 40)
    rows[:3, 13] = 1234
    r = rows
    for _ in range(4):
        r = d4_transform_rows(r, 1)
        if _ < 3:
            assert not np.array_equal(r, rows)
    np.testing.assert_array_equal(r, rows)
    np.testing.assert_array_equal(d4_transform_rows(d4_transform_rows(rows, 1), 1), d4_transform_rows(rows, 2))
    for k in range(4, 8):  # every mirrored transform is its own inverse
        once = d4_transform_rows(rows, k)
        assert not np.array_equal(once, rows)
        np.testing.assert_array_equal(d4_transform_rows(once, k), rows)
    np.testing.assert_array_equal(d4_transform_rows(rows, 0), rows)
    with pytest.raises(ValueError):
        d4_transform_rows(rows, 8)


def test_turn_maps_points_angles_arcs_and_boxes():
    line, arc, poly = TYPE_INDEX["LINE"], TYPE_INDEX["ARC"], TYPE_INDEX["LWPOLYLINE"]
    rows = np.full((3, 14), -1, dtype=np.int64)
    rows[0, :5] = [line, 10, 20, 30, 40]
    rows[1, :6] = [arc, 100, 50, 7, 10, 80]
    rows[2, :8] = [poly, 1, 4, 10, 20, 30, 60, 99]  # box (10, 20)-(30, 60); slot 7 = first vertex x
    rows[2, 8] = 25
    turned = d4_transform_rows(rows, 1)  # (x, y) -> (255 - y, x), angles + 64
    np.testing.assert_array_equal(turned[0, 1:5], [235, 10, 215, 30])
    np.testing.assert_array_equal(turned[1, 1:6], [205, 100, 7, 74, 144])
    np.testing.assert_array_equal(turned[2, 3:7], [195, 10, 235, 30])  # box sorted again
    np.testing.assert_array_equal(turned[2, 7:9], [230, 99])
    assert turned[2, 1] == 1 and turned[2, 2] == 4 and (turned[:, 13] == -1).all()
    mirrored = d4_transform_rows(rows, 4)  # x -> 255 - x, angles 128 - a, arc start/end swapped
    np.testing.assert_array_equal(mirrored[1, 1:6], [155, 50, 7, 48, 118])
    np.testing.assert_array_equal(mirrored[2, 3:7], [225, 20, 245, 60])


def _turned_grid(g: np.ndarray, k: int) -> np.ndarray:
    """The grid ``[..., y, x]`` of a drawing turned by d4_transform_rows(., k)."""
    if k >= 4:
        g = g[..., ::-1]
    return np.rot90(g, -(k % 4), axes=(-2, -1))


def test_floor_of_a_turned_drawing_is_the_turned_floor():
    rows = drawing(150, 50)
    circle = TYPE_INDEX["CIRCLE"]
    corners = np.full((2, 14), -1, dtype=np.int64)
    corners[:, :4] = [[circle, 0, 0, 5], [circle, 255, 255, 5]]  # the reference box is the whole square
    rows = np.concatenate([corners, rows])
    _, xy = reference_points(rows)
    rows = rows[~(xy == 127.5).any(1)]  # points on the centre lines sit on a cell border
    model = grid_model()
    e = embed_sequences(model, [d4_transform_rows(rows, k) for k in range(N_D4)])
    base = floor_blocks(e[:1])
    for k in range(1, N_D4):
        turned = floor_blocks(e[k:k + 1])
        for s in SCALES:
            np.testing.assert_array_equal(turned[s], _turned_grid(base[s], k), err_msg=f"k={k} s={s}")


def test_embed_sequences_with_turns_is_invariant_to_turns():
    rows = [drawing(60, 60), drawing(25, 61)]
    model = grid_model()
    ref = embed_sequences(model, rows, turns=True)
    plain = embed_sequences(model, rows)
    assert np.abs(plain - ref).max() > 1e-3
    for k in (1, 6):
        np.testing.assert_allclose(embed_sequences(model, [d4_transform_rows(r, k) for r in rows], turns=True), ref,
                                   atol=1e-5, rtol=1e-5)


def test_turn_views_are_seeded_and_turn_the_rows():
    rows = drawing(40, 70)
    off = DeepDXFConfig()
    assert revision_view(rows, off, np.random.default_rng(0)) is rows  # default: no draw, no change
    on = DeepDXFConfig(DeepDXF_turn_views=True)
    views = [revision_view(rows, on, np.random.default_rng(seed)) for seed in range(8)]
    np.testing.assert_array_equal(revision_view(rows, on, np.random.default_rng(3)), views[3])
    assert sum(not np.array_equal(v, rows) for v in views) >= 4
    assert all(any(np.array_equal(v, d4_transform_rows(rows, k)) for k in range(N_D4)) for v in views)
    cfg = DeepDXFConfig(DeepDXF_turn_views=True, DeepDXF_chunk_len=16)
    a = deepdxf_two_views([(0, rows), (1, drawing(30, 71))], cfg, np.random.default_rng(5))
    b = deepdxf_two_views([(0, rows), (1, drawing(30, 71))], cfg, np.random.default_rng(5))
    assert torch.equal(a.view1.params, b.view1.params) and torch.equal(a.view2.params, b.view2.params)


# ------------------------------------------------------------------ config, checkpoints
def test_config_flags_joint_config_and_old_configs():
    cfg = parse_config(DeepDXFConfig, ["--DeepDXF_pooling", "grid", "--DeepDXF_grid_scales", "1", "2",
                                       "--DeepDXF_grid_channels", "3", "--DeepDXF_grid_dim", "5", "--DeepDXF_turn_views"])
    assert cfg.DeepDXF_grid_scales == (1, 2) and cfg.DeepDXF_turn_views
    model = build_deepdxf_model(cfg)
    assert model.grid_pool.scales == (1, 2) and model.embed_dim == N_TYPES * 5 + 5
    assert model.grid_pool.token_proj.out_features == 3
    joint = JointConfig(DeepDXF_pooling="grid", DeepDXF_grid_scales=(1, 8), DeepDXF_grid_dim=7,
                        DeepDXF_turn_views=True).deepdxf_config()
    assert (joint.DeepDXF_pooling, joint.DeepDXF_grid_scales, joint.DeepDXF_grid_dim) == ("grid", (1, 8), 7)
    assert joint.DeepDXF_turn_views
    saved = config_to_dict(cfg)  # a checkpoint's config (JSON: lists)
    rebuilt = deepdxf_model_from_config(saved)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.grid_pool.scales == (1, 2)
    old = {k: v for k, v in saved.items() if "grid" not in k and k != "DeepDXF_pooling"}
    assert deepdxf_model_from_config(old).grid_pool is None  # an older checkpoint's config


# -------------------------------------------------------------------------- end to end
TINY_DEEPDXF = ["--DeepDXF_pooling", "grid", "--DeepDXF_grid_scales", "1", "4", "8", "--DeepDXF_grid_dim", "8",
                "--DeepDXF_turn_views", "--epochs", "1", "--k_folds", "2", "--fold", "0", "--warmup_steps", "0"]


def _embeds_a_drawing(ckpt, data_dir):
    from utils.retrieval.embedders import make_embedder
    from utils.retrieval.encodings import load_drawing
    from utils.train.checkpoint import load_trained_models

    trained = load_trained_models(ckpt)
    assert trained.deepdxf.grid_pool is not None and trained.deepdxf.grid_pool.scales == (1, 4, 8)
    enc = load_drawing(sorted((data_dir / "DeepDXF").glob("*.h5"))[0])
    out = make_embedder(ckpt, "deepdxf").embed([enc])
    assert out.shape[0] == 1 and np.isfinite(out).all()
    raw = embed_sequences(trained.deepdxf, [enc.rows])
    np.testing.assert_array_equal(raw[0, 12 * 17:12 * 81], np.log1p(layout_grid(enc.rows, 8)).ravel().astype(np.float32))


def test_deepdxf_train_with_grid_pooling_saves_a_checkpoint_that_embeds(tmp_path):
    import DeepDXF_train
    from tests.synthetic import write_synthetic_joint_corpus

    write_synthetic_joint_corpus(tmp_path / "data", 12, seed=1, max_len=40)
    argv = ["--data_dir", str(tmp_path / "data"), "--logs_dir", str(tmp_path / "logs"), "--checkpoints_dir",
            str(tmp_path / "ckpt"), "--run_name", "grid", "--DeepDXF_batch_size", "3", "--DeepDXF_chunk_len", "16",
            "--DeepDXF_d_model", "8", "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", *TINY_DEEPDXF]
    assert DeepDXF_train.main(argv) == 0
    _embeds_a_drawing(tmp_path / "ckpt" / "grid" / "best_model.pth", tmp_path / "data")


def test_joint_main_with_grid_pooling_saves_a_checkpoint_that_embeds(tmp_path):
    import joint_main
    from tests.synthetic import write_synthetic_joint_corpus
    from tests.test_joint_main import TINY

    write_synthetic_joint_corpus(tmp_path / "data", 16, seed=2, max_len=30)
    argv = ["--data_dir", str(tmp_path / "data"), "--logs_dir", str(tmp_path / "logs"), "--checkpoints_dir",
            str(tmp_path / "ckpt"), "--run_name", "grid", *TINY, *TINY_DEEPDXF, "--val_retrieval", "0"]
    summary = joint_main.main(argv)
    assert isinstance(summary, dict), summary
    _embeds_a_drawing(tmp_path / "ckpt" / "grid" / "best_model.pth", tmp_path / "data")
