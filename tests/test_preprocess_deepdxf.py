"""DeepDXF rows: values of each type, -1 slots, angle range, DIMENSION x1000, HDF5."""
from __future__ import annotations


import ezdxf
import numpy as np
import pytest

from dataset.dxf_process_DeepDXF import (DEEPDXF_TYPES, N_COLUMNS, PARAM_TABLE, VALUE_COLUMN,
                                         deepdxf_encode, load_h5, quantize, save_h5, TYPE_INDEX)
from dataset.dxf_read import read_drawing


def encode_doc(doc, tmp_path, max_len: int = 10_000):
    path = tmp_path / "d.dxf"
    doc.saveas(path)
    d = read_drawing(path, keep_types=set(DEEPDXF_TYPES))
    return deepdxf_encode(d.entities, d.types, d.boxes, d.invalid, max_len)


@pytest.fixture
def frame_doc():
    """A drawing whose extent is [0, 255] x [0, 100], so scale = 255 and a
    coordinate quantizes to itself."""
    doc = ezdxf.new()
    doc.modelspace().add_line((0, 0), (255, 100))
    return doc


def rows_of(rows: np.ndarray, name: str) -> np.ndarray:
    return rows[rows[:, 0] == TYPE_INDEX[name]]


def test_line_circle_arc_values(frame_doc, tmp_path):
    msp = frame_doc.modelspace()
    msp.add_circle((50, 20), 10)
    msp.add_arc((100, 50), 5, 90, 180)
    rows, info = encode_doc(frame_doc, tmp_path)
    assert rows.shape == (3, N_COLUMNS) and rows.dtype == np.int32
    np.testing.assert_array_equal(rows_of(rows, "LINE")[0, 1:5], [0, 0, 255, 100])
    np.testing.assert_array_equal(rows_of(rows, "CIRCLE")[0, 1:4], [50, 20, 10])
    np.testing.assert_array_equal(rows_of(rows, "ARC")[0, 1:6], [100, 50, 5, 64, 128])
    np.testing.assert_array_equal(info["extent"], [0, 0, 255])


def test_unused_slots_are_minus_one(frame_doc, tmp_path):
    frame_doc.modelspace().add_circle((50, 20), 10)
    rows, _ = encode_doc(frame_doc, tmp_path)
    for row in rows:
        used = len(PARAM_TABLE[DEEPDXF_TYPES[row[0]]])
        assert np.all(row[1:1 + used] >= 0)
        assert np.all(row[1 + used:VALUE_COLUMN] == -1)
        assert row[VALUE_COLUMN] == -1  # not a DIMENSION


def test_angles_use_the_full_range():
    types = np.array([TYPE_INDEX["ARC"]] * 4)
    raw = np.full((4, 12), np.nan)
    raw[:, :3] = [1, 1, 1]
    raw[:, 3] = [0.0, 359.99, 360.0, -90.0]
    raw[:, 4] = [180.0, 90.0, 720.0, 45.0]
    q = quantize(types, raw, np.array([0.0, 0.0, 2.0]))
    np.testing.assert_array_equal(q[:, 3], [0, 255, 0, 192])
    np.testing.assert_array_equal(q[:, 4], [128, 64, 0, 32])


def test_dimension_value_times_1000(frame_doc, tmp_path):
    dim = frame_doc.modelspace().add_linear_dim(base=(10, 30), p1=(10, 10), p2=(22.3456, 10))
    dim.render()
    rows, _ = encode_doc(frame_doc, tmp_path)
    dims = rows_of(rows, "DIMENSION")
    assert len(dims) == 1
    assert dims[0, VALUE_COLUMN] == round(12.3456 * 1000)
    assert dims[0, 9] == 0  # linear dimension type
    assert np.all((dims[0, 1:10] >= 0) & (dims[0, 1:10] <= 255))


def test_text_insert_solid_spline_lwpolyline(frame_doc, tmp_path):
    doc = frame_doc
    msp = doc.modelspace()
    msp.add_text("引线框架", height=5, rotation=45, dxfattribs={"insert": (10, 10)})
    block = doc.blocks.new("PIN")
    block.add_line((0, 0), (1, 1))
    msp.add_blockref("PIN", (30, 40), dxfattribs={"xscale": 2, "yscale": 0.5})
    msp.add_solid([(0, 0), (10, 0), (5, 5)])
    msp.add_spline([(0, 30), (10, 40), (20, 30), (30, 40)], degree=3)
    msp.add_lwpolyline([(1, 2), (11, 2), (11, 12)], close=True)
    rows, _ = encode_doc(doc, tmp_path)
    text = rows_of(rows, "TEXT")[0]
    np.testing.assert_array_equal(text[1:6], [10, 10, 5, 32, 4])
    insert = rows_of(rows, "INSERT")[0]
    np.testing.assert_array_equal(insert[1:6], [30, 40, 160, 96, 0])  # log2 scale: 2 -> 160, 0.5 -> 96
    solid = rows_of(rows, "SOLID")[0]
    np.testing.assert_array_equal(solid[1:7], [0, 0, 10, 0, 5, 5])
    assert solid[9] == 1  # is_3points
    spline = rows_of(rows, "SPLINE")[0]
    assert spline[1] == 3 and spline[2] >= 4
    poly = rows_of(rows, "LWPOLYLINE")[0]
    np.testing.assert_array_equal(poly[1:11], [1, 3, 1, 2, 11, 12, 1, 2, 11, 12])


def test_rows_are_in_handle_order_and_cut_is_counted(frame_doc, tmp_path):
    msp = frame_doc.modelspace()
    for k in range(9):
        msp.add_circle((k * 10, 10), 1)
    rows, info = encode_doc(frame_doc, tmp_path, max_len=4)
    assert len(rows) == 4 and info["n_total"] == 10 and info["n_cut"] == 6
    assert rows[0, 0] == TYPE_INDEX["LINE"]  # created first
    assert info["type_counts"][TYPE_INDEX["CIRCLE"]] == 9  # counted before the cut


def test_unsupported_types_are_dropped_and_counted(frame_doc, tmp_path):
    msp = frame_doc.modelspace()
    msp.add_ellipse((0, 0), (10, 0), 0.5)
    msp.add_point((1, 1))
    path = tmp_path / "d.dxf"
    frame_doc.saveas(path)
    d = read_drawing(path)
    rows, info = deepdxf_encode(d.entities, d.types, d.boxes, d.invalid, 100)
    assert len(rows) == 1 and info["n_dropped"] == 2


def test_h5_round_trip(frame_doc, tmp_path):
    frame_doc.modelspace().add_circle((50, 20), 10)
    rows, info = encode_doc(frame_doc, tmp_path)
    path = tmp_path / "QFN21LA(Cu) -508 Rev1_5 图.h5"
    save_h5(path, rows, info, source="x.dxf", source_size=3)
    back, attrs = load_h5(path)
    np.testing.assert_array_equal(back, rows)
    assert attrs["n_total"] == 2 and attrs["source"] == "x.dxf" and attrs["source_size"] == 3
    np.testing.assert_array_equal(attrs["type_counts"], info["type_counts"])
    assert not list(tmp_path.glob("*.tmp"))
