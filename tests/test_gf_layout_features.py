"""GF layout node features: rotation-robust occupancy per class, stored in the GF file, used
by the GF model when GF_layout_features is on."""
import numpy as np

from config.GF_config import GF_BASE_FEATURES, GFConfig
from dataset.dxf_process_GF import GF_CLASSES, LAYOUT_DIM, gf_encode, layout_features, save_gf
from dataset.loaders.gf import load_gf_graphs


def hand_boxes() -> tuple[np.ndarray, np.ndarray]:
    """Four classes placed asymmetrically on a 100 x 60 sheet (no centre on a cell border)."""
    centres = np.array([[7.0, 9.0], [93.0, 51.0], [48.0, 31.0], [70.0, 12.0], [20.0, 44.0], [61.0, 37.0]])
    cls = np.array([0, 0, 1, 2, 3, 3])
    half = np.array([[2.0, 1.0], [1.0, 3.0], [4.0, 4.0], [1.0, 1.0], [2.0, 2.0], [3.0, 1.0]])
    boxes = np.concatenate([centres - half, centres + half], axis=1)
    return boxes, cls


def _turn90(boxes: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Boxes turned by 90° counter-clockwise about (cx, cy)."""
    x0, y0, x1, y1 = boxes.T
    return np.stack([cx - (y1 - cy), cy + (x0 - cx), cx - (y0 - cy), cy + (x1 - cx)], axis=1)


def test_layout_features_are_shares_per_class():
    boxes, cls = hand_boxes()
    f = layout_features(boxes, cls, 4)
    assert f.shape == (4, LAYOUT_DIM) == (4, 7)
    np.testing.assert_allclose(f[:, :4].sum(1), 1.0)     # ring shares
    np.testing.assert_allclose(f[:, 4:].sum(1), 1.0)     # grid-orbit shares
    assert f[1, 0] == 1.0                                # the class in the middle: innermost ring
    assert f[0, 5] == 1.0                                # class 0: edge cells (the square is taller than the sheet)
    empty = layout_features(boxes, cls, 6)
    assert (empty[4:] == 0).all()                        # absent classes: zeros


def test_layout_features_do_not_change_when_the_drawing_is_turned_mirrored_or_moved():
    boxes, cls = hand_boxes()
    lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    cx, cy = (lo + hi) / 2
    ref = layout_features(boxes, cls, 4)
    turned = _turn90(boxes, cx, cy)
    np.testing.assert_allclose(layout_features(turned, cls, 4), ref)
    np.testing.assert_allclose(layout_features(_turn90(turned, cx, cy), cls, 4), ref)   # 180°
    mirrored = np.stack([2 * cx - boxes[:, 2], boxes[:, 1], 2 * cx - boxes[:, 0], boxes[:, 3]], axis=1)
    np.testing.assert_allclose(layout_features(mirrored, cls, 4), ref)
    moved_scaled = boxes * 25.4 + 1000.0
    np.testing.assert_allclose(layout_features(moved_scaled, cls, 4), ref, atol=1e-6)
    # moving one entity across the sheet does change it (the features see layout)
    moved = boxes.copy()
    moved[2] += np.array([40.0, 20.0, 40.0, 20.0]) * 0.9
    assert not np.allclose(layout_features(moved, cls, 4), ref)


def test_gf_encode_stores_layout_and_keeps_the_spec_features(tmp_path):
    boxes, cls = hand_boxes()
    types = [GF_CLASSES[c] for c in cls]
    enc = gf_encode(types, boxes)
    assert enc["layout"].shape == (len(GF_CLASSES), LAYOUT_DIM)
    assert enc["features"].shape == (10, 11)
    (tmp_path / "GF").mkdir()
    save_gf(tmp_path / "GF" / "a.npz", enc)
    old = {k: v for k, v in enc.items() if k != "layout"}  # a file of an older preprocessing
    save_gf(tmp_path / "GF" / "b.npz", old)
    plain = load_gf_graphs(tmp_path)
    assert tuple(plain.features.shape) == (2, 10, 11)
    with_layout = load_gf_graphs(tmp_path, layout=True)
    assert tuple(with_layout.features.shape) == (2, 10, 11 + LAYOUT_DIM)
    np.testing.assert_allclose(with_layout.features[0, :, 11:].numpy(), enc["layout"])
    assert (with_layout.features[1, :, 11:] == 0).all()   # old file: zeros
    assert bool((with_layout.mask == plain.mask).all())


def test_layout_flag_widens_the_gf_input():
    # on by default since encoding format 2 (bench/learn_ablation.md, round 3)
    assert GFConfig().GF_in_channels == GF_BASE_FEATURES + LAYOUT_DIM
    assert GFConfig(GF_layout_features=False).GF_in_channels == GF_BASE_FEATURES
    assert GFConfig(GF_layout_features=True).GF_in_channels == GF_BASE_FEATURES + LAYOUT_DIM
    # a config read back from a checkpoint is not widened twice
    assert GFConfig(GF_layout_features=True, GF_in_channels=18).GF_in_channels == 18


def test_a_checkpoint_config_from_before_the_flag_builds_the_11_feature_model():
    from model.GF_model import gf_model_from_config
    old = {"GF_hidden": 8, "GF_num_layers": 1, "GF_proj_dim": 8, "GF_in_channels": GF_BASE_FEATURES}
    assert gf_model_from_config(old).in_channels == GF_BASE_FEATURES
    assert gf_model_from_config({**old, "GF_layout_features": True, "GF_in_channels": 18}).in_channels == 18


def test_cross_term_heads_fit_a_gf_model_with_layout_features():
    import torch

    from config.DeepDXF_config import DeepDXFConfig
    from model.DeepDXF_model import build_deepdxf_model
    from model.GF_model import build_gf_model
    from model.joint_loss import JointObjective
    dcfg = DeepDXFConfig(DeepDXF_d_model=8, DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=8, DeepDXF_size_dim=4)
    gf = build_gf_model(GFConfig(GF_hidden=8, GF_num_layers=1, GF_proj_dim=8, GF_layout_features=True))
    objective = JointObjective(gf, build_deepdxf_model(dcfg), dcfg, cross_weight=0.5, cross_dim=4)
    assert objective.heads is not None
    assert objective.heads.gf[0].normalized_shape == (10 * 8,)
    assert torch.isfinite(objective.heads.gf(torch.zeros(2, 80))).all()
