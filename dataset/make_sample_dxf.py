"""The bundled sample corpus: seeded synthetic package-outline drawings.

``python dataset/make_sample_dxf.py`` writes about 60 DXF drawings into
``data/DXF/`` (10 families x 6 revisions). ``dataset/dxf_process.py`` calls
:func:`make_sample_corpus` when its input folder is empty, so every command of
the toolkit runs out of the box.

Families differ structurally, revisions of a family differ a little:

==================  ==========================================================
family              what it draws
==================  ==========================================================
QFN-a               pins on 4 sides as INSERTs of a pin block, exposed pad
QFN-b               pins on 4 sides as explicit polylines, chamfered pad, table
DFN-a               pins on 2 sides (INSERTs), exposed pad
DFN-b 双排          two staggered rows of pads on each of 2 sides, no pad
SOP-a               gull-wing leads on 2 sides, side view with bent leads
SOP-b               gull-wing leads, thermal pad, SOLID fills, pin table
TSSOP-a             many fine-pitch leads on 2 sides, pin table
SOT-a               3-lead small outline (2 + 1), few entities
LF-strip-a          lead-frame strip: rows x columns of units (INSERT + leads)
BGA-like (基板)     ball grid (INSERTs), land pattern (CIRCLEs), row labels
==================  ==========================================================

A revision moves or resizes parts, adds or removes a few entities (notes,
holes, dimensions, revision-table rows), changes texts and sometimes the pin
count (by 2). Two drawings are much larger than the rest (``LF-strip-a_rev3``
and ``BGA-like (基板)_rev5``, about 3,000 entities) so that long sequences are
exercised.

File names are ``<family>_rev<k>.dxf``; :func:`family_of` (the regex
:data:`FAMILY_PATTERN`) strips the revision suffix again. Two family names
hold a space, brackets or Chinese characters on purpose.

Every drawing mixes what real lead-frame drawings hold: LWPOLYLINE (open and
closed), LINE, CIRCLE, ARC, TEXT and MTEXT (with Chinese text and a title
block), rendered DIMENSIONs (linear, aligned, radius), LEADER, HATCH (solid and
pattern), INSERT, SPLINE and SOLID in most drawings, and a few entities that the
encoders do not support (POINT, ELLIPSE).

Determinism: the same ``seed`` gives byte-identical files. Geometry comes from
``random.Random`` instances seeded with strings (stable across processes and
``PYTHONHASHSEED``), handles follow creation order, and the header's dates and
GUIDs are written with ezdxf's fixed-metadata option, switched on only while
this module saves and restored afterwards.
"""
from __future__ import annotations

import argparse
import math
import random
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import ezdxf
from ezdxf.document import Drawing
from ezdxf.enums import TextEntityAlignment
from ezdxf.layouts import BlockLayout, Modelspace

__all__ = ["FAMILIES", "Family", "Revision", "family_of", "make_revision", "build_drawing", "fixed_metadata",
           "make_sample_corpus", "main"]

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUTPUT = ROOT / "data" / "DXF"
FAMILY_PATTERN = r"_rev\d+$"
"""Regex that, removed from a file stem, leaves the family name."""

Point = tuple[float, float]
CENTER = TextEntityAlignment.MIDDLE_CENTER
LEFT = TextEntityAlignment.MIDDLE_LEFT

_SIGNALS = ("VDD", "GND", "IO", "NC", "RST", "CLK", "SDA", "SCL", "VIN", "EN")
_NOTES = (
    "未注公差 ±0.05",
    "材料: C194 铜合金, 厚度 0.20",
    "镀层: 局部镀银 3-6 µm",
    "半蚀刻区域深度 0.10",
    "DIMENSIONS IN MILLIMETRES",
    "毛刺 ≤ 0.02",
    "共面度 0.08 MAX",
    "PIN 1 IDENTIFIER: SEE DETAIL A",
)
_CHANGES = ("修改引脚长度", "增加散热焊盘", "更新尺寸标注", "调整引脚间距",
            "ADD NOTE 5", "修改标题栏", "REMOVE TIE BAR", "更新镀层要求")


def family_of(name: str) -> str:
    """Family of a drawing name or file stem: ``"QFN-a_rev3"`` -> ``"QFN-a"``."""
    return re.sub(FAMILY_PATTERN, "", name)


@dataclass(frozen=True)
class Family:
    """Structure of one family (sizes in mm, before the drawing scale).

    kind: ``quad`` (pins on 4 sides), ``dual`` (2 sides), ``dual2`` (two
    staggered rows per side), ``sot``, ``strip`` (units in rows x columns) or
    ``bga`` (ball grid).
    """

    name: str
    kind: str
    pins_per_side: int
    pitch: float
    body: Point
    exposed_pad: bool = False
    pin_blocks: bool = True
    gull_wing: bool = False
    pin_table: bool = False
    label_all_pins: bool = False


FAMILIES: tuple[Family, ...] = (
    Family("QFN-a", "quad", 8, 0.5, (5.0, 5.0), exposed_pad=True),
    Family("QFN-b", "quad", 12, 0.4, (7.0, 7.0), exposed_pad=True, pin_blocks=False,
           pin_table=True, label_all_pins=True),
    Family("DFN-a", "dual", 4, 0.65, (3.0, 3.0), exposed_pad=True, label_all_pins=True),
    Family("DFN-b 双排", "dual2", 8, 0.5, (4.0, 6.0), pin_blocks=False, label_all_pins=True),
    Family("SOP-a", "dual", 4, 1.27, (3.9, 4.9), gull_wing=True, label_all_pins=True),
    Family("SOP-b", "dual", 7, 1.27, (3.9, 8.9), exposed_pad=True, gull_wing=True,
           pin_blocks=False, pin_table=True),
    Family("TSSOP-a", "dual", 14, 0.65, (4.4, 9.7), gull_wing=True, pin_table=True,
           label_all_pins=True),
    Family("SOT-a", "sot", 2, 0.95, (2.9, 1.6), gull_wing=True),
    Family("LF-strip-a", "strip", 6, 0.5, (5.0, 5.0)),
    Family("BGA-like (基板)", "bga", 14, 0.8, (13.0, 13.0)),
)


