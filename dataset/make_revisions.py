"""Revision benchmark: edit real drawings the way CAD users do, and split by source.

    python dataset/make_revisions.py                       # lead-frame + large third-party files
    python dataset/make_revisions.py --input data/dxf/leadframe --max_sources 60 --revisions 3

For every source drawing, ``--revisions`` new drawings ``<name>__rev<k>.dxf`` are
written beside a byte copy of the source ``<name>.dxf``. Each revision is a random
combination (every edit drawn with probability ``--p_edit``, at least one) of:

- rotate the whole drawing by 90° or 180° about the centre of its extents or the origin;
- change units: scale by 25.4 (inch -> mm) or 1/25.4 (mm -> inch), ``$INSUNITS`` updated;
- move the whole drawing;
- explode some block references (``Insert.explode``);
- delete 1-5 % of the modelspace entities (``--change_range``);
- add 1-5 % (copies of existing entities, shifted; their handles come after all others);
- edit texts (the content of some TEXT/MTEXT entities changes);
- save as another DXF version (R2000 ... R2018);
- redraw a region (``--region``, off by default): the entities of a random rectangle
  (``--region_range`` of each side of the extents) are deleted and replaced by shifted
  copies of the entities of another rectangle of the same size: a detail redrawn.

``--hard`` is the harder variant used for the selection/report benchmark (see
``docs/evaluation.md``): every edit more likely (``--p_edit 0.7``), 80-100 % of the block
references exploded, 5-15 % deleted and added, and the region edit on.

The whole-drawing moves use ezdxf's transformation API (``ezdxf.transform.inplace``);
an entity that cannot be transformed is deleted and counted, never a crash. A source
that cannot be read is skipped with its reason. Everything is deterministic per
``--seed``.

Writes into ``--output``:

- the drawings;
- ``groups.json``: a JSON list of groups of drawing names (a source and its revisions);
- ``splits.json``: sources split by source group (pieces ``_1``, ``_2`` of one sheet stay
  together) into ``train`` (models may train on these), ``selection`` (designs and
  hyper-parameters are chosen here) and ``report`` (the final table only);
- ``revisions.json``: what was done to every revision, and the skipped sources.

Inputs: ``--input`` folders searched recursively. A folder holding an ``inventory.tsv``
(columns ``path``, ``status``, ``msp_entities``) contributes only the files listed there
as readable with at least ``--min_entities`` modelspace entities.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ezdxf.lldxf.const import DXFError
from ezdxf.transform import CopyNotSupported
from ezdxf import transform as eztransform
from ezdxf.document import Drawing
from ezdxf.entities import DXFGraphic
from ezdxf.layouts import Modelspace
from ezdxf.math import Matrix44

from dataset.dxf_read import MAX_ABS_COORD, BoxComputer, DrawingError, modelspace_boxes, open_dxf
from dataset.make_sample_dxf import fixed_metadata
from dataset.files import atomic_write_text
from dataset.names import group_of
from dataset.parallel import run_tasks

logging.getLogger("ezdxf").setLevel(logging.ERROR)

__all__ = ["RevisionPlan", "RevisionRecord", "draw_plan", "drawing_extents", "apply_plan", "save_doc", "SourceTask",
           "revise_source", "find_sources", "make_splits", "revision_groups", "generate", "main"]

#: ``$DXF_BENCH_DIR`` (default ``data/dxf``): where the bench keeps real drawings (``bench/bench_data.py``)
BENCH_DXF = Path(os.environ.get("DXF_BENCH_DIR", "data/dxf"))
DEFAULT_INPUTS = (str(BENCH_DXF / "leadframe"), str(BENCH_DXF / "thirdparty"))
DEFAULT_OUTPUT = "data/bench/revisions"
INCH = 25.4
#: ``$INSUNITS`` codes: 1 inch, 4 millimetre.
INSUNITS_INCH, INSUNITS_MM = 1, 4
#: DXF versions a revision may be saved as (ezdxf writes these; R12 would drop entities).
SAVE_VERSIONS = ("AC1015", "AC1018", "AC1021", "AC1024", "AC1027", "AC1032")
SPLIT_NAMES = ("train", "selection", "report")
#: What ezdxf raises on entities it cannot explode or copy (odd or damaged data).
_EZDXF_ERRORS = (DXFError, ArithmeticError, ValueError, TypeError, AttributeError, KeyError, IndexError)
DEFAULT_FRACTIONS = (0.5, 0.25, 0.25)
REV_SEPARATOR = "__rev"
#: Range of the share of entities deleted (and, separately, added) by one revision.
DEFAULT_CHANGE = (0.01, 0.05)
#: Range of the share of modelspace INSERTs exploded by one revision.
DEFAULT_EXPLODE = (0.2, 0.6)
#: Range of the side of a redrawn region, as a share of each side of the extents.
DEFAULT_REGION = (0.2, 0.4)
#: ``--hard``: (p_edit, change range, explode range, region edit on).
HARD = {"p_edit": 0.7, "change": (0.05, 0.15), "explode": (0.8, 1.0), "region": True}


# ------------------------------------------------------------------ the plan
@dataclass
class RevisionPlan:
    """The edits of one revision (``None`` / 0 = that edit is not made).

    Attributes:
        rotate: 90 or 180 degrees (counter-clockwise).
        rotate_about: ``"centre"`` (of the modelspace extents) or ``"origin"``.
        scale: 25.4 or 1/25.4 (the units change).
        move: ``(dx, dy)`` in drawing units (before scaling).
        explode_fraction: share of modelspace INSERTs exploded (at least one if any).
        delete_fraction: share of modelspace entities deleted (at least one).
        add_fraction: share of modelspace entities added as shifted copies (at least one).
        text_fraction: share of TEXT/MTEXT entities whose content changes (at least one).
        version: DXF version (``AC1015`` ...) to save as.
        region: ``(x0, y0, x1, y1, dx, dy)`` as shares of the extents: the entities whose box
            centre lies in the rectangle ``[x0, x1] x [y0, y1]`` are deleted, then those of the
            same rectangle moved by ``(dx, dy)`` are copied into it (None: no region edit).
    """

    rotate: Optional[int] = None
    rotate_about: str = "centre"
    scale: Optional[float] = None
    move: Optional[tuple[float, float]] = None
    explode_fraction: float = 0.0
    delete_fraction: float = 0.0
    add_fraction: float = 0.0
    text_fraction: float = 0.0
    version: Optional[str] = None
    region: Optional[tuple[float, float, float, float, float, float]] = None

    def edits(self) -> list[str]:
        """Names of the edits this plan makes."""
        out = []
        if self.rotate:
            out.append(f"rotate{self.rotate}@{self.rotate_about}")
        if self.scale:
            out.append("units x25.4" if self.scale > 1 else "units /25.4")
        if self.move:
            out.append("move")
        for name in ("explode", "delete", "add", "text"):
            if getattr(self, f"{name}_fraction") > 0:
                out.append(name)
        if self.version:
            out.append(f"save {self.version}")
        if self.region:
            out.append("region")
        return out


@dataclass
class RevisionRecord:
    """What :func:`apply_plan` did (counts of entities)."""

    plan: dict = field(default_factory=dict)
    n_source: int = 0
    exploded_inserts: int = 0
    explode_failed: int = 0
    exploded_entities: int = 0
    deleted: int = 0
    added: int = 0
    texts_edited: int = 0
    region_deleted: int = 0
    region_added: int = 0
    transform_failed: dict = field(default_factory=dict)
    version: str = ""
    version_note: str = ""
    n_result: int = 0


def draw_plan(rng: random.Random, dxfversion: str, p_edit: float = 0.5,
              change: tuple[float, float] = DEFAULT_CHANGE,
              explode: tuple[float, float] = DEFAULT_EXPLODE, region: bool = False,
              region_range: tuple[float, float] = DEFAULT_REGION) -> RevisionPlan:
    """A random combination of edits (each with probability ``p_edit``, at least one);
    deletions and additions are each a share drawn uniformly from ``change``, the
    exploded share of block references from ``explode``; ``region`` adds the region
    edit to the candidates (its side a share drawn from ``region_range``).

    The draws of the default call (``region=False``) are those of earlier versions, so
    a seed keeps giving the same revisions."""
    names = ["rotate", "units", "move", "explode", "delete", "add", "text", "version"]
    if region:
        names.append("region")
    chosen = [n for n in names if rng.random() < p_edit]
    if not chosen:
        chosen = [rng.choice(names)]
    plan = RevisionPlan()
    if "rotate" in chosen:
        plan.rotate = rng.choice((90, 180))
        plan.rotate_about = rng.choice(("centre", "origin"))
    if "units" in chosen:
        plan.scale = INCH if rng.random() < 0.5 else 1.0 / INCH
    if "move" in chosen:
        # a fraction or multiple of the drawing's size: resolved against the extents in apply_plan
        plan.move = (rng.uniform(-3.0, 3.0), rng.uniform(-3.0, 3.0))
    if "explode" in chosen:
        plan.explode_fraction = rng.uniform(*explode)
    if "delete" in chosen:
        plan.delete_fraction = rng.uniform(*change)
    if "add" in chosen:
        plan.add_fraction = rng.uniform(*change)
    if "text" in chosen:
        plan.text_fraction = rng.uniform(0.1, 0.5)
    if "version" in chosen:
        others = [v for v in SAVE_VERSIONS if v != dxfversion]
        plan.version = rng.choice(others)
    if "region" in chosen:
        side = rng.uniform(*region_range)
        x0, y0 = rng.uniform(0.0, 1.0 - side), rng.uniform(0.0, 1.0 - side)
        # the source rectangle: another place of the drawing (it may overlap the first)
        sx, sy = rng.uniform(0.0, 1.0 - side), rng.uniform(0.0, 1.0 - side)
        plan.region = (x0, y0, x0 + side, y0 + side, sx - x0, sy - y0)
    return plan


# ------------------------------------------------------------------ the edits
def drawing_extents(doc: Drawing) -> tuple[float, float, float, float]:
    """``(cx, cy, width, height)`` of the modelspace from per-entity boxes (the
    preprocessing's box code, blocks boxed once); ``(0, 0, 1, 1)`` when unknown."""
    b = modelspace_boxes(doc)
    b = b[(np.abs(b) <= MAX_ABS_COORD).all(axis=1)]  # drops NaN/inf and absurd boxes
    if not len(b):
        return 0.0, 0.0, 1.0, 1.0
    lo, hi = b[:, :2].min(axis=0), b[:, 2:].max(axis=0)
    return (float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2,
            max(float(hi[0] - lo[0]), 1e-9), max(float(hi[1] - lo[1]), 1e-9))


def _n_of(fraction: float, n: int) -> int:
    """``round(fraction * n)``, at least 1 when ``fraction > 0`` and ``n > 0``, at most ``n``."""
    if fraction <= 0 or n <= 0:
        return 0
    return min(n, max(1, round(fraction * n)))


def _ensure_handle_seed(doc: Drawing) -> int:
    """Move the handle generator past every handle in use; returns the largest handle."""
    top = 0
    for h in doc.entitydb.keys():
        try:
            top = max(top, int(h, 16))
        except (TypeError, ValueError):
            continue
    handles = doc.entitydb.handles
    if int(str(handles), 16) <= top:
        handles.reset(f"{top + 1:X}")
    return top


def _edit_text(s: str, rng: random.Random) -> str:
    """A changed text: one digit replaced by another, else a revision note appended."""
    digits = [i for i, ch in enumerate(s) if ch.isdigit()]
    if digits:
        i = rng.choice(digits)
        new = rng.choice([d for d in "0123456789" if d != s[i]])
        return s[:i] + new + s[i + 1:]
    return s + rng.choice((" REV B", " (CHANGED)", " 修改", " *"))


def apply_plan(doc: Drawing, plan: RevisionPlan, rng: random.Random,
               extents: Optional[tuple[float, float, float, float]] = None) -> RevisionRecord:
    """Apply ``plan`` to ``doc`` in place (modelspace only).

    Order: explode, delete, add, edit texts, redraw a region, then one whole-drawing transformation
    (rotation, units, move), then the DXF version. Entities that fail to transform are
    deleted and counted per type in ``transform_failed``. ``extents``: the source's
    :func:`drawing_extents` when known (computed here otherwise).
    """
    msp = doc.modelspace()
    rec = RevisionRecord(plan=asdict(plan), n_source=len(msp))
    cx, cy, w, h = extents if extents is not None else drawing_extents(doc)
    _ensure_handle_seed(doc)
    _place_dimension_blocks(msp)
    if plan.explode_fraction > 0:
        _explode(msp, plan.explode_fraction, rng, rec)
    if plan.delete_fraction > 0:  # shares are of the source's entity count
        entities = list(msp)
        for e in rng.sample(entities, min(len(entities), _n_of(plan.delete_fraction, rec.n_source))):
            msp.delete_entity(e)
            rec.deleted += 1
    if plan.add_fraction > 0:
        _add_copies(msp, _n_of(plan.add_fraction, rec.n_source), (w, h), rng, rec)
    if plan.text_fraction > 0:
        texts = [e for e in msp if e.dxftype() in ("TEXT", "MTEXT")]
        for e in rng.sample(texts, _n_of(plan.text_fraction, len(texts))):
            if e.dxftype() == "TEXT":
                e.dxf.text = _edit_text(e.dxf.get("text", ""), rng)
            else:
                e.text = _edit_text(e.text, rng)
            rec.texts_edited += 1
    if plan.region:
        _redraw_region(doc, plan.region, (cx, cy, w, h), rec)
    _transform_whole(doc, plan, (cx, cy, w, h), rec)
    rec.version = doc.dxfversion
    if plan.version and plan.version != doc.dxfversion:
        try:
            doc.dxfversion = plan.version
            rec.version = plan.version
        except Exception as err:  # DXFVersionError or an upgrade ezdxf cannot do: keep the version
            rec.version_note = f"kept {doc.dxfversion} ({type(err).__name__}: {err})"[:200]
    rec.n_result = len(msp)
    return rec


def _explode(msp: Modelspace, fraction: float, rng: random.Random, rec: RevisionRecord) -> None:
    """Explode ``fraction`` of the modelspace INSERTs (at least one if any); a block that
    cannot be exploded is counted and its INSERT kept."""
    inserts = [e for e in msp if e.dxftype() == "INSERT"]
    for e in rng.sample(inserts, _n_of(fraction, len(inserts))):
        try:
            parts = e.explode()
        except _EZDXF_ERRORS as err:  # odd or broken blocks: count, keep the INSERT
            rec.explode_failed += 1
            logging.getLogger(__name__).debug("explode failed: %s", err)
            continue
        rec.exploded_inserts += 1
        rec.exploded_entities += len(parts)


def _add_copies(msp: Modelspace, want: int, size: tuple[float, float], rng: random.Random,
                rec: RevisionRecord) -> None:
    """Add ``want`` copies of random entities, each shifted by up to 10 % of the extents' ``size``;
    entities that cannot be copied or moved are passed over."""
    w, h = size
    entities = list(msp)
    candidates = rng.sample(entities, min(len(entities), 4 * want + 8))
    for e in candidates:
        if rec.added >= want:
            break
        try:
            copy = e.copy()
        except (CopyNotSupported, *_EZDXF_ERRORS):  # not copyable: try another entity
            continue
        msp.add_entity(copy)
        shift = Matrix44.translate(rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.1, 0.1) * h, 0.0)
        log = eztransform.inplace([copy], shift)
        if len(log):
            msp.delete_entity(copy)
            continue
        rec.added += 1


