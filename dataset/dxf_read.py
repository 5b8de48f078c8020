"""Open a DXF file and list its modelspace entities in handle order, with boxes.

This is the one place that talks to ezdxf for preprocessing. Both encodings
(``dxf_process_GF`` and ``dxf_process_DeepDXF``) work from the
:class:`DrawingEntities` that :func:`read_drawing` returns, so every file is
parsed once.

Boxes are axis-aligned bounding boxes in world coordinates. Simple entities
(LINE, CIRCLE, LWPOLYLINE without arcs, 2D POINT-like geometry) use direct
formulas; everything else goes through :mod:`ezdxf.bbox`. An INSERT's box is the
block content's box (computed once per block with ``ezdxf.bbox`` and cached),
transformed by the insert's matrix: it covers the transformed block content. A
DIMENSION's box is its rendered block's box, moved to the block's ``insert`` point
(group 12) when it has one, as ezdxf and CAD programs draw it.

:func:`find_drawings` is the one folder walk (preprocessing and galleries) and
:func:`drawing_name` the one naming rule.
"""
from __future__ import annotations

import errno
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import ezdxf
from ezdxf import bbox as ezbbox
from ezdxf import recover
from ezdxf.document import Drawing
from ezdxf.entities import DXFGraphic
from ezdxf.lldxf.const import DXFError
from ezdxf.math import bulge_to_arc

# ezdxf logs every repair it makes (thousands of lines on real archives); keep errors only.
logging.getLogger("ezdxf").setLevel(logging.ERROR)

__all__ = ["MAX_ABS_COORD", "TYPE_ALIASES", "DrawingError", "DrawingEntities", "drawing_name", "name_in_folder",
           "find_drawings", "sniff_dxf", "open_dxf", "arc_box", "lwpolyline_box", "BoxComputer", "read_drawing"]

#: Coordinates beyond this magnitude are treated as invalid (corrupt data).
MAX_ABS_COORD = 1e12

#: Entity types whose class is remapped before encoding.
TYPE_ALIASES = {"POLYLINE": "LWPOLYLINE"}

BINARY_DXF_SIGNATURE = b"AutoCAD Binary DXF"


class DrawingError(Exception):
    """A drawing that cannot be used: not readable as DXF, or nothing in it to learn from.

    The project's one error type for an unusable drawing; ``path`` names the file and
    ``reason`` is a short sentence for people ("not a DXF file", "empty file", ...).
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class DrawingEntities:
    """Modelspace entities of one drawing, sorted by handle (ascending hex value).

    Attributes:
        path: the source file.
        entities: ezdxf entities, ``[n]``.
        types: DXF type names after :data:`TYPE_ALIASES`, ``[n]``.
        handles: int64 ``[n]``, ascending.
        boxes: float64 ``[n, 4]`` as (xmin, ymin, xmax, ymax); NaN where the entity
            has no extent (e.g. an empty text).
        invalid: bool ``[n]``, entities whose geometry is not finite or absurdly large.
        recovered: whether ``ezdxf.recover`` was needed to read the file.
        n_modelspace: number of modelspace entities, kept or not.
        other_types: counts of the modelspace types that ``keep_types`` left out.
    """

    path: str
    entities: list[DXFGraphic]
    types: list[str]
    handles: np.ndarray
    boxes: np.ndarray
    invalid: np.ndarray
    recovered: bool = False
    n_modelspace: int = 0
    other_types: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entities)


def drawing_name(path: str | Path, root: str | Path | None = None) -> str:
    """The drawing's name: its path relative to ``root`` without extension, with
    ``/`` replaced by ``__`` (the file stem for a flat folder)."""
    path = Path(path)
    if root is None:
        return path.stem
    return name_in_folder(path.parent.relative_to(root).parts, path.stem)


def name_in_folder(folder_parts: tuple[str, ...], stem: str) -> str:
    """:func:`drawing_name` from the parts of a file's folder relative to the root and
    the file's stem (a folder walk computes the parts once per folder, not per file)."""
    return "__".join((*folder_parts, stem))


