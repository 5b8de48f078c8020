"""GF encoding on drawings whose answer is worked out by hand."""
from __future__ import annotations

import numpy as np
import ezdxf
import pytest

from dataset import dxf_process_GF
from dataset.dxf_process_GF import (GF_CLASSES, class_adjacency, count_overlaps, gf_encode,
                                    normalize_features)
from dataset.dxf_read import read_drawing

ARC, LWPOLYLINE, CIRCLE, LINE = (GF_CLASSES.index(c) for c in ("ARC", "LWPOLYLINE", "CIRCLE", "LINE"))


def brute_force_overlaps(boxes: np.ndarray, cls: np.ndarray, n_classes: int):
    """Slow reference: every pair, straight from the definition."""
    overlap = np.zeros((n_classes, n_classes), dtype=np.int64)
    overlapped = np.zeros(len(boxes), dtype=bool)
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            A, B = boxes[a], boxes[b]
            if cls[a] == cls[b] or not (np.isfinite(A).all() and np.isfinite(B).all()):
                continue
            share = A[0] <= B[2] and B[0] <= A[2] and A[1] <= B[3] and B[1] <= A[3]
            a_in_b = B[0] <= A[0] and B[1] <= A[1] and A[2] <= B[2] and A[3] <= B[3]
            b_in_a = A[0] <= B[0] and A[1] <= B[1] and B[2] <= A[2] and B[3] <= A[3]
            if share and not a_in_b and not b_in_a:
                overlap[cls[a], cls[b]] += 1
                overlap[cls[b], cls[a]] += 1
                overlapped[a] = overlapped[b] = True
    return overlap, overlapped


@pytest.fixture
def hand_drawing(tmp_path):
    """Six entities, created (handle order) as LINE, CIRCLE, LWPOLYLINE, ARC, LINE, CIRCLE.

    e1 LINE (0,0)-(4,0)                  box [0,0,4,0]
    e2 CIRCLE (2,0) r=1                  box [1,-1,3,1]  overlaps e1
    e3 LWPOLYLINE square (-10..10)       contains e1, e2, e4: no overlap
    e4 ARC (5,1) r=1, 180..270 deg       box [4,0,5,1]   touches e1 at (4,0): overlap
    e5 LINE (50,50)-(60,50)              free
    e6 CIRCLE (30,30) r=1                free
    """
    doc = ezdxf.new()
    msp = doc.modelspace()
    msp.add_line((0, 0), (4, 0))
    msp.add_circle((2, 0), 1)
    msp.add_lwpolyline([(-10, -10), (10, -10), (10, 10), (-10, 10)], close=True)
    msp.add_arc((5, 1), 1, 180, 270)
    msp.add_line((50, 50), (60, 50))
    msp.add_circle((30, 30), 1)
    path = tmp_path / "hand drawing (测试).dxf"
    doc.saveas(path)
    return path


def test_boxes_of_hand_drawing(hand_drawing):
    d = read_drawing(hand_drawing)
    assert d.types == ["LINE", "CIRCLE", "LWPOLYLINE", "ARC", "LINE", "CIRCLE"]
    np.testing.assert_allclose(d.boxes[0], [0, 0, 4, 0])
    np.testing.assert_allclose(d.boxes[1], [1, -1, 3, 1])
    np.testing.assert_allclose(d.boxes[3], [4, 0, 5, 1], atol=1e-12)


def test_overlap_vs_containment_vs_touching(hand_drawing):
    d = read_drawing(hand_drawing)
    enc = gf_encode(d.types, d.boxes)
    expected = np.zeros((10, 10), dtype=np.int64)
    expected[LINE, CIRCLE] = expected[CIRCLE, LINE] = 1  # e1-e2 overlap
    expected[LINE, ARC] = expected[ARC, LINE] = 1  # e1-e4 touch at one point
    np.testing.assert_array_equal(enc["overlap"], expected)  # LWPOLYLINE contains, never overlaps