def _transform_whole(doc: Drawing, plan: RevisionPlan, extents: tuple[float, float, float, float],
                     rec: RevisionRecord) -> None:
    """The plan's rotation, move and units change as one transformation of the modelspace;
    entities that fail to transform are deleted and counted per type."""
    cx, cy, w, h = extents
    steps: list[Matrix44] = []
    if plan.rotate:
        ox, oy = (cx, cy) if plan.rotate_about == "centre" else (0.0, 0.0)
        steps += [Matrix44.translate(-ox, -oy, 0.0), Matrix44.z_rotate(math.radians(plan.rotate)),
                  Matrix44.translate(ox, oy, 0.0)]
    if plan.move:
        steps.append(Matrix44.translate(plan.move[0] * w, plan.move[1] * h, 0.0))
    if plan.scale:
        steps.append(Matrix44.scale(plan.scale, plan.scale, plan.scale))
        doc.units = INSUNITS_MM if plan.scale > 1 else INSUNITS_INCH
        doc.header["$MEASUREMENT"] = 1 if plan.scale > 1 else 0
    if not steps:
        return
    msp = doc.modelspace()
    log = eztransform.inplace(list(msp), Matrix44.chain(*steps))
    failed: dict[str, int] = {}
    for entry in log:
        entity = entry.entity
        if entity.is_alive:
            failed[entity.dxftype()] = failed.get(entity.dxftype(), 0) + 1
            msp.delete_entity(entity)
    rec.transform_failed = failed