@dataclass(frozen=True)
class Revision:
    """Parameters of one drawing (one revision of a family)."""

    family: Family
    rev: int
    pins_per_side: int
    pitch: float
    body: Point
    lead_len: float
    lead_w: float
    pad: Point
    side_shift: Point
    n_notes: int
    n_holes: int
    extra_dims: bool
    spline: bool
    solid: bool
    fit_spline: bool
    date: str
    drawing_no: str
    grid: tuple[int, int]


def make_revision(family: Family, seed: int, rev: int) -> Revision:
    """Draw the parameters of revision ``rev`` of ``family`` (deterministic)."""
    base = random.Random(f"{seed}/{family.name}")
    rng = random.Random(f"{seed}/{family.name}/{rev}")
    jitter = 1.0 + 0.06 * (base.random() - 0.5)
    bw, bh = family.body[0] * jitter, family.body[1] * jitter
    if rev > 0:
        bw *= 1.0 + 0.05 * (rng.random() - 0.5)
        bh *= 1.0 + 0.05 * (rng.random() - 0.5)
    pins = family.pins_per_side
    if rev > 0 and family.kind in ("quad", "dual", "dual2") and rng.random() < 0.35:
        pins += rng.choice((-1, 1))  # 2 pins more or less on a dual; 4 on a quad
    pitch = family.pitch * (1.0 + (0.04 * (rng.random() - 0.5) if rev else 0.0))
    # Keep pins inside the body edge.
    if family.kind in ("quad", "dual", "dual2"):
        span = bh if family.kind != "quad" else min(bw, bh)
        pins = max(1, min(pins, int((span * 0.95 - 0.55 * pitch) / pitch) + 1))
    lead_len = (0.4 + 0.2 * base.random()) * (1.0 + 0.15 * (rng.random() - 0.5))
    lead_w = pitch * (0.45 + 0.1 * rng.random())
    pad = (bw * (0.45 + 0.12 * rng.random()), bh * (0.45 + 0.12 * rng.random()))
    if family.kind == "strip":
        grid = (4, 30) if rev == 3 else (2 + rev % 2, 8 + 2 * (rev % 3))
    elif family.kind == "bga":
        grid = (36, 12) if rev == 5 else (pins + 2 * (rev % 3), 4)
    else:
        grid = (0, 0)
    return Revision(
        family=family,
        rev=rev,
        pins_per_side=pins,
        pitch=pitch,
        body=(bw, bh),
        lead_len=lead_len,
        lead_w=lead_w,
        pad=pad,
        side_shift=(rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)),
        n_notes=2 + rng.randrange(len(_NOTES) - 2),
        n_holes=rng.randrange(0, 4),
        extra_dims=rng.random() < 0.5,
        spline=rng.random() < 0.85 or rev == 0,
        solid=rng.random() < 0.6 or rev == 0,
        fit_spline=rng.random() < 0.3,
        date=f"2024-{1 + rev * 2 % 12:02d}-{1 + rng.randrange(28):02d}",
        drawing_no=f"LF-{abs(hash_str(family.name)) % 9000 + 1000}-{rng.randrange(100):02d}",
        grid=grid,
    )


def hash_str(s: str) -> int:
    """A process-independent integer hash of ``s`` (Python's ``hash`` is salted)."""
    return random.Random(s).randrange(1 << 30)


class Sheet:
    """Thin drawing helper around one modelspace: layers, text height, dimension style.

    Coordinates are drawing units: package millimetres times ``scale``.
    """

    def __init__(self, doc: Drawing, scale: float, text_height: float) -> None:
        self.doc = doc
        self.msp: Modelspace = doc.modelspace()
        self.k = scale
        self.th = text_height
        self.dim_override = {
            "dimtxt": text_height, "dimasz": text_height * 0.8,
            "dimexe": text_height * 0.4, "dimexo": text_height * 0.25,
            "dimgap": text_height * 0.25, "dimlfac": 1.0 / scale, "dimdec": 2,
        }

    # -- primitives --------------------------------------------------------
    def line(self, a: Point, b: Point, layer: str = "OUTLINE") -> None:
        self.msp.add_line(a, b, dxfattribs={"layer": layer})

    def poly(self, pts: Sequence[Point], *, closed: bool = True, layer: str = "OUTLINE",
             bulges: Sequence[float] | None = None) -> None:
        if bulges is None:
            self.msp.add_lwpolyline(pts, close=closed, dxfattribs={"layer": layer})
        else:
            rows = [(x, y, 0.0, 0.0, b) for (x, y), b in zip(pts, bulges)]
            self.msp.add_lwpolyline(rows, format="xyseb", close=closed,
                                    dxfattribs={"layer": layer})

    def rect(self, cx: float, cy: float, w: float, h: float, layer: str = "OUTLINE") -> list[Point]:
        pts = [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2),
               (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]
        self.poly(pts, layer=layer)
        return pts

    def text(self, s: str, at: Point, h: float | None = None, rot: float = 0.0,
             align: TextEntityAlignment = CENTER, layer: str = "TEXT") -> None:
        style = "HZ" if any(ord(c) > 0x2E80 for c in s) else "Standard"
        self.msp.add_text(s, height=h or self.th, rotation=rot,
                          dxfattribs={"layer": layer, "style": style}).set_placement(at, align=align)

    def mtext(self, s: str, at: Point, h: float | None = None, width: float = 0.0) -> None:
        m = self.msp.add_mtext(s, dxfattribs={"layer": "TEXT", "style": "HZ",
                                              "char_height": h or self.th})
        m.set_location(at)
        if width:
            m.dxf.width = width

    def hatch_solid(self, pts: Sequence[Point], color: int = 8) -> None:
        h = self.msp.add_hatch(color=color, dxfattribs={"layer": "HATCH"})
        h.paths.add_polyline_path(pts, is_closed=True)

    def hatch_pattern(self, pts: Sequence[Point], name: str = "ANSI31", scale: float = 1.0,
                      angle: float = 0.0) -> None:
        h = self.msp.add_hatch(color=7, dxfattribs={"layer": "HATCH"})
        h.set_pattern_fill(name, scale=scale, angle=angle)
        h.paths.add_polyline_path(pts, is_closed=True)

    # -- annotation --------------------------------------------------------
    def dim_linear(self, p1: Point, p2: Point, base: Point, angle: float = 0.0) -> None:
        self.msp.add_linear_dim(base=base, p1=p1, p2=p2, angle=angle,
                                override=self.dim_override,
                                dxfattribs={"layer": "DIM"}).render()

    def dim_aligned(self, p1: Point, p2: Point, distance: float) -> None:
        self.msp.add_aligned_dim(p1=p1, p2=p2, distance=distance,
                                 override=self.dim_override,
                                 dxfattribs={"layer": "DIM"}).render()

    def dim_radius(self, center: Point, radius: float, angle: float) -> None:
        self.msp.add_radius_dim(center=center, radius=radius, angle=angle,
                                dimstyle="EZ_RADIUS", override=self.dim_override,
                                dxfattribs={"layer": "DIM"}).render()

    def leader(self, pts: Sequence[Point], note: str) -> None:
        self.msp.add_leader(pts, override={"dimasz": self.th * 0.8},
                            dxfattribs={"layer": "DIM"})
        self.text(note, (pts[-1][0] + self.th * 0.5, pts[-1][1]), align=LEFT)


