"""Revision-like DeepDXF training views: turns, mirror, deleted/duplicated entities."""
import numpy as np

from config.DeepDXF_config import DeepDXFConfig
from dataset.dxf_process_DeepDXF import TYPE_INDEX
from dataset.loaders.views import deepdxf_view as make_view, edit_rows, mirror_rows, revision_view, turn_rows


def _row(kind: str, *params: int, value: int = -1) -> list[int]:
    out = [TYPE_INDEX[kind]] + list(params) + [-1] * (12 - len(params)) + [value]
    return out


def hand_drawing() -> np.ndarray:
    """Used x in 0..100, used y in 0..50 (anchored at 0, as preprocessing writes it)."""
    return np.array([
        _row("LINE", 0, 0, 10, 20),
        _row("CIRCLE", 100, 50, 5),
        _row("ARC", 40, 10, 3, 0, 64),                      # quarter arc from 0° to 90°
        _row("LWPOLYLINE", 1, 4, 20, 5, 60, 30, 20, 5, 60, 30, 0, 0),
        _row("TEXT", 30, 40, 4, 16, 7, 0),
        _row("DIMENSION", 0, 0, 100, 0, 50, 10, 50, 5, 0, value=100_000),
    ], dtype=np.int32)


def test_quarter_turn_maps_coordinates_angles_and_boxes():
    rows = hand_drawing()
    t = turn_rows(rows, 1)
    # (x, y) -> (xmin + ymax - y, ymin + x - xmin) = (50 - y, x)
    assert t[0, 1:5].tolist() == [50, 0, 30, 10]            # LINE (0,0)-(10,20)
    assert t[1, 1:4].tolist() == [0, 100, 5]                 # CIRCLE centre (100,50), radius kept
    assert t[2, 1:6].tolist() == [40, 40, 3, 64, 128]        # ARC: centre turned, angles + 90°
    # LWPOLYLINE box (20,5)-(60,30) -> corners (45,20),(20,60): re-sorted to (20,20)-(45,60)
    assert t[3, 3:7].tolist() == [20, 20, 45, 60]
    assert t[3, 1:3].tolist() == [1, 4]                      # flags/counts untouched
    assert t[4, 4] == 80                                     # TEXT rotation 16 + 64
    assert t[4, 3] == 4 and t[4, 5:7].tolist() == [7, 0]     # height, length, alignment kept
    assert t[5, 13] == 100_000                               # DIMENSION value untouched
    assert (t[:, 1:13][rows[:, 1:13] < 0] == -1).all()       # unused slots stay -1
    assert (t[:, 0] == rows[:, 0]).all()


def test_four_quarter_turns_give_the_rows_back_and_two_make_a_half_turn():
    rows = hand_drawing()
    assert np.array_equal(turn_rows(rows, 4), rows)
    once = rows
    for _ in range(4):
        once = turn_rows(once, 1)
    assert np.array_equal(once, rows)
    half = turn_rows(rows, 2)
    assert half[0, 1:5].tolist() == [100, 50, 90, 30]        # (x, y) -> (100 - x, 50 - y)
    assert np.array_equal(turn_rows(rows, -1), turn_rows(rows, 3))


def test_mirror_flips_x_swaps_arc_angles_and_is_its_own_inverse():
    rows = hand_drawing()
    m = mirror_rows(rows)
    assert m[0, 1:5].tolist() == [100, 0, 90, 20]            # x -> 100 - x, y kept
    # ARC 0°..90° mirrored is 90°..180°: start 128 - 64 = 64, end 128 - 0 = 128
    assert m[2, 4:6].tolist() == [64, 128]
    assert m[3, 3:7].tolist() == [40, 5, 80, 30]             # box re-sorted
    assert np.array_equal(mirror_rows(m), rows)


def test_edit_rows_deletes_and_appends_shifted_duplicates():
    rows = np.tile(hand_drawing(), (20, 1))                  # 120 entities
    out = edit_rows(rows, 0.1, 0.05, np.random.default_rng(0), shift=2)
    assert len(out) == 120 - 12 + 6
    dup = out[-6:]
    src = hand_drawing().astype(np.int64)
    for d in dup:  # a copy of one source entity: same type, same unused slots, within the shift
        close = [(s[0] == d[0]) and np.array_equal(s[1:13] < 0, d[1:13] < 0)
                 and np.abs(s[1:13] - d[1:13]).max() <= 2 and s[13] == d[13] for s in src]
        assert any(close)
    # deleting everything still keeps one entity
    assert len(edit_rows(rows[:3], 1.0 - 1e-9, 0.0, np.random.default_rng(0))) >= 1


def test_revision_view_is_off_by_default_and_turns_when_on():
    rows = hand_drawing()
    rng = np.random.default_rng(0)
    assert revision_view(rows, DeepDXFConfig(), rng) is rows
    cfg = DeepDXFConfig(DeepDXF_aug_turn=True, DeepDXF_turn_prob=1.0)
    turned = [revision_view(rows, cfg, np.random.default_rng(s)) for s in range(12)]
    assert all(not np.array_equal(t, rows) for t in turned)  # always turned by 90/180/270
    assert any(np.array_equal(t, turn_rows(rows, 1)) for t in turned)
    # make_view with no other augmentation returns the turned drawing's rows
    cfg = DeepDXFConfig(DeepDXF_aug_turn=True, DeepDXF_turn_prob=1.0, DeepDXF_aug_crop=False,
                        DeepDXF_aug_drop=False, DeepDXF_aug_jitter=False, DeepDXF_aug_shift=False)
    (r, idx, n), = make_view(rows, cfg, np.random.default_rng(3))
    assert n == len(rows) and any(np.array_equal(r, turn_rows(rows, k)) for k in (1, 2, 3))
