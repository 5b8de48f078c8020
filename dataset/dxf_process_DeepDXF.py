"""DeepDXF encoding of a drawing: one row per entity, in handle order.

Each row is ``[type, p1 .. p12, dim_value]`` (int32, ``N_COLUMNS = 14``):

* ``type``: index into :data:`DEEPDXF_TYPES` (0..11). Other entity types (ELLIPSE,
  POINT, MULTILEADER, ...) are dropped and counted; POLYLINE counts as LWPOLYLINE.
* ``p1 .. p12``: quantized parameters, 0..255, ``-1`` for unused slots.
* ``dim_value``: for DIMENSION, ``round(measured value * 1000)``; -1 otherwise.

Quantization, by slot kind (the kind of each slot is fixed per type, see
:data:`PARAM_TABLE`):

====  ==========================================================================
X, Y  coordinate, normalized to the drawing's extent with the aspect ratio kept:
      ``round((x - xmin) / scale * 255)``, ``scale = max(width, height)``
L     length (radius, height, width): ``round(v / scale * 255)``
A     angle in degrees, full range: ``floor((a mod 360) / 360 * 256)``
N     count or flag: ``clip(round(v), 0, 255)``
S     scale factor, log scale: ``round(128 + 32 * log2(|s|))`` (1.0 -> 128)
====  ==========================================================================

All values are clipped to 0..255. The extent is the union of the entity boxes
(see :mod:`dataset.dxf_read`).

Parameter table (slot: meaning):

===========  ==============================================================================
LINE         1-2 start x,y; 3-4 end x,y
CIRCLE       1-2 centre x,y; 3 radius
ARC          1-2 centre x,y; 3 radius; 4 start angle; 5 end angle
LWPOLYLINE   1 closed; 2 vertex count; 3-6 vertex box xmin,ymin,xmax,ymax; 7-8 first vertex;
             9-10 last vertex; 11 has bulges (arcs); 12 constant width
TEXT         1-2 insert point; 3 height; 4 rotation; 5 text length; 6 horizontal alignment
MTEXT        1-2 insert point; 3 char height; 4 rotation; 5 text length; 6 box width
HATCH        1 solid fill; 2 path count; 3-6 extent xmin,ymin,xmax,ymax; 7 pattern angle;
             8 pattern scale
DIMENSION    1-2 definition point; 3-4 definition point 2; 5-6 definition point 3;
             7-8 text midpoint; 9 dimension type (0 linear, 1 aligned, 2 angular,
             3 diameter, 4 radius, 5 angular 3-point, 6 ordinate); value column: measurement x 1000
LEADER       1 vertex count; 2-3 first vertex; 4-5 last vertex; 6 has arrowhead
INSERT       1-2 insert point; 3 x scale; 4 y scale; 5 rotation; 6-9 box of the transformed
             block content; 10 rows x columns
SPLINE       1 degree; 2 control point count; 3 closed; 4 knot count; 5-8 control point box;
             9-10 first control point; 11-12 last control point
SOLID        1-8 corners 1..4 (x,y); 9 is_3points (the 4th corner repeats the 3rd)
===========  ==============================================================================
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
from ezdxf.entities import DXFGraphic

from dataset.dxf_read import MAX_ABS_COORD
from dataset.files import atomic_write
from dataset.formats import (DEEPDXF_TYPES, FORMAT_VERSION, N_COLUMNS, N_PARAMS, N_TYPES, PARAM_TABLE,
                             TYPE_INDEX, VALUE_COLUMN)

# PARAM_TABLE (the slot kinds per type) lives with the other constants in dataset/formats.py.
_KIND_CODES = {"X": 1, "Y": 2, "L": 3, "A": 4, "N": 5, "S": 6}
#: int8 [N_TYPES, N_PARAMS]: slot kind codes (0 = unused).
KIND_MATRIX = np.zeros((N_TYPES, N_PARAMS), dtype=np.int8)
for _name, _kinds in PARAM_TABLE.items():
    KIND_MATRIX[TYPE_INDEX[_name], : len(_kinds)] = [_KIND_CODES[k] for k in _kinds]

NAN = float("nan")


def _xy(v) -> tuple[float, float]:
    return (float(v[0]), float(v[1]))


def _box_of(points: np.ndarray) -> list[float]:
    if len(points) == 0:
        return [NAN] * 4
    lo, hi = points.min(axis=0), points.max(axis=0)
    return [lo[0], lo[1], hi[0], hi[1]]


def raw_params(e: DXFGraphic, dxftype: str, box: np.ndarray) -> tuple[list[float], float]:
    """Unquantized parameters of one entity in the slot order of :data:`PARAM_TABLE`,
    and its DIMENSION value (NaN for other types). ``box``: the entity's ``[4]`` box."""
    dxf = e.dxf
    if dxftype == "LINE":
        return [*_xy(dxf.start), *_xy(dxf.end)], NAN
    if dxftype == "CIRCLE":
        return [*_xy(dxf.center), dxf.radius], NAN
    if dxftype == "ARC":
        return [*_xy(dxf.center), dxf.radius, dxf.start_angle, dxf.end_angle], NAN
    if dxftype == "LWPOLYLINE":
        if e.dxftype() == "POLYLINE":
            pts = np.array([_xy(v.dxf.location) for v in e.vertices], dtype=np.float64).reshape(-1, 2)
            closed, bulge, width = e.is_closed, any(v.dxf.bulge for v in e.vertices), 0.0
        else:
            data = np.asarray(e.get_points("xyb"), dtype=np.float64).reshape(-1, 3)
            pts, closed = data[:, :2], e.closed
            bulge, width = bool(np.any(data[:, 2] != 0)), dxf.const_width
        first = pts[0] if len(pts) else (NAN, NAN)
        last = pts[-1] if len(pts) else (NAN, NAN)
        return [float(closed), len(pts), *_box_of(pts), *first, *last, float(bulge), width], NAN
    if dxftype == "TEXT":
        return [*_xy(dxf.insert), dxf.height, dxf.rotation, len(dxf.text), dxf.halign], NAN
    if dxftype == "MTEXT":
        return [*_xy(dxf.insert), dxf.char_height, e.get_rotation(), len(e.text), dxf.get("width", 0.0)], NAN
    if dxftype == "HATCH":
        pattern_scale = dxf.get("pattern_scale", 1.0) if not dxf.solid_fill else 1.0
        return [float(dxf.solid_fill), len(e.paths), *box, dxf.get("pattern_angle", 0.0), pattern_scale], NAN
    if dxftype == "DIMENSION":
        try:
            value = float(e.get_measurement())
        except (ValueError, TypeError, ZeroDivisionError, AttributeError):
            value = float(dxf.get("actual_measurement", NAN))
        if isinstance(value, float) and not math.isfinite(value):
            value = NAN
        return [*_xy(dxf.defpoint), *_xy(dxf.get("defpoint2", (NAN, NAN))),
                *_xy(dxf.get("defpoint3", (NAN, NAN))), *_xy(dxf.get("text_midpoint", (NAN, NAN))),
                dxf.dimtype & 0x0F], value
    if dxftype == "LEADER":
        pts = np.array([_xy(v) for v in e.vertices], dtype=np.float64).reshape(-1, 2)
        first = pts[0] if len(pts) else (NAN, NAN)
        last = pts[-1] if len(pts) else (NAN, NAN)
        return [len(pts), *first, *last, float(dxf.get("has_arrowhead", 1))], NAN
    if dxftype == "INSERT":
        grid = dxf.get("row_count", 1) * dxf.get("column_count", 1)
        return [*_xy(dxf.insert), dxf.xscale, dxf.yscale, dxf.rotation, *box, grid], NAN
    if dxftype == "SPLINE":
        cps = np.asarray(e.control_points, dtype=np.float64).reshape(-1, 3)[:, :2]
        if len(cps) == 0:  # a spline defined by fit points only
            cps = np.asarray(e.fit_points, dtype=np.float64).reshape(-1, 3)[:, :2]
        first = cps[0] if len(cps) else (NAN, NAN)
        last = cps[-1] if len(cps) else (NAN, NAN)
        return [dxf.degree, len(cps), float(e.closed), len(e.knots), *_box_of(cps), *first, *last], NAN
    if dxftype == "SOLID":
        corners = [_xy(dxf.get(f"vtx{k}", (NAN, NAN))) for k in range(4)]
        is_3points = corners[3] == corners[2]
        return [c for xy in corners for c in xy] + [float(is_3points)], NAN
    raise KeyError(dxftype)