def _place_dimension_blocks(msp: Modelspace) -> int:
    """Move each DIMENSION's geometry block content to where its ``insert`` (group 12)
    places it and drop ``insert``; returns how many were moved.

    ezdxf transforms a DIMENSION's block content only when it has no ``insert``; with
    one, a turn or a units change would move the measured points but leave the drawn
    dimension where it was, which no CAD program does (it redraws the dimension). Real
    lead-frame drawings place most dimension blocks this way. A block shared by several
    DIMENSIONs is left as it is."""
    dims = [d for d in msp.query("DIMENSION") if d.dxf.hasattr("geometry")]
    users = Counter(d.dxf.geometry for d in dims)
    moved = 0
    for d in dims:
        block = d.get_geometry_block()
        if not d.dxf.hasattr("insert") or block is None or users[d.dxf.geometry] != 1:
            continue
        offset = d.ocs().to_wcs(d.dxf.insert)
        if offset.magnitude > 0:
            eztransform.inplace(list(block), Matrix44.translate(offset.x, offset.y, offset.z))
        d.dxf.discard("insert")
        moved += 1
    return moved


def _box_centres(doc: Drawing, entities: Sequence[DXFGraphic]) -> np.ndarray:
    """``[n, 2]`` box centres of ``entities`` (NaN where an entity has no usable box)."""
    boxer = BoxComputer(doc)
    out = np.full((len(entities), 2), np.nan)
    for i, e in enumerate(entities):
        try:
            box = boxer.box(e)
        except (ArithmeticError, ValueError, TypeError, AttributeError, IndexError, KeyError, DXFError):
            continue
        if box is not None:
            out[i] = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
    return out