def _new_doc() -> Drawing:
    doc = ezdxf.new("R2010", setup=["linetypes", "styles", "dimstyles"])
    doc.styles.add("HZ", font="simsun.ttc")
    for name, color in (("OUTLINE", 7), ("PIN", 3), ("PAD", 5), ("DIM", 1), ("TEXT", 2),
                        ("HATCH", 8), ("CENTER", 4), ("FRAME", 7)):
        doc.layers.add(name, color=color)
    return doc


def _rotate(pts: Sequence[Point], deg: float, at: Point) -> list[Point]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [(at[0] + x * c - y * s, at[1] + x * s + y * c) for x, y in pts]


def _pin_shape(length: float, width: float) -> tuple[list[Point], list[float]]:
    """Pin outline in local coordinates: outer end at x=0, pointing +x, inner end rounded."""
    w = width / 2
    pts = [(0.0, -w), (length - w, -w), (length - w, w), (0.0, w)]
    return pts, [0.0, 1.0, 0.0, 0.0]  # bulge 1 = half circle between vertices 1 and 2


def _pin_block(doc: Drawing, name: str, length: float, width: float) -> BlockLayout:
    blk = doc.blocks.new(name)
    pts, bulges = _pin_shape(length, width)
    blk.add_lwpolyline([(x, y, 0, 0, b) for (x, y), b in zip(pts, bulges)],
                       format="xyseb", close=True, dxfattribs={"layer": "PIN"})
    blk.add_line((0.0, 0.0), (length * 0.6, 0.0), dxfattribs={"layer": "CENTER"})
    return blk


def _pin_positions(r: Revision, k: float) -> list[tuple[Point, float]]:
    """(outer-end position, rotation) of every pin, numbered counter-clockwise from pin 1."""
    bw, bh = r.body[0] * k, r.body[1] * k
    n, p = r.pins_per_side, r.pitch * k
    offs = [(i - (n - 1) / 2) * p for i in range(n)]
    left = [((-bw / 2, -o), 0.0) for o in offs]
    bottom = [((o, -bh / 2), 90.0) for o in offs]
    right = [((bw / 2, o), 180.0) for o in offs]
    top = [((-o, bh / 2), 270.0) for o in offs]
    kind = r.family.kind
    if kind == "quad":
        return left + bottom + right + top
    if kind == "sot":
        return [((-bw / 2, -p), 0.0), ((-bw / 2, p), 0.0), ((bw / 2, 0.0), 180.0)]
    return left + right


def _draw_pins(sh: Sheet, r: Revision, center: Point) -> list[Point]:
    """Draw the pins of the top view, return their outer-end positions."""
    k = sh.k
    length = r.lead_len * k
    width = r.lead_w * k
    placed = []
    positions = _pin_positions(r, k)
    if r.family.kind == "dual2":
        staggered = []
        for (x, y), rot in positions:
            staggered.append(((x, y), rot))
            inward = 1.0 if rot == 0.0 else -1.0
            staggered.append(((x + inward * length * 1.3, y + r.pitch * k / 2), rot))
        positions = staggered
    if r.family.pin_blocks:
        _pin_block(sh.doc, "PIN", length, width)
    shape, bulges = _pin_shape(length, width)
    for (x, y), rot in positions:
        at = (center[0] + x, center[1] + y)
        if r.family.gull_wing:
            rot += 180.0  # gull-wing leads stick out of the body
        if r.family.pin_blocks:
            sh.msp.add_blockref("PIN", at, dxfattribs={"rotation": rot, "layer": "PIN"})
        else:
            sh.poly(_rotate(shape, rot, at), layer="PIN", bulges=bulges)
        placed.append(at)
    return placed