def drawing_extent(boxes: np.ndarray) -> np.ndarray:
    """``[3]`` = (xmin, ymin, scale) of the union of finite boxes ``[n, 4]``;
    scale = max(width, height), 1.0 when the extent is degenerate or empty."""
    finite = boxes[np.isfinite(boxes).all(axis=1)]
    if len(finite) == 0:
        return np.array([0.0, 0.0, 1.0])
    xmin, ymin = finite[:, 0].min(), finite[:, 1].min()
    scale = max(finite[:, 2].max() - xmin, finite[:, 3].max() - ymin)
    return np.array([xmin, ymin, scale if scale > 0 else 1.0])


def quantize(type_idx: np.ndarray, raw: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Quantize raw parameters ``[n, N_PARAMS]`` of entities with types ``[n]`` to
    int32 ``[n, N_PARAMS]`` in 0..255, -1 in unused slots (vectorized)."""
    kinds = KIND_MATRIX[type_idx]
    xmin, ymin, scale = extent
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        q = np.select(
            [kinds == 1, kinds == 2, kinds == 3, kinds == 4, kinds == 5, kinds == 6],
            [
                np.round((raw - xmin) / scale * 255),
                np.round((raw - ymin) / scale * 255),
                np.round(np.abs(raw) / scale * 255),
                np.floor(np.mod(raw, 360.0) / 360.0 * 256),
                np.round(raw),
                np.round(128 + 32 * np.log2(np.abs(raw))),
            ],
            default=-1.0,
        )
    missing = (kinds == 0) | np.isnan(raw)
    q = np.clip(np.nan_to_num(q, nan=0.0, posinf=255.0, neginf=0.0), 0, 255)
    q[missing] = -1
    return q.astype(np.int32)


def deepdxf_encode(entities: Sequence[DXFGraphic], types: list[str], boxes: np.ndarray, invalid: np.ndarray,
                   max_len: int) -> tuple[np.ndarray, dict]:
    """DeepDXF rows of entities given in handle order.

    Args:
        entities: ezdxf entities ``[n]``; types: their (aliased) DXF types ``[n]``;
        boxes: float ``[n, 4]``; invalid: bool ``[n]`` (dropped).
        max_len: keep at most this many rows (the first ones in handle order).

    Returns:
        rows: int32 ``[L, N_COLUMNS]``; info: ``n_total``, ``n_cut``, ``n_dropped``,
        ``type_counts`` int64 ``[N_TYPES]``, ``extent`` float64 ``[3]``.
    """
    supported = [k for k, t in enumerate(types) if t in TYPE_INDEX and not invalid[k]]
    n_dropped = len(types) - len(supported)
    raw = np.full((len(supported), N_PARAMS), np.nan)
    values = np.full(len(supported), np.nan)
    type_idx = np.empty(len(supported), dtype=np.int64)
    good = np.ones(len(supported), dtype=bool)
    for row, k in enumerate(supported):
        type_idx[row] = TYPE_INDEX[types[k]]
        try:
            params, values[row] = raw_params(entities[k], types[k], boxes[k])
        except (AttributeError, ValueError, TypeError, IndexError, KeyError, ArithmeticError):
            good[row] = False
            continue
        raw[row, : len(params)] = params
    # missing values (NaN: e.g. a radius dimension has no defpoint3) become -1 slots;
    # infinite or absurdly large ones mark corrupt entities, which are dropped
    with np.errstate(invalid="ignore"):
        bad_value = np.isinf(raw) | (np.abs(raw) > MAX_ABS_COORD)
    good &= ~bad_value.any(axis=1)
    n_dropped += int((~good).sum())
    raw, values, type_idx = raw[good], values[good], type_idx[good]
    boxes_kept = boxes[[k for k, g in zip(supported, good) if g]] if len(supported) else boxes[:0]
    extent = drawing_extent(boxes_kept)
    rows = np.full((len(type_idx), N_COLUMNS), -1, dtype=np.int32)
    rows[:, 0] = type_idx
    rows[:, 1:VALUE_COLUMN] = quantize(type_idx, raw, extent)
    is_dim = type_idx == TYPE_INDEX["DIMENSION"]
    dim_values = np.where(np.isfinite(values), np.clip(np.round(values * 1000), -2**31 + 1, 2**31 - 1), -1)
    rows[is_dim, VALUE_COLUMN] = dim_values[is_dim].astype(np.int32)
    info = {
        "n_total": len(rows),
        "n_cut": max(0, len(rows) - max_len),
        "n_dropped": n_dropped,
        "type_counts": np.bincount(type_idx, minlength=N_TYPES).astype(np.int64),
        "extent": extent,
    }
    return rows[:max_len], info


def save_h5(path: str | Path, rows: np.ndarray, info: dict, source: str, **attrs) -> None:
    """Write rows ``[L, N_COLUMNS]`` and their attributes to ``path`` atomically."""
    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("entities", data=rows.astype(np.int32))
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["source"] = source
            for key in ("n_total", "n_cut", "n_dropped", "type_counts", "extent"):
                f.attrs[key] = info[key]
            for key, value in attrs.items():
                f.attrs[key] = value

    atomic_write(path, write)


def load_h5(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read ``entities`` int32 ``[L, N_COLUMNS]`` and the attributes of one file."""
    with h5py.File(path, "r") as f:
        return f["entities"][()], dict(f.attrs)


def h5_length(path: str | Path) -> int:
    """Rows of one file's ``entities`` (read from the HDF5 header, no row is read)."""
    with h5py.File(path, "r") as f:
        return int(f["entities"].shape[0])


def load_h5_rows(path: str | Path) -> np.ndarray:
    """Read only ``entities`` of one file (the trainers' light read), as int32 ``[L, N_COLUMNS]``.

    Raises:
        ValueError: ``entities`` is not ``[L, N_COLUMNS]`` (the message names the file).
    """
    with h5py.File(path, "r") as f:
        rows = np.asarray(f["entities"][()], dtype=np.int32)
    if rows.ndim != 2 or rows.shape[1] != N_COLUMNS:
        raise ValueError(f"{path}: 'entities' has shape {rows.shape}, expected [L, {N_COLUMNS}]")
    return rows


def h5_matches_source(path: str | Path, *, source_mtime_ns: int) -> bool:
    """True when ``path`` is a readable ``.h5`` of this ``FORMAT_VERSION`` encoded from a
    source file of modification time ``source_mtime_ns`` (what a rerun of preprocessing
    may keep); False for a missing, unreadable, older or other file."""
    if not Path(path).is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return (int(f.attrs.get("source_mtime_ns", -1)) == source_mtime_ns
                    and int(f.attrs.get("format_version", -1)) == FORMAT_VERSION)
    except OSError:
        return False


__all__ = [
    "PARAM_TABLE", "KIND_MATRIX", "raw_params", "drawing_extent", "quantize", "deepdxf_encode", "save_h5", "load_h5",
    "h5_length", "load_h5_rows", "h5_matches_source",
]