def _redraw_region(doc: Drawing, region: tuple[float, float, float, float, float, float],
                   extents: tuple[float, float, float, float], rec: RevisionRecord) -> None:
    """The region edit of :class:`RevisionPlan`: delete the entities whose box centre is
    in the target rectangle, then copy there (shifted) those of the source rectangle.
    Counts go to ``rec.region_deleted`` / ``rec.region_added``."""
    msp = doc.modelspace()
    cx, cy, w, h = extents
    x_lo, y_lo = cx - w / 2.0, cy - h / 2.0
    x0, y0, x1, y1, dx, dy = region
    entities = list(msp)
    centres = _box_centres(doc, entities)
    u = (centres[:, 0] - x_lo) / w
    v = (centres[:, 1] - y_lo) / h
    with np.errstate(invalid="ignore"):
        target = (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)
        source = (u >= x0 + dx) & (u <= x1 + dx) & (v >= y0 + dy) & (v <= y1 + dy)
    copies = [entities[i] for i in np.flatnonzero(source)]
    for i in np.flatnonzero(target):
        msp.delete_entity(entities[i])
        rec.region_deleted += 1
    shift = Matrix44.translate(-dx * w, -dy * h, 0.0)
    for e in copies:
        if not e.is_alive:  # in both rectangles: deleted above, nothing to copy
            continue
        try:
            copy = e.copy()
        except (CopyNotSupported, *_EZDXF_ERRORS):
            continue
        msp.add_entity(copy)
        if len(eztransform.inplace([copy], shift)):
            msp.delete_entity(copy)
            continue
        rec.region_added += 1