def _package_views(sh: Sheet, r: Revision, rng: random.Random) -> tuple[float, float, float, float]:
    """Top view, side view and section of one package, its land pattern and lead frame;
    returns the content extent."""
    k, th = sh.k, sh.th
    bw, bh = r.body[0] * k, r.body[1] * k
    pins, mark = _top_view(sh, r)
    _top_view_dimensions(sh, r, pins, mark)
    sy, t = _side_view(sh, r)
    # Section A-A to the right, pattern hatch for the mold compound.
    ax = bw + 4 * th
    sec = [(ax - bw / 2, -t / 2), (ax + bw / 2, -t / 2), (ax + bw / 2, t / 2), (ax - bw / 2, t / 2)]
    sh.poly(sec)
    sh.hatch_pattern(sec, "ANSI31", scale=max(0.05, t / 20))
    sh.text("SECTION A-A  剖面", (ax, t / 2 + th * 1.5))
    land_x = bw / 2 + 2 * r.lead_len * k + 6 * th + max(bw, bh) / 2
    land_ext = _land_pattern_view(sh, r, (land_x, -bh / 2 - 3 * th))
    lf_ext = _leadframe_view(sh, r, (-2.2 * max(bw, bh) - 2 * r.lead_len * k - 4 * th, 0.0))
    # Unsupported entities that real drawings carry.
    sh.msp.add_point((0.0, 0.0), dxfattribs={"layer": "CENTER"})
    if rng.random() < 0.5:
        sh.msp.add_ellipse((ax, -t * 3), major_axis=(bw * 0.2, 0.0), ratio=0.4,
                           dxfattribs={"layer": "OUTLINE"})
    for i in range(r.n_holes):
        sh.msp.add_circle((ax - bw / 2 + (i + 1) * bw / 5, -t * 2), th * 0.3,
                          dxfattribs={"layer": "OUTLINE"})
    xmin = min(-bw / 2 - r.lead_len * k - 4 * th, lf_ext[0])
    ymin = min(sy - t - 4 * th, land_ext[1], lf_ext[1])
    xmax = max(ax + bw / 2 + 2 * th, land_ext[2])
    return xmin, ymin, xmax, max(bh / 2 + r.lead_len * k + 4 * th, lf_ext[3])


def _top_view(sh: Sheet, r: Revision) -> tuple[list[Point], Point]:
    """The package from above: body with its pin-1 chamfer, centre lines, pins and their
    numbers, the pin-1 mark, the exposed pad, the mold corner fillets. Returns the pin
    positions and the centre of the pin-1 mark."""
    k, th = sh.k, sh.th
    bw, bh = r.body[0] * k, r.body[1] * k
    ch = min(bw, bh) * 0.08  # pin-1 chamfer
    body = [(-bw / 2 + ch, bh / 2), (-bw / 2, bh / 2 - ch), (-bw / 2, -bh / 2),
            (bw / 2, -bh / 2), (bw / 2, bh / 2)]
    sh.poly(body)
    sh.line((-bw / 2 - th, 0.0), (bw / 2 + th, 0.0), layer="CENTER")
    sh.line((0.0, -bh / 2 - th), (0.0, bh / 2 + th), layer="CENTER")
    pins = _draw_pins(sh, r, (0.0, 0.0))
    if r.family.label_all_pins:
        for i, (x, y) in enumerate(pins):
            dx = -th if x < 0 else th
            sh.text(str(i + 1), (x + dx, y), h=th * 0.6)
    else:
        sh.text("1", (pins[0][0] - th, pins[0][1]), h=th * 0.6)
        sh.text(str(len(pins)), (pins[-1][0] + (th if pins[-1][0] > 0 else -th), pins[-1][1]),
                h=th * 0.6)
    # Pin-1 mark: a circle (and a SOLID triangle in some revisions).
    m = (-bw / 2 + ch * 2.5, bh / 2 - ch * 2.5)
    sh.msp.add_circle(m, ch * 0.6, dxfattribs={"layer": "OUTLINE"})
    if r.solid:
        sh.msp.add_solid([(m[0] - ch, m[1] - ch * 3), (m[0] + ch, m[1] - ch * 3),
                          (m[0], m[1] - ch * 1.5)], dxfattribs={"layer": "OUTLINE"})
    if r.family.exposed_pad:
        _exposed_pad(sh, r)
    # Corner fillets on the body as ARCs (mold corners).
    rr = ch * 0.5
    for cy, a0 in ((-bh / 2 + rr, 270.0), (bh / 2 - rr, 0.0)):
        sh.msp.add_arc((bw / 2 - rr, cy), rr, a0, a0 + 90.0, dxfattribs={"layer": "OUTLINE"})
    return pins, m


def _exposed_pad(sh: Sheet, r: Revision) -> None:
    """The exposed pad (solid hatch), its tie bars to the body corners and its dimensions."""
    k, th = sh.k, sh.th
    bw, bh = r.body[0] * k, r.body[1] * k
    pw, ph = r.pad[0] * k, r.pad[1] * k
    e = min(pw, ph) * 0.1
    ep = [(-pw / 2 + e, ph / 2), (-pw / 2, ph / 2 - e), (-pw / 2, -ph / 2),
          (pw / 2, -ph / 2), (pw / 2, ph / 2)]
    sh.poly(ep, layer="PAD")
    sh.hatch_solid(ep)
    # Tie bars from the pad corners to the body corners (lead frame).
    for sx, sy in ((1, 1), (1, -1), (-1, -1)):
        sh.line((sx * pw / 2, sy * ph / 2), (sx * bw / 2, sy * bh / 2), layer="PAD")
    sh.dim_linear((-pw / 2, -ph / 2), (pw / 2, -ph / 2), base=(0.0, -bh / 2 + th * 1.5))
    sh.dim_aligned((-pw / 2 + e, ph / 2), (-pw / 2, ph / 2 - e), distance=th)


def _top_view_dimensions(sh: Sheet, r: Revision, pins: list[Point], m: Point) -> None:
    """Body size, pitch, the pin-1 mark's radius (and a lead length) of the top view, and
    the leader that names pin 1."""
    k, th = sh.k, sh.th
    bw, bh = r.body[0] * k, r.body[1] * k
    ch = min(bw, bh) * 0.08
    sh.dim_linear((-bw / 2, bh / 2), (bw / 2, bh / 2), base=(0.0, bh / 2 + r.lead_len * k + th * 2))
    sh.dim_linear((bw / 2, -bh / 2), (bw / 2, bh / 2), base=(bw / 2 + r.lead_len * k + th * 2, 0.0),
                  angle=90.0)
    if len(pins) > 1:
        p0, p1 = pins[0], pins[1]
        sh.dim_linear(p0, p1, base=(p0[0] - r.lead_len * k - th * 2, p0[1]), angle=90.0)
    sh.dim_radius(m, ch * 0.6, angle=45.0)
    if r.extra_dims:
        sh.dim_linear(pins[0], (pins[0][0] + r.lead_len * k, pins[0][1]),
                      base=(pins[0][0], pins[0][1] + th * 2))
    sh.leader([(m[0], m[1]), (m[0] + bw * 0.3, m[1] + bh * 0.35), (m[0] + bw * 0.45, m[1] + bh * 0.35)],
              "PIN 1 标识")