def find_drawings(entries: Sequence[str | Path], suffixes: Sequence[str] = (".dxf",),
                  stem_named: Sequence[str] = ()) -> tuple[list[tuple[Path, str]], list[str]]:
    """The files with ``suffixes`` (any case) under ``entries``, with their drawing names.

    The one folder walk of the toolkit (preprocessing and galleries use it). Folders are
    searched recursively in sorted order, hidden folders and files (``.name``) skipped;
    a file given directly is taken as it is and named by its stem. A file in a folder is
    named :func:`drawing_name` of its path under that folder, or by its stem when its
    suffix is in ``stem_named`` (``.h5`` files are named by preprocessing already).

    A name seen twice gets its folder's name as a prefix (``<folder>__<name>``), then
    ``#2``, ``#3``, ... while it still clashes, so no two files share a name (a shared
    name would overwrite an output file).

    Returns:
        ``([(path, name), ...], clashes)``: ``clashes`` lists the names seen more than once.

    Raises:
        FileNotFoundError: an entry that is neither a file nor a folder.
    """
    wanted = {s.lower() for s in suffixes}
    by_stem = {s.lower() for s in stem_named}
    found: list[tuple[Path, str, Optional[Path]]] = []  # (path, name before clashes, folder)
    for entry in entries:
        root = Path(entry)
        if root.is_file():
            found.append((root, root.stem, None))
            continue
        if not root.is_dir():
            raise FileNotFoundError(errno.ENOENT, "neither a file nor a folder", str(root))
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            folder = Path(dirpath)
            rel = folder.relative_to(root).parts  # once per folder: a Path per file costs more than the walk
            for fn in sorted(filenames):
                stem, suffix = os.path.splitext(fn)
                if suffix.lower() in wanted and not fn.startswith("."):
                    name = stem if suffix.lower() in by_stem else name_in_folder(rel, stem)
                    found.append((folder / fn, name, root))
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    clashes: list[str] = []
    for path, name, root in found:
        if name in seen:
            clashes.append(name)
            if root is not None:
                name = f"{root.resolve().name}__{name}"
            base, k = name, 2
            while name in seen:
                name, k = f"{base}#{k}", k + 1
        seen.add(name)
        out.append((path, name))
    return out, clashes


def sniff_dxf(path: str | Path) -> None:
    """Cheap checks before parsing: raise :class:`DrawingError` for an empty file,
    a binary file that is not a binary DXF, or a text file that does not start like
    a DXF (a group code line followed by a value)."""
    path = Path(path)
    if not path.is_file():
        raise DrawingError(path, "file not found")
    if path.stat().st_size == 0:
        raise DrawingError(path, "empty file")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(BINARY_DXF_SIGNATURE):
        return
    if b"\x00" in head:
        raise DrawingError(path, "binary file that is not a DXF")
    text = head.decode("latin-1").lstrip("\ufeff\xef\xbb\xbf \t\r\n")
    first_line = text.split("\n", 1)[0].strip()
    if not first_line.lstrip("-").isdigit():
        shown = first_line[:30].encode("ascii", "replace").decode()
        raise DrawingError(path, f"not a DXF file (starts with {shown!r})")


def open_dxf(path: str | Path) -> tuple[Drawing, bool]:
    """Read a DXF file with ``ezdxf.readfile``; fall back to ``ezdxf.recover``
    for damaged files. Returns ``(doc, recovered)``; raises :class:`DrawingError`."""
    sniff_dxf(path)
    try:
        return ezdxf.readfile(str(path)), False
    except OSError as err:
        raise DrawingError(path, f"cannot open file ({err.strerror or err})") from err
    except Exception as first:  # ezdxf raises many error types on malformed files: try recover

        try:
            doc, _auditor = recover.readfile(str(path))
        except Exception as second:  # recover itself failed: the file is beyond repair
            raise DrawingError(path, f"unreadable DXF ({type(second).__name__}: {second})") from first
        return doc, True


def arc_box(cx: float, cy: float, r: float, start: float, end: float) -> tuple[float, float, float, float]:
    """Box of a counter-clockwise circular arc from ``start`` to ``end`` degrees."""
    start, end = start % 360.0, end % 360.0
    sweep = (end - start) % 360.0 or 360.0
    angles = [start, end] + [a for a in (0.0, 90.0, 180.0, 270.0) if (a - start) % 360.0 <= sweep]
    xs = [cx + r * math.cos(math.radians(a)) for a in angles]
    ys = [cy + r * math.sin(math.radians(a)) for a in angles]
    return (min(xs), min(ys), max(xs), max(ys))


