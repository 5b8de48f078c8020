"""The layout-aware floors (utils/floors.py) on hand-made rows, and the floor-to-beat verdict."""
from __future__ import annotations

import numpy as np
import pytest

from dataset.dxf_process_DeepDXF import N_COLUMNS, TYPE_INDEX
from model.floors import layout_grid, layout_rot_embedding, reference_points
from tests.reference import standardized_blocks
from utils.retrieval.evaluate import compare_table, strongest_floor


def row(kind: str, *slots: int) -> np.ndarray:
    """One DeepDXF row: the type, the given slots, -1 elsewhere."""
    r = np.full(N_COLUMNS, -1, dtype=np.int32)
    r[0] = TYPE_INDEX[kind]
    r[1:1 + len(slots)] = slots
    return r


def tiny_drawing() -> np.ndarray:
    """A LINE from (0,0) to (40,40) (midpoint (20,20)), a CIRCLE at (200,40), a TEXT at
    (100,250), an INSERT at (250,250); reference points away from cell borders."""
    return np.stack([row("LINE", 0, 0, 40, 40), row("CIRCLE", 200, 40, 10), row("TEXT", 100, 250, 5, 0, 3, 0),
                     row("INSERT", 250, 250, 128, 128, 0)])


def turn90(rows: np.ndarray) -> np.ndarray:
    """The drawing turned by 90° on the quantized sheet: (x, y) -> (255 - y, x) for every
    coordinate slot used here (LINE 1-4, CIRCLE/TEXT/INSERT 1-2)."""
    out = rows.copy()
    for r in out:
        pairs = [(1, 2), (3, 4)] if r[0] == TYPE_INDEX["LINE"] else [(1, 2)]
        for cx, cy in pairs:
            r[cx], r[cy] = 255 - r[cy], r[cx]
    return out


def test_reference_points_by_hand():
    types, xy = reference_points(tiny_drawing())
    assert types.tolist() == [TYPE_INDEX[t] for t in ("LINE", "CIRCLE", "TEXT", "INSERT")]
    np.testing.assert_allclose(xy, [[20, 20], [200, 40], [100, 250], [250, 250]])


def test_layout_grid_counts_each_entity_in_its_cell():
    grid = layout_grid(tiny_drawing())
    assert grid.shape == (12, 8, 8) and grid.sum() == 4
    # box of the points: x 20..250, y 20..250 -> square of side 230 from (20, 20); cell side 28.75
    assert grid[TYPE_INDEX["LINE"], 0, 0] == 1
    assert grid[TYPE_INDEX["CIRCLE"], 0, 6] == 1  # x (200-20)/28.75 = 6.3, y (40-20)/28.75 = 0.7
    assert grid[TYPE_INDEX["TEXT"], 7, 2] == 1  # x 2.8, y 8 (clipped to 7)
    assert grid[TYPE_INDEX["INSERT"], 7, 7] == 1


def test_rotated_drawing_has_the_same_rotation_robust_embedding_but_another_grid():
    rows = tiny_drawing()
    turned = turn90(rows)
    g, gt = layout_grid(rows), layout_grid(turned)
    assert not np.array_equal(g, gt)  # the grid floor sees the turn
    np.testing.assert_array_equal(np.rot90(g, -1, axes=(1, 2)), gt)  # ... as the turned grid
    rot, rot_t = layout_rot_embedding(g[None]), layout_rot_embedding(gt[None])
    np.testing.assert_allclose(rot, rot_t)
    mirrored = rows.copy()
    mirrored[:, 1] = np.where(mirrored[:, 1] >= 0, 255 - mirrored[:, 1], -1)
    mirrored[0, 3] = 255 - rows[0, 3]  # the LINE's end x
    np.testing.assert_allclose(layout_rot_embedding(layout_grid(mirrored)[None]), rot)


def test_rotation_robust_embedding_keeps_each_orbit_count_once():
    grid = np.zeros((1, 12, 8, 8), dtype=np.int32)
    grid[0, 0, 0, 0] = 3  # a corner cell: orbit of 4 corners
    grid[0, 0, 7, 7] = 1
    grid[0, 1, 3, 4] = 2  # a centre cell
    emb = np.expm1(layout_rot_embedding(grid))
    assert emb.shape == (1, 12 * 10)
    assert emb[0, 0] == pytest.approx(4.0)  # the 4 corner entities of type 0, once each
    assert emb.sum() == pytest.approx(6.0)  # nothing counted twice


def test_empty_and_degenerate_drawings_do_not_break_the_grid():
    assert layout_grid(np.zeros((0, N_COLUMNS), dtype=np.int32)).sum() == 0
    one_point = np.stack([row("CIRCLE", 7, 7, 1)] * 3)  # every reference point equal
    assert layout_grid(one_point).sum() == 3
    no_slots = np.stack([row("LINE")])  # all slots -1: left out
    assert layout_grid(no_slots).sum() == 0


def _encodings(names: list[str], layouts: np.ndarray) -> dict:
    n = len(names)
    return {"names": names, "type_counts": np.ones((n, 12), dtype=np.int64), "has_gf": np.zeros(n, bool),
            "layout": layouts}


def test_compare_table_names_the_floor_to_beat_and_says_when_the_model_loses():
    """Pairs (a1, a2), (b1, b2) share their layout; the type counts are all equal, so
    only the layout floors retrieve; a model of random vectors does not beat them."""
    base = np.zeros((6, 12, 8, 8), dtype=np.int32)
    base[0:2, 0, 0, 1] = 5
    base[2:4, 0, 2, 3] = 5
    base[4, 1, 5, 5] = 2
    base[5, 2, 6, 1] = 2
    names = ["a1", "a2", "b1", "b2", "c", "d"]
    enc = _encodings(names, base)
    rng = np.random.default_rng(0)
    text, rows = compare_table([("toy model", rng.normal(size=(6, 4)))], enc, [["a1", "a2"], ["b1", "b2"]],
                               n_boot=20, n_random=2)
    best = strongest_floor(rows[1:])
    assert best is not None and "layout" in best[0] and best[1]["mAP"] == pytest.approx(1.0)
    lines = text.splitlines()
    assert any(ln.startswith("the floor to beat: layout") and "(mAP 1.000)" in ln for ln in lines)
    verdict = next(ln for ln in lines if ln.startswith("toy model:"))
    assert "does NOT beat the floor to beat" in verdict
    assert "floor: raw GF matrices (n/a" in text  # no GF matrices here: said, not hidden


def test_a_model_that_beats_every_floor_is_told_so():
    names = ["a1", "a2", "b1", "b2", "c", "d"]
    enc = _encodings(names, np.zeros((6, 12, 8, 8), dtype=np.int32))  # floors see nothing
    perfect = np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1], [-1, 0], [0, -1]], dtype=np.float64)
    text, _ = compare_table([("good model", perfect)], enc, [["a1", "a2"], ["b1", "b2"]], n_boot=20, n_random=2)
    verdict = next(ln for ln in text.splitlines() if ln.startswith("good model:"))
    assert "beats the floor to beat by +" in verdict


def test_layout_floor_is_z_scored_with_the_fit_rows():
    grids = np.random.default_rng(1).integers(0, 4, size=(5, 12, 8, 8))
    from model.floors import layout_embedding
    from model.floors import floor_embeddings

    emb = floor_embeddings({"type_counts": np.ones((5, 12)), "layout": grids, "has_gf": np.zeros(5, bool)},
                           fit_rows=[0, 1, 2])["layout"]
    np.testing.assert_allclose(emb, standardized_blocks([layout_embedding(grids)], [0, 1, 2]))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0)