def save_doc(doc: Drawing, path: Path) -> None:
    """Save ``doc`` as ASCII DXF at ``path`` (atomically, stable bytes per content)."""
    for dxftype in sorted(doc.entitydb.dxf_types_in_use()):
        doc.classes.add_class(dxftype)  # CLASS order would otherwise follow set order

    def write(tmp: Path) -> None:
        with fixed_metadata():
            doc.saveas(tmp)

    from dataset.files import atomic_write

    atomic_write(path, write)
    path.chmod(0o644)  # the temporary file was private


# ------------------------------------------------------------------ one source
@dataclass
class SourceTask:
    """One source drawing to revise (picklable for worker processes)."""

    path: str
    name: str
    output: str
    n_revisions: int
    seed: int
    p_edit: float = 0.5
    change: tuple[float, float] = DEFAULT_CHANGE
    explode: tuple[float, float] = DEFAULT_EXPLODE
    region: bool = False


def revise_source(task: SourceTask) -> dict:
    """Copy the source and write its revisions.

    Returns:
        ``{"name", "path", "revisions": [record dicts], "skipped": reason or None}``.
    """
    out = Path(task.output)
    result: dict = {"name": task.name, "path": task.path, "revisions": [], "skipped": None}
    try:
        doc, recovered = open_dxf(task.path)
    except DrawingError as err:
        result["skipped"] = err.reason
        return result
    if len(doc.modelspace()) == 0:
        result["skipped"] = "no modelspace entities"
        return result
    source_version = doc.dxfversion
    extents = drawing_extents(doc)
    shutil.copyfile(task.path, out / f"{task.name}.dxf")
    for k in range(task.n_revisions):
        if k > 0:
            doc, recovered = open_dxf(task.path)  # every revision starts from the source
        rng = random.Random(f"{task.seed}/{task.name}/{k}")
        plan = draw_plan(rng, source_version, task.p_edit, tuple(task.change), tuple(task.explode), task.region)
        rec = apply_plan(doc, plan, rng, extents)
        name = f"{task.name}{REV_SEPARATOR}{k}"
        save_doc(doc, out / f"{name}.dxf")
        entry = asdict(rec)
        entry.update({"name": name, "edits": plan.edits(), "recovered": recovered})
        result["revisions"].append(entry)
    return result