def lwpolyline_box(points: np.ndarray, closed: bool) -> tuple[float, float, float, float] | None:
    """Box of an LWPOLYLINE from its vertices ``[n, 3]`` (x, y, bulge), arcs included."""
    if len(points) == 0:
        return None
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    xmin, ymin, xmax, ymax = lo[0], lo[1], hi[0], hi[1]
    n_segments = len(points) if closed else len(points) - 1
    for k in np.flatnonzero(points[:n_segments, 2]):
        start, end = points[k, :2], points[(k + 1) % len(points), :2]
        if np.array_equal(start, end):
            continue
        center, a0, a1, radius = bulge_to_arc(start, end, points[k, 2])
        box = arc_box(center.x, center.y, radius, math.degrees(a0), math.degrees(a1))
        xmin, ymin = min(xmin, box[0]), min(ymin, box[1])
        xmax, ymax = max(xmax, box[2]), max(ymax, box[3])
    return (xmin, ymin, xmax, ymax)


class BoxComputer:
    """Axis-aligned boxes of entities, with per-block caching for INSERTs."""

    def __init__(self, doc: Drawing) -> None:
        self.doc = doc
        self.cache = ezbbox.Cache()
        self.block_boxes: dict[str, np.ndarray | None] = {}

    def block_box(self, name: str) -> np.ndarray | None:
        """Box of a block's content in block coordinates, ``[4]`` or None if empty.

        Computed once per block from the boxes of its entities (nested INSERTs recurse
        through this cache; ATTDEFs are invisible and ignored)."""
        if name in self.block_boxes:
            return self.block_boxes[name]
        self.block_boxes[name] = None  # guards against blocks that contain themselves
        block = self.doc.blocks.get(name)
        if block is None:
            return None
        boxes = []
        for e in block:
            dxftype = e.dxftype()
            if dxftype == "ATTDEF":
                continue
            try:
                box = self.box(e)
            except (ArithmeticError, ValueError, TypeError, AttributeError, IndexError, KeyError, DXFError):
                continue  # an unreadable entity inside a block does not hide the rest
            if box is not None and all(math.isfinite(v) for v in box):
                boxes.append(box)
        if boxes:
            arr = np.array(boxes)
            self.block_boxes[name] = np.array([arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max()])
        return self.block_boxes[name]

    def box(self, e: DXFGraphic) -> tuple[float, float, float, float] | None:
        """Box ``(xmin, ymin, xmax, ymax)`` of one entity, None when it has no extent."""
        dxf = e.dxf
        dxftype = e.dxftype()
        plain = not dxf.hasattr("extrusion") or tuple(dxf.extrusion) == (0.0, 0.0, 1.0)
        if dxftype == "LINE":
            s, t = dxf.start, dxf.end
            return (min(s.x, t.x), min(s.y, t.y), max(s.x, t.x), max(s.y, t.y))
        if dxftype == "CIRCLE" and plain:
            c, r = dxf.center, abs(dxf.radius)
            return (c.x - r, c.y - r, c.x + r, c.y + r)
        if dxftype == "ARC" and plain:
            return arc_box(dxf.center.x, dxf.center.y, abs(dxf.radius), dxf.start_angle, dxf.end_angle)
        if dxftype == "DIMENSION" and plain and dxf.hasattr("geometry") and dxf.geometry in self.doc.blocks:
            # The rendered dimension block is in world coordinates, placed at the optional
            # `insert` (group 12), as ezdxf's virtual_entities() and CAD programs place it;
            # most real lead-frame dimensions have one.
            content = self.block_box(dxf.geometry)
            if content is None:
                return None
            dx, dy = (dxf.insert.x, dxf.insert.y) if dxf.hasattr("insert") else (0.0, 0.0)
            return (content[0] + dx, content[1] + dy, content[2] + dx, content[3] + dy)
        if dxftype == "LWPOLYLINE" and plain:
            # lwpoints.values: float64 [n * 5] = (x, y, start width, end width, bulge) per vertex
            return lwpolyline_box(np.asarray(e.lwpoints.values, dtype=np.float64).reshape(-1, 5)[:, [0, 1, 4]],
                                  e.closed)
        if dxftype == "POINT":
            p = dxf.location
            return (p.x, p.y, p.x, p.y)
        if dxftype == "SOLID" and plain:
            pts = np.array([tuple(dxf.get(f"vtx{k}", dxf.vtx0))[:2] for k in range(4)])
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            return (lo[0], lo[1], hi[0], hi[1])
        if dxftype == "INSERT" and plain:
            content = self.block_box(dxf.name)
            if content is None:
                return None
            corners = [(content[0], content[1], 0.0), (content[2], content[1], 0.0),
                       (content[0], content[3], 0.0), (content[2], content[3], 0.0)]
            pts = np.array([tuple(v)[:2] for v in e.matrix44().transform_vertices(corners)])
            rows, cols = dxf.get("row_count", 1), dxf.get("column_count", 1)
            if rows > 1 or cols > 1:
                # MINSERT: a lattice of copies; its box is the box of the 4 corner copies
                angle = math.radians(dxf.rotation)
                rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
                u = rot @ np.array([(cols - 1) * dxf.get("column_spacing", 0.0), 0.0])
                v = rot @ np.array([0.0, (rows - 1) * dxf.get("row_spacing", 0.0)])
                pts = np.concatenate([pts, pts + u, pts + v, pts + u + v])
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            return (lo[0], lo[1], hi[0], hi[1])
        ext = ezbbox.extents([e], fast=True, cache=self.cache)
        if not ext.has_data:
            return None
        return (ext.extmin.x, ext.extmin.y, ext.extmax.x, ext.extmax.y)