def _side_view(sh: Sheet, r: Revision) -> tuple[float, float]:
    """The package from the side, below the top view: body, leads (gull-wing profile or
    flat pads), its height and a mold flash curve. Returns its base line and height."""
    k, th = sh.k, sh.th
    bw, bh = r.body[0] * k, r.body[1] * k
    sx, sy = r.side_shift[0] * k, -bh - 3 * th + r.side_shift[1] * k
    t = min(bw, bh) * 0.18
    sh.rect(sx, sy + t / 2, bw, t)
    sh.line((sx - bw / 2, sy), (sx + bw / 2, sy), layer="OUTLINE")
    if r.family.gull_wing:
        # Gull-wing profile on both ends: out of the body, bend (ARC), down, bend, foot.
        rb = t * 0.15
        for d in (1.0, -1.0):
            x0 = sx + d * bw / 2
            start, end = (180.0, 270.0) if d > 0 else (270.0, 360.0)
            sh.line((x0, sy + t * 0.5), (x0 + d * rb, sy + t * 0.5), layer="PIN")
            sh.msp.add_arc((x0 + d * rb, sy + t * 0.5 - rb), rb, (start + 180.0) % 360.0,
                           (end + 180.0) % 360.0 or 360.0, dxfattribs={"layer": "PIN"})
            sh.line((x0 + d * 2 * rb, sy + t * 0.5 - rb), (x0 + d * 2 * rb, sy + rb), layer="PIN")
            sh.msp.add_arc((x0 + d * 3 * rb, sy + rb), rb, start, end, dxfattribs={"layer": "PIN"})
            sh.line((x0 + d * 3 * rb, sy), (x0 + d * r.lead_len * k, sy), layer="PIN")
        sh.text("GAUGE PLANE", (sx + bw / 2 + r.lead_len * k, sy - th), h=th * 0.5)
    else:
        n_side = r.pins_per_side if r.family.kind != "sot" else 2
        for i in range(n_side):
            x = sx + (i - (n_side - 1) / 2) * r.pitch * k
            sh.rect(x, sy + t * 0.05, r.lead_w * k, t * 0.1, layer="PIN")
    sh.dim_linear((sx - bw / 2, sy), (sx - bw / 2, sy + t), base=(sx - bw / 2 - th * 2, sy), angle=90.0)
    if r.spline:
        # Mold flash / meniscus curve of the side view.
        cps = [(sx - bw / 2 + bw * f, sy + t * (1.0 + 0.12 * math.sin(f * math.pi)))
               for f in (0.0, 0.2, 0.45, 0.7, 1.0)]
        if r.fit_spline:
            sh.msp.add_spline(cps, dxfattribs={"layer": "OUTLINE"})
        else:
            sh.msp.add_open_spline(cps, degree=3, dxfattribs={"layer": "OUTLINE"})
    return sy, t


def _land_pattern_view(sh: Sheet, r: Revision, at: Point) -> tuple[float, float, float, float]:
    """Recommended land pattern: one closed pad polyline per pin (+ the thermal pad)."""
    k, th = sh.k, sh.th
    length = r.lead_len * k
    w = r.lead_w * k * 1.1
    pad = [(-0.4 * length, -w / 2), (0.8 * length, -w / 2), (0.8 * length, w / 2),
           (-0.4 * length, w / 2)]
    bw, bh = r.body[0] * k, r.body[1] * k
    cx, cy = at[0], at[1] - bh / 2 - length
    pins = _pin_positions(r, k)
    for (x, y), rot in pins:
        sh.poly(_rotate(pad, rot, (cx + x, cy + y)), layer="PAD")
    if r.family.exposed_pad:
        sh.rect(cx, cy, r.pad[0] * k * 1.05, r.pad[1] * k * 1.05, layer="PAD")
    (x0, y0), rot0 = pins[0]
    p0 = _rotate([(-0.4 * length, 0.0)], rot0, (cx + x0, cy + y0))[0]
    sh.dim_linear((cx - bw / 2 - 0.4 * length, cy), (cx + bw / 2 + 0.4 * length, cy),
                  base=(cx, cy - bh / 2 - length - 2 * th))
    sh.text("推荐焊盘 RECOMMENDED LAND PATTERN", (cx, cy + bh / 2 + length + th * 1.5))
    sh.msp.add_circle(p0, th * 0.3, dxfattribs={"layer": "PAD"})
    half = max(bw, bh) / 2 + length
    return cx - half - 2 * th, cy - half - 4 * th, cx + half + 2 * th, cy + half + 3 * th