# ------------------------------------------------------------------ sources
def _inventory_files(root: Path, min_entities: int) -> Optional[list[Path]]:
    """Files an ``inventory.tsv`` in ``root`` lists as readable with >= ``min_entities``
    modelspace entities; None when there is no inventory."""
    inv = root / "inventory.tsv"
    if not inv.is_file():
        return None
    files = []
    with open(inv, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            try:
                n = int(row.get("msp_entities") or 0)
            except ValueError:
                continue
            if row.get("status") in ("ok", "recover") and n >= min_entities:
                files.append(root / row["path"])
    return sorted(files)


def find_sources(inputs: Sequence[str | Path], min_entities: int = 100) -> list[tuple[Path, str]]:
    """Source drawings under ``inputs`` with unique names (the file stem; the parent
    folder's name is prefixed where stems repeat). Missing folders are skipped."""
    paths: list[Path] = []
    for entry in inputs:
        root = Path(entry)
        if root.is_file():
            paths.append(root)
            continue
        if not root.is_dir():
            print(f"note: input {root} not found, skipped", file=sys.stderr)
            continue
        listed = _inventory_files(root, min_entities)
        if listed is None:
            listed = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".dxf" and p.is_file())
        paths.extend(p for p in listed if p.is_file())
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for p in paths:
        name = p.stem
        if name in seen:
            name = f"{p.parent.name}__{p.stem}"
        k = 2
        base = name
        while name in seen:
            name, k = f"{base}#{k}", k + 1
        seen.add(name)
        out.append((p, name))
    return out