def modelspace_boxes(doc) -> np.ndarray:
    """float64 ``[n, 4]``: the box ``(xmin, ymin, xmax, ymax)`` of every modelspace entity of
    ``doc`` that has one (:class:`BoxComputer`; an entity whose box cannot be computed is
    left out)."""
    boxer = BoxComputer(doc)
    boxes = []
    for e in doc.modelspace():
        try:
            box = boxer.box(e)
        except (ArithmeticError, ValueError, TypeError, AttributeError, IndexError, KeyError, DXFError):
            continue  # an entity without a usable box does not frame the drawing
        if box is not None:
            boxes.append(box)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def read_drawing(path: str | Path, keep_types: set[str] | None = None) -> DrawingEntities:
    """Parse a DXF file and return its modelspace entities in handle order, with boxes.

    Args:
        path: the DXF file.
        keep_types: DXF types to keep (after :data:`TYPE_ALIASES`); None keeps all.

    Raises:
        DrawingError: the file cannot be read as a DXF drawing.
    """
    doc, recovered = open_dxf(path)
    boxer = BoxComputer(doc)
    records = []
    other_types: Counter = Counter()
    notes: list[str] = []
    layout_entities = list(doc.modelspace())
    if not layout_entities:
        # Some writers leave the layout table pointing elsewhere while the entities
        # sit in the *Model_Space block record: read them from there.
        block = next((b for b in doc.blocks if b.name.lower() == "*model_space" and len(b)), None)
        if block is not None:
            layout_entities = list(block)
            notes.append("modelspace entities read from the *Model_Space block")
    for e in layout_entities:
        dxftype = e.dxftype()
        dxftype = TYPE_ALIASES.get(dxftype, dxftype)
        if keep_types is not None and dxftype not in keep_types:
            other_types[dxftype] += 1
            continue
        try:
            handle = int(e.dxf.handle, 16)
        except (TypeError, ValueError):
            handle = -1  # no usable handle: keep file order, before all handled entities
        records.append((handle, dxftype, e))
    records.sort(key=lambda r: r[0])  # stable: equal handles keep file order

    n = len(records)
    boxes = np.full((n, 4), np.nan)
    invalid = np.zeros(n, dtype=bool)
    has_box = np.zeros(n, dtype=bool)
    for k, (_, dxftype, e) in enumerate(records):
        try:
            box = boxer.box(e)
        except (ArithmeticError, ValueError, TypeError, AttributeError, IndexError, KeyError, DXFError) as err:
            invalid[k] = True
            if len(notes) < 5:
                notes.append(f"{dxftype} #{e.dxf.handle}: no box ({type(err).__name__})")
            continue
        if box is not None:
            boxes[k] = box
            has_box[k] = True
    with np.errstate(invalid="ignore"):
        invalid |= has_box & ~(np.abs(boxes) <= MAX_ABS_COORD).all(axis=1)  # NaN, inf or absurd
    boxes[invalid] = np.nan
    return DrawingEntities(
        path=str(path),
        entities=[r[2] for r in records],
        types=[r[1] for r in records],
        handles=np.array([r[0] for r in records], dtype=np.int64),
        boxes=boxes,
        invalid=invalid,
        recovered=recovered,
        n_modelspace=len(layout_entities),
        other_types=other_types,
        notes=notes,
    )