def _leadframe_view(sh: Sheet, r: Revision, at: Point) -> tuple[float, float, float, float]:
    """The lead frame before moulding: frame, dam bar, leads (2 LINE + ARC + half-etch HATCH)."""
    k, th = sh.k, sh.th
    bw, bh = r.body[0] * k, r.body[1] * k
    length, w = r.lead_len * k, r.lead_w * k
    frame = max(bw, bh) + 4 * length
    cx, cy = at
    sh.rect(cx, cy, frame, frame, layer="OUTLINE")
    sh.rect(cx, cy, bw + length, bh + length, layer="CENTER")  # dam bar
    if r.family.exposed_pad:
        pw, ph = r.pad[0] * k, r.pad[1] * k
        sh.rect(cx, cy, pw, ph, layer="PAD")
        for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1)):
            sh.line((cx + sx * pw / 2, cy + sy * ph / 2),
                    (cx + sx * frame / 2, cy + sy * frame / 2), layer="PAD")
    for (x, y), rot in _pin_positions(r, k):
        ext = (frame - (bw if rot in (0.0, 180.0) else bh)) / 2
        tip = length - w / 2
        o = (cx + x, cy + y)
        a1, b1, a2, b2, c = _rotate([(-ext, -w / 2), (tip, -w / 2), (-ext, w / 2), (tip, w / 2),
                                     (tip, 0.0)], rot, o)
        sh.line(a1, b1, layer="PIN")
        sh.line(a2, b2, layer="PIN")
        sh.msp.add_arc(c, w / 2, rot - 90.0, rot + 90.0, dxfattribs={"layer": "PIN"})
        sh.hatch_solid(_rotate([(0.0, -w / 2), (tip, -w / 2), (tip, w / 2), (0.0, w / 2)], rot, o),
                       color=9)
    sh.text("引线框架展开图 LEAD FRAME", (cx, cy + frame / 2 + th * 1.5))
    sh.dim_linear((cx - frame / 2, cy - frame / 2), (cx + frame / 2, cy - frame / 2),
                  base=(cx, cy - frame / 2 - 2 * th))
    half = frame / 2
    return cx - half - 2 * th, cy - half - 4 * th, cx + half + 2 * th, cy + half + 3 * th


def _pin_table(sh: Sheet, r: Revision, n_pins: int, at: Point, rng: random.Random) -> None:
    """Pin assignment table: one row (LINE + 2 TEXT) per pin."""
    th = sh.th
    w, rh = th * 14, th * 1.4
    x0, y0 = at
    sh.rect(x0 + w / 2, y0 - rh * (n_pins + 1) / 2, w, rh * (n_pins + 1), layer="FRAME")
    sh.line((x0 + w * 0.3, y0), (x0 + w * 0.3, y0 - rh * (n_pins + 1)), layer="FRAME")
    sh.text("PIN", (x0 + w * 0.15, y0 - rh / 2), h=th * 0.7)
    sh.text("功能 FUNCTION", (x0 + w * 0.65, y0 - rh / 2), h=th * 0.7)
    for i in range(n_pins):
        y = y0 - rh * (i + 1)
        sh.line((x0, y), (x0 + w, y), layer="FRAME")
        sig = _SIGNALS[rng.randrange(len(_SIGNALS))]
        sig = "空脚" if sig == "NC" else f"{sig}{i}"
        sh.text(str(i + 1), (x0 + w * 0.15, y - rh / 2), h=th * 0.6)
        sh.text(sig, (x0 + w * 0.65, y - rh / 2), h=th * 0.6)


def _strip_views(sh: Sheet, r: Revision) -> tuple[float, float, float, float]:
    """Lead-frame strip: rows x cols units (INSERT of the unit frame + explicit leads)."""
    k, th = sh.k, sh.th
    rows, cols = r.grid
    u = r.body[0] * k * 1.6  # unit pitch
    bw = r.body[0] * k
    blk = sh.doc.blocks.new("UNIT")
    blk.add_lwpolyline([(-u / 2, -u / 2), (u / 2, -u / 2), (u / 2, u / 2), (-u / 2, u / 2)],
                       close=True, dxfattribs={"layer": "OUTLINE"})
    pw = r.pad[0] * k
    blk.add_lwpolyline([(-pw / 2, -pw / 2), (pw / 2, -pw / 2), (pw / 2, pw / 2), (-pw / 2, pw / 2)],
                       close=True, dxfattribs={"layer": "PAD"})
    for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1)):
        blk.add_line((sx * pw / 2, sy * pw / 2), (sx * u / 2, sy * u / 2), dxfattribs={"layer": "PAD"})
    hb = sh.doc.blocks.new("HOLE")
    hb.add_circle((0.0, 0.0), u * 0.08, dxfattribs={"layer": "OUTLINE"})
    hb.add_line((-u * 0.12, 0.0), (u * 0.12, 0.0), dxfattribs={"layer": "CENTER"})
    n = r.pins_per_side
    p = r.pitch * k
    length = r.lead_len * k
    shape, bulges = _pin_shape(length, r.lead_w * k)
    W, H = cols * u, rows * u
    rail = u * 0.6
    sh.rect(W / 2, H / 2, W, H + 2 * rail)
    sh.line((0.0, 0.0), (W, 0.0))
    sh.line((0.0, H), (W, H))
    for row in range(rows):
        for col in range(cols):
            cx, cy = (col + 0.5) * u, (row + 0.5) * u
            sh.msp.add_blockref("UNIT", (cx, cy), dxfattribs={"layer": "OUTLINE"})
            for side in range(4):
                rot = 90.0 * side
                for i in range(n):
                    o = (i - (n - 1) / 2) * p
                    at = _rotate([(-bw / 2, -o)], rot, (cx, cy))[0]
                    sh.poly(_rotate(shape, rot, at), layer="PIN", bulges=bulges)
    for col in range(0, cols + 1, 2):
        for y in (-rail / 2, H + rail / 2):
            sh.msp.add_blockref("HOLE", (col * u, y), dxfattribs={"layer": "OUTLINE"})
    for col in range(cols - 1):
        x = (col + 1) * u
        sh.poly([(x - u * 0.05, -rail * 0.8), (x + u * 0.05, -rail * 0.8),
                 (x + u * 0.05, -rail * 0.4), (x - u * 0.05, -rail * 0.4)],
                layer="OUTLINE", bulges=[0.0, 1.0, 0.0, 1.0])
    # Detail A: one unit magnified with a scaled INSERT.
    dx, dy = W + 3 * u, H / 2
    sh.msp.add_blockref("UNIT", (dx, dy), dxfattribs={"xscale": 3.0, "yscale": 3.0})
    sh.msp.add_circle((u / 2, u / 2), u * 0.7, dxfattribs={"layer": "DIM"})
    sh.text("DETAIL A  放大 3:1", (dx, dy + 2.2 * u))
    sh.hatch_solid([(dx - pw * 1.5, dy - pw * 1.5), (dx + pw * 1.5, dy - pw * 1.5),
                    (dx + pw * 1.5, dy + pw * 1.5), (dx - pw * 1.5, dy + pw * 1.5)])
    sh.hatch_pattern([(0.0, H), (W, H), (W, H + rail), (0.0, H + rail)], "ANSI37",
                     scale=max(0.2, rail / 6))
    sh.dim_linear((0.0, -rail), (W, -rail), base=(W / 2, -rail - 2 * th))
    sh.dim_linear((0.0, 0.0), (u, 0.0), base=(u / 2, H + rail + 2 * th))
    sh.dim_linear((W, -rail), (W, H + rail), base=(W + 2 * th, H / 2), angle=90.0)
    sh.dim_radius((0.0, -rail / 2), u * 0.08, angle=135.0)
    sh.dim_aligned((dx - 1.5 * u, dy - 1.5 * u), (dx + 1.5 * u, dy + 1.5 * u), distance=th * 2)
    sh.leader([(u / 2, u / 2), (u * 1.5, H + rail + th * 3), (u * 3, H + rail + th * 3)],
              "DETAIL A")
    if r.spline:
        sh.msp.add_open_spline([(dx - u, dy - 2 * u), (dx, dy - 2.4 * u), (dx + u, dy - 2 * u),
                                (dx + 1.5 * u, dy - 2.6 * u)], dxfattribs={"layer": "OUTLINE"})
    if r.solid:
        sh.msp.add_solid([(0.0, -rail), (u * 0.3, -rail), (0.0, -rail * 0.7), (u * 0.3, -rail * 0.7)])
    sh.msp.add_point((W / 2, H / 2))
    sh.msp.add_ellipse((dx, dy - 3 * u), major_axis=(u * 0.5, 0.0), ratio=0.3)
    return -2 * u, min(-rail - 5 * th, dy - 4 * u), dx + 2.5 * u, H + rail + 5 * th