# ------------------------------------------------------------------ splits
def _hash01(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (independent of PYTHONHASHSEED)."""
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:12], 16) / float(16 ** 12)


def make_splits(names: Sequence[str], seed: int = 0,
                fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, list[str]]:
    """Split source drawings into ``train``, ``selection`` and ``report`` by group.

    Drawings of one group (``dataset.names.group_of``: pieces ``_1``, ``_2`` and
    revisions of one sheet) land in one split. Groups are ordered by a seeded hash and
    cut at the cumulative ``fractions`` of drawings, so a seed always gives the same
    split and adding a source moves few others.

    Returns:
        ``{"train": [...], "selection": [...], "report": [...]}`` (sorted names).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {list(fractions)}")
    total = float(sum(fractions))
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(group_of(n), []).append(n)
    order = sorted(groups, key=lambda g: (_hash01(f"{seed}/{g}"), g))
    n_all = len(names)
    bounds = [fractions[0] / total * n_all, (fractions[0] + fractions[1]) / total * n_all]
    out: dict[str, list[str]] = {s: [] for s in SPLIT_NAMES}
    done = 0
    for g in order:
        members = groups[g]
        mid = done + len(members) / 2.0  # the group goes where its middle falls
        split = "train" if mid < bounds[0] else "selection" if mid < bounds[1] else "report"
        out[split].extend(members)
        done += len(members)
    return {s: sorted(v) for s, v in out.items()}


def revision_groups(results: Sequence[dict]) -> list[list[str]]:
    """Groups of names: each source with its revisions (sources that were skipped left out)."""
    return [[r["name"]] + [v["name"] for v in r["revisions"]] for r in results if not r["skipped"]]


# ------------------------------------------------------------------ main
def generate(inputs: Sequence[str | Path], output: str | Path, n_revisions: int = 3, seed: int = 0, *,
             max_sources: int = 0, min_entities: int = 100, p_edit: float = 0.5, workers: int = 1,
             timeout: float = 600, fractions: Sequence[float] = DEFAULT_FRACTIONS,
             quiet: bool = False, change: Sequence[float] = DEFAULT_CHANGE,
             explode: Sequence[float] = DEFAULT_EXPLODE, region: bool = False) -> dict:
    """Write revisions of the sources under ``inputs`` into ``output``.

    ``explode``: range of the exploded share of block references; ``region``: the region
    edit is one of the candidate edits (see :func:`draw_plan`).

    Returns:
        ``{"groups", "splits", "records", "skipped"}`` (also written as JSON files).
    """
    if not 0.0 <= change[0] <= change[1] <= 1.0:
        raise ValueError(f"change range must satisfy 0 <= LO <= HI <= 1, got {list(change)}")
    if not 0.0 <= explode[0] <= explode[1] <= 1.0:
        raise ValueError(f"explode range must satisfy 0 <= LO <= HI <= 1, got {list(explode)}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    sources = find_sources(inputs, min_entities)
    if max_sources and len(sources) > max_sources:
        rng = random.Random(f"{seed}/sources")
        keep = sorted(rng.sample(range(len(sources)), max_sources))
        sources = [sources[i] for i in keep]
    tasks = [SourceTask(str(p), name, str(out), n_revisions, seed, p_edit, (float(change[0]), float(change[1])),
                        (float(explode[0]), float(explode[1])), bool(region))
             for p, name in sources]
    results: list[dict] = []
    skipped: list[dict] = []
    for res in run_tasks(revise_source, tasks, workers=workers, timeout=timeout):
        if res.error is not None:
            skipped.append({"name": res.task.name, "path": res.task.path, "reason": res.error})
        elif res.value["skipped"]:
            skipped.append({"name": res.task.name, "path": res.task.path, "reason": res.value["skipped"]})
        else:
            results.append(res.value)
        if not quiet:
            what = skipped[-1]["reason"] if skipped and skipped[-1]["name"] == res.task.name else \
                f"{len(res.value['revisions'])} revisions"
            print(f"[{len(results) + len(skipped)}/{len(tasks)}] {res.task.name}: {what} ({res.seconds:.1f} s)",
                  flush=True)
    results.sort(key=lambda r: r["name"])
    groups = revision_groups(results)
    splits = make_splits([r["name"] for r in results], seed, fractions)
    atomic_write_text(out / "groups.json", json.dumps(groups, indent=1, ensure_ascii=False))
    atomic_write_text(out / "splits.json", json.dumps(
        {"seed": seed, "fractions": list(fractions), "unit": "source drawing (by group)", **splits},
        indent=1, ensure_ascii=False))
    records = {v["name"]: {**v, "source": r["name"]} for r in results for v in r["revisions"]}
    atomic_write_text(out / "revisions.json", json.dumps(
        {"seed": seed, "n_revisions": n_revisions, "p_edit": p_edit, "change": list(change),
         "explode": list(explode), "region": bool(region),
         "revisions": records, "skipped": skipped},
        indent=1, ensure_ascii=False))
    return {"groups": groups, "splits": splits, "records": records, "skipped": skipped}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", nargs="+", default=list(DEFAULT_INPUTS),
                        help="folders (searched recursively) or files of source drawings")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="where drawings and JSON files go")
    parser.add_argument("--revisions", type=int, default=3, help="revisions per source")
    parser.add_argument("--seed", type=int, default=0, help="seed of the edits, the source sample and the splits")
    parser.add_argument("--max_sources", type=int, default=0, help="use a seeded sample of this many sources (0 = all)")
    parser.add_argument("--min_entities", type=int, default=100,
                        help="for folders with an inventory.tsv: least modelspace entities of a source")
    parser.add_argument("--p_edit", type=float, default=0.5, help="probability of each kind of edit")
    parser.add_argument("--change_range", type=float, nargs=2, default=list(DEFAULT_CHANGE), metavar=("LO", "HI"),
                        help="share of entities deleted (and, separately, added) by a revision: uniform in [LO, HI]")
    parser.add_argument("--explode_range", type=float, nargs=2, default=list(DEFAULT_EXPLODE), metavar=("LO", "HI"),
                        help="share of block references exploded by a revision that explodes: uniform in [LO, HI]")
    parser.add_argument("--region", action="store_true",
                        help="the region edit (a rectangle of the drawing redrawn with a copy of another) is a "
                             "candidate edit")
    parser.add_argument("--hard", action="store_true",
                        help="the harder benchmark variant: --p_edit 0.7 --change_range 0.05 0.15 "
                             "--explode_range 0.8 1.0 --region (overrides those flags)")
    parser.add_argument("--fractions", type=float, nargs=3, default=list(DEFAULT_FRACTIONS),
                        metavar=("TRAIN", "SELECTION", "REPORT"), help="split shares of the sources")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per source")
    args = parser.parse_args(argv)
    if args.revisions < 1:
        parser.error("--revisions must be at least 1")
    if args.hard:
        args.p_edit, args.change_range = HARD["p_edit"], list(HARD["change"])
        args.explode_range, args.region = list(HARD["explode"]), HARD["region"]
    info = generate(args.input, args.output, args.revisions, args.seed, max_sources=args.max_sources,
                    min_entities=args.min_entities, p_edit=args.p_edit, workers=args.workers, timeout=args.timeout,
                    fractions=args.fractions, change=args.change_range, explode=args.explode_range,
                    region=args.region)
    n_src = len(info["groups"])
    print(f"wrote {n_src} sources x {args.revisions} revisions to {args.output} "
          f"({len(info['skipped'])} sources skipped); splits: "
          + ", ".join(f"{s} {len(info['splits'][s])}" for s in SPLIT_NAMES))
    for s in info["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']}")
    return 0 if n_src else 1


if __name__ == "__main__":
    sys.exit(main())