def test_free_count_and_normalizations(hand_drawing):
    d = read_drawing(hand_drawing)
    enc = gf_encode(d.types, d.boxes)
    free = np.zeros(10, dtype=np.int64)
    free[LINE] = free[CIRCLE] = free[LWPOLYLINE] = 1  # e5, e6, e3; e4 (ARC) overlaps
    np.testing.assert_array_equal(enc["free"], free)
    np.testing.assert_array_equal(enc["counts"][[ARC, LWPOLYLINE, CIRCLE, LINE]], [1, 1, 2, 2])
    f = enc["features"]
    assert f.shape == (10, 11) and f.dtype == np.float32
    np.testing.assert_allclose(f[:, 0], free / 3)  # column 0 over the rows
    np.testing.assert_allclose(f[LINE, 1:][[ARC, CIRCLE]], [0.5, 0.5])  # row LINE: O over its sum
    np.testing.assert_allclose(f[CIRCLE, 1 + LINE], 1.0)
    np.testing.assert_allclose(f[ARC, 1 + LINE], 1.0)
    assert f[LWPOLYLINE, 1:].sum() == 0  # zero row stays zero
    assert np.all(np.diag(f[:, 1:]) == 0)  # the self column is 0


def test_adjacency_follows_handle_order(hand_drawing):
    d = read_drawing(hand_drawing)
    adj = gf_encode(d.types, d.boxes)["adjacency"]
    expected = np.zeros((10, 10), dtype=np.float32)
    for a, b in [(LINE, CIRCLE), (CIRCLE, LWPOLYLINE), (LWPOLYLINE, ARC), (ARC, LINE)]:
        expected[a, b] = expected[b, a] = 1
    np.testing.assert_array_equal(adj, expected)


def test_entities_are_sorted_by_handle_not_file_order(tmp_path):
    doc = ezdxf.new()
    msp = doc.modelspace()
    line = msp.add_line((0, 0), (1, 0))
    msp.add_circle((0, 0), 1)
    msp.unlink_entity(line)  # the LINE (older handle) now comes last in the file
    msp.add_entity(line)
    assert [e.dxftype() for e in msp] == ["CIRCLE", "LINE"]
    path = tmp_path / "order.dxf"
    doc.saveas(path)
    d = read_drawing(path)
    assert d.types == ["LINE", "CIRCLE"]
    assert np.all(np.diff(d.handles) > 0)


def test_insert_box_covers_transformed_block(tmp_path):
    doc = ezdxf.new()
    block = doc.blocks.new("PIN", base_point=(1, 0))
    block.add_line((1, 0), (3, 1))
    doc.modelspace().add_blockref("PIN", (100, 100), dxfattribs={"rotation": 90, "xscale": 2})
    path = tmp_path / "insert.dxf"
    doc.saveas(path)
    d = read_drawing(path)
    np.testing.assert_allclose(d.boxes[0], [99, 100, 100, 104], atol=1e-9)


def test_polyline_counts_as_lwpolyline(tmp_path):
    doc = ezdxf.new()
    doc.modelspace().add_polyline2d([(0, 0), (1, 1), (2, 0)])
    path = tmp_path / "poly.dxf"
    doc.saveas(path)
    d = read_drawing(path)
    enc = gf_encode(d.types, d.boxes)
    assert enc["counts"][LWPOLYLINE] == 1


@pytest.mark.parametrize("chunk", [dxf_process_GF.PAIR_CHUNK, 7])
def test_count_overlaps_matches_brute_force(monkeypatch, chunk):
    monkeypatch.setattr(dxf_process_GF, "PAIR_CHUNK", chunk)
    rng = np.random.default_rng(0)
    n = 300
    lo = rng.integers(0, 40, size=(n, 2)).astype(float)
    size = rng.integers(0, 8, size=(n, 2)).astype(float)  # zero sizes: points and axis lines
    boxes = np.concatenate([lo, lo + size], axis=1)
    boxes[5] = boxes[6]  # identical boxes contain each other: no overlap
    boxes[7] = np.nan  # no box: never overlaps
    cls = rng.integers(0, 10, size=n)
    got, got_flags = count_overlaps(boxes, cls, 10)
    want, want_flags = brute_force_overlaps(boxes, cls, 10)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_flags, want_flags)
    assert got.sum() > 0