def _bga_views(sh: Sheet, r: Revision) -> tuple[float, float, float, float]:
    """Ball grid: bottom view of ball INSERTs, land pattern of CIRCLEs, side view of ARCs."""
    k, th = sh.k, sh.th
    n, hole = r.grid
    p = r.pitch * k
    size = (n + 1) * p
    ball = p * 0.3
    blk = sh.doc.blocks.new("BALL")
    blk.add_circle((0.0, 0.0), ball, dxfattribs={"layer": "PIN"})
    h = blk.add_hatch(color=3)
    h.paths.add_polyline_path([(-ball * 0.5, -ball * 0.5), (ball * 0.5, -ball * 0.5),
                               (ball * 0.5, ball * 0.5), (-ball * 0.5, ball * 0.5)], is_closed=True)
    letters = [c for c in "ABCDEFGHJKLMNPRTUVWY"]
    labels = letters + [a + b for a in "AB" for b in letters]
    sh.rect(0.0, 0.0, size, size)
    sh.msp.add_solid([(-size / 2, size / 2), (-size / 2 + p, size / 2), (-size / 2, size / 2 - p)])
    lx = size + 4 * th
    sh.rect(lx, 0.0, size, size, layer="PAD")
    lo, hi = (n - hole) // 2, (n - hole) // 2 + hole
    for i in range(n):
        y = (i - (n - 1) / 2) * p
        sh.text(labels[i], (-size / 2 - th, -y), h=th * 0.6)
        sh.text(str(i + 1), (y, size / 2 + th), h=th * 0.6)
        for j in range(n):
            if lo <= i < hi and lo <= j < hi:
                continue  # depopulated centre
            x = (j - (n - 1) / 2) * p
            sh.msp.add_blockref("BALL", (x, -y), dxfattribs={"layer": "PIN"})
            sh.msp.add_circle((lx + x, -y), ball * 1.1, dxfattribs={"layer": "PAD"})
    sy = -size / 2 - 4 * th
    t = p * 0.6
    sh.rect(0.0, sy + t / 2, size, t)
    for j in range(n):
        x = (j - (n - 1) / 2) * p
        sh.msp.add_arc((x, sy), ball, 180.0, 360.0, dxfattribs={"layer": "PIN"})
    sh.hatch_pattern([(-size / 2, sy), (size / 2, sy), (size / 2, sy + t), (-size / 2, sy + t)],
                     "ANSI31", scale=max(0.05, t / 10))
    sh.dim_linear((-size / 2, size / 2), (size / 2, size / 2), base=(0.0, size / 2 + 3 * th))
    sh.dim_linear((size / 2, -size / 2), (size / 2, size / 2), base=(size / 2 + 2 * th, 0.0), angle=90.0)
    x0 = -(n - 1) / 2 * p
    sh.dim_linear((x0, -size / 2), (x0 + p, -size / 2), base=(x0, -size / 2 - 1.5 * th))
    sh.dim_radius((lx + x0, (n - 1) / 2 * p), ball * 1.1, angle=45.0)
    sh.dim_aligned((-size / 2, -size / 2), (-size / 2 + p, -size / 2 + p), distance=th)
    sh.leader([(-size / 2, size / 2), (-size / 2 - 3 * th, size / 2 + 3 * th),
               (-size / 2 - 6 * th, size / 2 + 3 * th)], "A1 角标")
    if r.spline:
        sh.msp.add_open_spline([(-size / 2, sy - t), (0.0, sy - 1.5 * t), (size / 2, sy - t),
                                (size / 2 + p, sy - 2 * t)])
    sh.msp.add_point((0.0, 0.0))
    sh.msp.add_ellipse((lx, sy), major_axis=(p, 0.0), ratio=0.5)
    return -size / 2 - 8 * th, sy - 2 * t - 3 * th, lx + size / 2 + 2 * th, size / 2 + 5 * th


def _frame_and_title(sh: Sheet, r: Revision, ext: tuple[float, float, float, float],
                     rng: random.Random) -> None:
    """Sheet frame, title block (引线框架 ...), notes MTEXT and a revision table."""
    th = sh.th
    x0, y0, x1, y1 = ext
    tb_w, tb_h = th * 36, th * 12
    y0 -= tb_h + th * 2
    x1 = max(x1, x0 + tb_w * 1.8)
    m = th
    sh.poly([(x0 - m, y0 - m), (x1 + m, y0 - m), (x1 + m, y1 + m), (x0 - m, y1 + m)], layer="FRAME")
    sh.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], layer="FRAME")
    tx, ty = x1 - tb_w, y0
    sh.poly([(tx, ty), (x1, ty), (x1, ty + tb_h), (tx, ty + tb_h)], layer="FRAME")
    for i in range(1, 4):
        sh.line((tx, ty + i * tb_h / 4), (x1, ty + i * tb_h / 4), layer="FRAME")
    sh.line((tx + tb_w * 0.55, ty), (tx + tb_w * 0.55, ty + tb_h * 0.75), layer="FRAME")
    fam = r.family.name
    sh.text(f"引线框架  {fam}", (tx + tb_w / 2, ty + tb_h * 0.875), h=th * 1.2)
    sh.text(f"图号 {r.drawing_no}", (tx + tb_w * 0.27, ty + tb_h * 0.625))
    sh.text(f"REV {chr(ord('A') + r.rev)}", (tx + tb_w * 0.77, ty + tb_h * 0.625))
    sh.text(f"比例 {int(sh.k)}:1", (tx + tb_w * 0.27, ty + tb_h * 0.375))
    sh.text("单位 mm", (tx + tb_w * 0.77, ty + tb_h * 0.375))
    sh.text(f"日期 {r.date}", (tx + tb_w * 0.27, ty + tb_h * 0.125))
    sh.text(rng.choice(("设计 张工", "设计 李工", "DRAWN J.W.", "设计 王工")),
            (tx + tb_w * 0.77, ty + tb_h * 0.125))
    notes = "\\P".join(f"{i + 1}. {_NOTES[(i + r.rev) % len(_NOTES)]}" for i in range(r.n_notes))
    sh.mtext("技术要求 NOTES:\\P" + notes, (x0 + th, y0 + max(tb_h, (r.n_notes + 1) * th * 1.8)),
             width=tb_w)
    # Revision table: one row per revision so far.
    rx, ry = tx, ty + tb_h + th * 1.5 * (r.rev + 1)
    for i in range(r.rev + 1):
        y = ry - i * th * 1.5
        sh.line((rx, y), (x1, y), layer="FRAME")
        sh.text(chr(ord("A") + i), (rx + th, y - th * 0.75), h=th * 0.6)
        sh.text(_CHANGES[(i + hash_str(fam)) % len(_CHANGES)], (rx + th * 3, y - th * 0.75),
                h=th * 0.6, align=LEFT)


def build_drawing(r: Revision, seed: int) -> Drawing:
    """Build the DXF document of one revision."""
    rng = random.Random(f"{seed}/{r.family.name}/{r.rev}/draw")
    doc = _new_doc()
    kind = r.family.kind
    if kind == "strip":
        sh = Sheet(doc, scale=1.0, text_height=r.body[0] * 0.25)
        ext = _strip_views(sh, r)
    elif kind == "bga":
        sh = Sheet(doc, scale=10.0, text_height=2.5)
        ext = _bga_views(sh, r)
    else:
        sh = Sheet(doc, scale=10.0, text_height=2.5 * max(1.0, max(r.body) / 8.0))
        ext = _package_views(sh, r, rng)
        if r.family.pin_table:
            n_pins = len(_pin_positions(r, 1.0))
            _pin_table(sh, r, n_pins, (ext[2] + sh.th * 2, ext[3]), rng)
            ext = (ext[0], min(ext[1], ext[3] - sh.th * 1.4 * (n_pins + 2)),
                   ext[2] + sh.th * 18, ext[3])
    _frame_and_title(sh, r, ext, rng)
    return doc


@contextmanager
def fixed_metadata() -> Iterator[None]:
    """Write fixed header dates/GUIDs while saving, so that a seed gives the same bytes
    (restores the option afterwards)."""
    old = ezdxf.options.write_fixed_meta_data_for_testing
    ezdxf.options.write_fixed_meta_data_for_testing = True
    try:
        yield
    finally:
        ezdxf.options.write_fixed_meta_data_for_testing = old


def make_sample_corpus(output_dir: Path, seed: int = 0, n_revisions: int = 6) -> list[Path]:
    """Write ``len(FAMILIES) * n_revisions`` drawings ``<family>_rev<k>.dxf`` into ``output_dir``.

    Same ``seed`` -> byte-identical files. Returns the written paths in order.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with fixed_metadata():
        for fam in FAMILIES:
            for rev in range(n_revisions):
                r = make_revision(fam, seed, rev)
                doc = build_drawing(r, seed)
                # ezdxf registers CLASS records in set order (salted by PYTHONHASHSEED);
                # registering them sorted first keeps the CLASSES section stable.
                for dxftype in sorted(doc.entitydb.dxf_types_in_use()):
                    doc.classes.add_class(dxftype)
                path = output_dir / f"{fam.name}_rev{rev}.dxf"
                doc.saveas(path)
                paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write the bundled sample corpus of synthetic "
                                             "package-outline DXF drawings.")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="output folder")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--per_family", type=int, default=6, help="revisions per family")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    paths = make_sample_corpus(args.output, seed=args.seed, n_revisions=args.per_family)
    dt = time.perf_counter() - t0
    print(f"wrote {len(paths)} drawings ({len(FAMILIES)} families x {args.per_family} "
          f"revisions) to {args.output} in {dt:.1f} s")
    for fam in FAMILIES:
        print(f"  {fam.name}_rev0..{args.per_family - 1}.dxf  ({fam.kind})")


if __name__ == "__main__":
    main()