def test_normalize_features_zero_sums_stay_zero():
    f = normalize_features(np.zeros(10, dtype=np.int64), np.zeros((10, 10), dtype=np.int64))
    assert f.shape == (10, 11) and not np.isnan(f).any() and f.sum() == 0


def test_adjacency_is_symmetric_without_self_loops():
    adj = class_adjacency(np.array([9, 9, 7, 9, 3, 3]), 10)
    assert np.array_equal(adj, adj.T) and np.trace(adj) == 0
    assert adj[9, 7] == 1 and adj[9, 3] == 1 and adj[7, 3] == 0


def test_lwpolyline_box_includes_its_arcs(tmp_path):
    doc = ezdxf.new()
    # bulge 1: a counter-clockwise half circle from (0,0) to (2,0), i.e. below the chord
    doc.modelspace().add_lwpolyline([(0, 0, 1), (2, 0, 0)], format="xyb")
    path = tmp_path / "bulge.dxf"
    doc.saveas(path)
    np.testing.assert_allclose(read_drawing(path).boxes[0], [0, -1, 2, 0], atol=1e-12)


def test_dimension_box_sits_at_its_block_insert_point(tmp_path):
    """Most real lead-frame dimensions place their geometry block with `insert` (group 12)."""
    from ezdxf import bbox as ezbbox
    from ezdxf.math import Matrix44

    doc = ezdxf.new()
    msp = doc.modelspace()
    dim = msp.add_linear_dim(base=(10, 30), p1=(10, 10), p2=(40, 10))
    dim.render()
    block = dim.dimension.get_geometry_block()
    for e in block:  # the same picture, stored as CAD programs often store it: block at the origin + insert
        e.transform(Matrix44.translate(-100, -50, 0))
    dim.dimension.dxf.insert = (100, 50, 0)
    msp.add_line((0, 0), (50, 0))
    path = tmp_path / "dim insert.dxf"
    doc.saveas(path)
    d = read_drawing(path)
    k = list(d.types).index("DIMENSION")
    want = ezbbox.extents([ezdxf.readfile(path).modelspace().query("DIMENSION")[0]])  # ezdxf renders it there too
    np.testing.assert_allclose(d.boxes[k], [want.extmin.x, want.extmin.y, want.extmax.x, want.extmax.y], atol=1e-9)
    assert 9.0 < d.boxes[k][0] < 11.0 and d.boxes[k][3] > 29.0  # around the measured points, not near (-90, -40)


def test_float_noise_of_a_transform_does_not_change_touching_or_containment():
    cls = np.array([0, 1, 2])
    exact = np.array([[0.0, 0.0, 10.0, 10.0],       # class 0
                      [10.0, 2.0, 20.0, 8.0],       # class 1: touches class 0 at x = 10
                      [2.0, 2.0, 10.0, 10.0]])      # class 2: inside class 0, sharing two edges
    noisy = exact.copy()
    noisy[1, 0] += 3e-14     # a gap of rounding noise (a turn or a units change makes such)
    noisy[2, 2] += 3e-14     # pokes out of its container by rounding noise
    for boxes in (exact, noisy, noisy * 25.4 + 1e5):
        overlap, flags = count_overlaps(boxes, cls, 3)
        assert overlap[0, 1] == 1 and overlap[0, 2] == 0 and overlap[1, 2] == 1, boxes
        np.testing.assert_array_equal(flags, [True, True, True])
    apart = exact.copy()
    apart[1, [0, 2]] += 1e-3  # a real gap stays a gap
    assert count_overlaps(apart, cls, 3)[0][0, 1] == 0
