"""dataset/make_revisions.py: the edits of a revision, determinism, skipped sources, splits."""
from __future__ import annotations

import json
import random
from pathlib import Path

import ezdxf
import pytest

from dataset.make_revisions import (
    INCH,
    RevisionPlan,
    apply_plan,
    generate,
    make_splits,
    revise_source,
    SourceTask,
)
from dataset.dxf_read import read_drawing

N_LINES = 96


def _tiny_drawing(path: Path) -> Path:
    """A LINE (0,0)-(10,0), a CIRCLE r=2 at (5,5), a TEXT, an MTEXT, an INSERT of a
    two-line block and N_LINES short lines: 101 modelspace entities."""
    doc = ezdxf.new("R2010")
    doc.units = 4
    blk = doc.blocks.new("PIN")
    blk.add_line((0, 0), (1, 0))
    blk.add_line((1, 0), (1, 1))
    msp = doc.modelspace()
    msp.add_line((0, 0), (10, 0), dxfattribs={"layer": "PROBE"})
    msp.add_circle((5, 5), 2.0)
    msp.add_text("PIN 12", dxfattribs={"height": 1.0}).set_placement((1, 1))
    msp.add_mtext("NOTE A", dxfattribs={"char_height": 1.0}).set_location((2, 8))
    msp.add_blockref("PIN", (20, 20))
    for i in range(N_LINES):
        msp.add_line((i * 0.1, 30), (i * 0.1 + 0.05, 31))
    doc.saveas(path)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _tiny_drawing(tmp_path / "tiny.dxf")


def _probe_line(doc):
    return next(e for e in doc.modelspace() if e.dxftype() == "LINE" and e.dxf.layer == "PROBE")


def test_rotation_by_90_about_origin_turns_a_line(tiny):
    doc = ezdxf.readfile(tiny)
    rec = apply_plan(doc, RevisionPlan(rotate=90, rotate_about="origin"), random.Random(0))
    line = _probe_line(doc)
    assert tuple(line.dxf.start)[:2] == pytest.approx((0.0, 0.0), abs=1e-9)
    assert tuple(line.dxf.end)[:2] == pytest.approx((0.0, 10.0), abs=1e-9)
    assert rec.transform_failed == {}


def test_rotation_by_180_about_centre_mirrors_through_the_centre(tiny):
    doc = ezdxf.readfile(tiny)
    ext = ezdxf.bbox.extents(doc.modelspace(), fast=True)
    cx, cy = ext.center.x, ext.center.y
    apply_plan(doc, RevisionPlan(rotate=180, rotate_about="centre"), random.Random(0))
    line = _probe_line(doc)
    assert tuple(line.dxf.end)[:2] == pytest.approx((2 * cx - 10.0, 2 * cy), abs=1e-9)
    assert cx != pytest.approx(0.0)  # the centre is not the origin: the two modes differ


def test_a_turn_turns_dimensions_whose_block_is_placed_by_insert(tmp_path):
    """Real drawings place dimension blocks with `insert`; ezdxf alone would leave their
    graphics behind when the drawing turns."""
    from ezdxf.math import Matrix44

    doc = ezdxf.new("R2010")
    msp = doc.modelspace()
    msp.add_line((0, 0), (40, 0))
    dim = msp.add_linear_dim(base=(10, 30), p1=(10, 10), p2=(40, 10))
    dim.render()
    for e in dim.dimension.get_geometry_block():
        e.transform(Matrix44.translate(-100, -50, 0))
    dim.dimension.dxf.insert = (100, 50, 0)
    src = tmp_path / "dim.dxf"
    doc.saveas(src)
    before = read_drawing(src)
    k = list(before.types).index("DIMENSION")
    doc = ezdxf.readfile(src)
    apply_plan(doc, RevisionPlan(rotate=180, rotate_about="origin"), random.Random(0))
    out = tmp_path / "dim turned.dxf"
    doc.saveas(out)
    after = read_drawing(out)
    b = before.boxes[k]
    assert after.boxes[k] == pytest.approx([-b[2], -b[3], -b[0], -b[1]], abs=1e-6)


def test_unit_change_scales_circle_radius_and_sets_insunits(tiny):
    doc = ezdxf.readfile(tiny)
    apply_plan(doc, RevisionPlan(scale=INCH), random.Random(0))
    circle = next(e for e in doc.modelspace() if e.dxftype() == "CIRCLE")
    assert circle.dxf.radius == pytest.approx(2.0 * 25.4)
    assert tuple(circle.dxf.center)[:2] == pytest.approx((5 * 25.4, 5 * 25.4))
    assert doc.header["$INSUNITS"] == 4
    doc = ezdxf.readfile(tiny)
    apply_plan(doc, RevisionPlan(scale=1 / INCH), random.Random(0))
    circle = next(e for e in doc.modelspace() if e.dxftype() == "CIRCLE")
    assert circle.dxf.radius == pytest.approx(2.0 / 25.4)
    assert doc.header["$INSUNITS"] == 1


def test_move_translates_by_a_multiple_of_the_extents(tiny):
    doc = ezdxf.readfile(tiny)
    ext = ezdxf.bbox.extents(doc.modelspace(), fast=True)
    apply_plan(doc, RevisionPlan(move=(2.0, -1.0)), random.Random(0))
    line = _probe_line(doc)
    assert tuple(line.dxf.start)[:2] == pytest.approx((2.0 * ext.size.x, -1.0 * ext.size.y))


def test_delete_and_add_counts_as_requested_and_new_handles_come_last(tiny):
    doc = ezdxf.readfile(tiny)
    msp = doc.modelspace()
    n = len(msp)
    source_handles = {int(h, 16) for h in doc.entitydb.keys()}
    rec = apply_plan(doc, RevisionPlan(delete_fraction=0.03, add_fraction=0.05), random.Random(1))
    assert rec.deleted == round(0.03 * n) == 3
    assert rec.added == round(0.05 * n) == 5
    assert len(msp) == n - 3 + 5
    new = [int(e.dxf.handle, 16) for e in msp if int(e.dxf.handle, 16) not in source_handles]
    assert len(new) == 5
    assert min(new) > max(source_handles)


def test_added_handles_come_last_even_with_a_stale_handle_seed(tmp_path):
    path = _tiny_drawing(tmp_path / "stale.dxf")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    k = lines.index("$HANDSEED")
    lines[k + 2] = "20"  # a seed below the handles in use, as some writers leave it
    path.write_text("\n".join(lines), encoding="utf-8")
    doc = ezdxf.readfile(path)
    top = max(int(h, 16) for h in doc.entitydb.keys())
    apply_plan(doc, RevisionPlan(add_fraction=0.02), random.Random(0))
    added = [int(e.dxf.handle, 16) for e in doc.modelspace() if int(e.dxf.handle, 16) > top]
    assert len(added) == 2


def test_text_edit_changes_every_text_when_asked(tiny):
    doc = ezdxf.readfile(tiny)
    rec = apply_plan(doc, RevisionPlan(text_fraction=1.0), random.Random(0))
    msp = doc.modelspace()
    texts = [e.dxf.text for e in msp if e.dxftype() == "TEXT"]
    mtexts = [e.text for e in msp if e.dxftype() == "MTEXT"]
    assert rec.texts_edited == 2
    assert texts[0] != "PIN 12" and len(texts[0]) == len("PIN 12")  # a digit replaced
    assert mtexts[0] != "NOTE A" and mtexts[0].startswith("NOTE A")  # a note appended


def test_explode_replaces_block_references_by_their_content(tiny):
    doc = ezdxf.readfile(tiny)
    n = len(doc.modelspace())
    rec = apply_plan(doc, RevisionPlan(explode_fraction=1.0), random.Random(0))
    msp = doc.modelspace()
    assert rec.exploded_inserts == 1 and rec.exploded_entities == 2
    assert not [e for e in msp if e.dxftype() == "INSERT"]
    assert len(msp) == n - 1 + 2


def test_entity_that_cannot_be_transformed_is_deleted_and_counted(tiny, monkeypatch):
    from ezdxf.entities import Circle

    def refuse(self, m):
        raise NotImplementedError("no")

    monkeypatch.setattr(Circle, "transform", refuse)
    doc = ezdxf.readfile(tiny)
    n = len(doc.modelspace())
    rec = apply_plan(doc, RevisionPlan(rotate=90), random.Random(0))
    assert rec.transform_failed == {"CIRCLE": 1}
    assert not [e for e in doc.modelspace() if e.dxftype() == "CIRCLE"]
    assert rec.n_result == n - 1


def test_revisions_are_valid_dxf_in_the_requested_version(tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    res = revise_source(SourceTask(str(tiny), "tiny", str(out), 3, seed=0, p_edit=1.0))
    assert res["skipped"] is None
    assert [r["name"] for r in res["revisions"]] == ["tiny__rev0", "tiny__rev1", "tiny__rev2"]
    assert (out / "tiny.dxf").read_bytes() == tiny.read_bytes()
    for r in res["revisions"]:
        d = read_drawing(out / f"{r['name']}.dxf")
        assert len(d) == r["n_result"] > 0
        assert not d.recovered
        assert ezdxf.readfile(out / f"{r['name']}.dxf").dxfversion == r["version"] != "AC1024"  # p_edit=1: all edits


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _tiny_drawing(src / "a.dxf")
    _tiny_drawing(src / "b.dxf")
    runs = {}
    for tag, seed in (("x", 3), ("y", 3), ("z", 4)):
        generate([src], tmp_path / tag, n_revisions=2, seed=seed, quiet=True)
        runs[tag] = {p.name: p.read_bytes() for p in sorted((tmp_path / tag).glob("*__rev*.dxf"))}
    assert len(runs["x"]) == 4
    assert runs["x"] == runs["y"]
    assert runs["x"] != runs["z"]


def test_unreadable_source_is_skipped_with_a_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _tiny_drawing(src / "good.dxf")
    (src / "bad.dxf").write_text("this is not a drawing\n", encoding="utf-8")
    info = generate([src], tmp_path / "out", n_revisions=1, seed=0, quiet=True)
    assert info["groups"] == [["good", "good__rev0"]]
    assert [s["name"] for s in info["skipped"]] == ["bad"]
    assert "not a DXF" in info["skipped"][0]["reason"]
    saved = json.loads((tmp_path / "out" / "groups.json").read_text(encoding="utf-8"))
    assert saved == [["good", "good__rev0"]]
    splits = json.loads((tmp_path / "out" / "splits.json").read_text(encoding="utf-8"))
    assert sorted(splits["train"] + splits["selection"] + splits["report"]) == ["good"]


def test_inventory_folder_contributes_only_large_readable_files(tmp_path):
    from dataset.make_revisions import find_sources

    root = tmp_path / "third"
    (root / "s").mkdir(parents=True)
    for name in ("big", "small", "broken"):
        _tiny_drawing(root / "s" / f"{name}.dxf")
    (root / "inventory.tsv").write_text(
        "path\tstatus\tmsp_entities\ns/big.dxf\tok\t150\ns/small.dxf\tok\t5\ns/broken.dxf\tfail\t300\n",
        encoding="utf-8")
    assert [n for _, n in find_sources([root], min_entities=100)] == ["big"]


def _names(n: int) -> list[str]:
    return [f"D{i:03d}" for i in range(n)]


def test_splits_are_disjoint_complete_and_stable_per_seed():
    names = _names(80)
    a = make_splits(names, seed=5)
    b = make_splits(list(reversed(names)), seed=5)
    c = make_splits(names, seed=6)
    assert a == b
    assert a != c
    parts = [set(a[s]) for s in ("train", "selection", "report")]
    assert set().union(*parts) == set(names)
    assert sum(len(p) for p in parts) == len(names)
    assert [len(p) for p in parts] == pytest.approx([40, 20, 20], abs=2)


def test_pieces_of_one_sheet_stay_in_one_split():
    names = [f"SHEET{i}_{k}" for i in range(30) for k in (1, 2, 3)]
    s = make_splits(names, seed=0)
    where = {n: split for split, members in s.items() for n in members}
    for i in range(30):
        assert len({where[f"SHEET{i}_{k}"] for k in (1, 2, 3)}) == 1
    assert all(s[k] for k in ("train", "selection", "report"))


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="fractions"):
        make_splits(_names(4), fractions=(0.5, -0.1, 0.6))


def test_change_range_sets_the_share_of_deleted_and_added_entities(tmp_path):
    from dataset.make_revisions import draw_plan

    rng = random.Random(0)
    plans = [draw_plan(rng, "AC1024", p_edit=1.0, change=(0.2, 0.3)) for _ in range(20)]
    assert all(0.2 <= p.delete_fraction <= 0.3 and 0.2 <= p.add_fraction <= 0.3 for p in plans)
    with pytest.raises(ValueError, match="change range"):
        generate([], tmp_path / "unused", change=(0.3, 0.2), quiet=True)
    assert not (tmp_path / "unused").exists()


def test_region_edit_replaces_a_detail_with_shifted_copies_of_another(tiny):
    """Target rectangle around the circle; source rectangle over the first short lines."""
    doc = ezdxf.readfile(tiny)
    n_before = len(doc.modelspace())
    dx, dy = -0.15, 0.88
    plan = RevisionPlan(region=(0.15, 0.10, 0.35, 0.22, dx, dy))
    rec = apply_plan(doc, plan, random.Random(0))
    msp = doc.modelspace()
    # the details whose box centre is in the target are gone: the circle (5, 5) and the MTEXT (3.7, 6.5)
    assert not any(e.dxftype() in ("CIRCLE", "MTEXT") for e in msp)
    assert rec.region_deleted == 2
    # source lines: centre x = i * 0.1 + 0.025 within [0, 0.2 * 21]
    expected = sum(1 for i in range(N_LINES) if 0.0 <= (i * 0.1 + 0.025) / 21.0 <= 0.2)
    assert rec.region_added == expected > 10
    assert len(msp) == n_before - 2 + expected
    copies = [e for e in msp if e.dxftype() == "LINE" and 1.0 < e.dxf.start.y < 10.0]
    assert len(copies) == expected                                # they landed in the target rectangle
    assert all(0.15 * 21 - 1e-6 <= (e.dxf.start.x + e.dxf.end.x) / 2 <= 0.35 * 21 + 1e-6 for e in copies)
    assert "region" in plan.edits()


def test_hard_plans_explode_most_blocks_and_may_redraw_regions(tmp_path):
    from dataset.make_revisions import HARD, draw_plan

    rng = random.Random(0)
    plans = [draw_plan(rng, "AC1024", p_edit=1.0, change=HARD["change"], explode=HARD["explode"], region=True)
             for _ in range(20)]
    assert all(0.8 <= p.explode_fraction <= 1.0 for p in plans)
    assert all(p.region is not None for p in plans)
    assert all(0.0 <= p.region[0] < p.region[2] <= 1.0 and 0.0 <= p.region[0] + p.region[4] <= 1.0 for p in plans)
    # the default call draws no region edit and keeps the old explode range
    plain = [draw_plan(random.Random(k), "AC1024", p_edit=1.0) for k in range(20)]
    assert all(p.region is None and 0.2 <= p.explode_fraction <= 0.6 for p in plain)
    with pytest.raises(ValueError, match="explode range"):
        generate([], tmp_path / "unused", explode=(0.9, 0.1), quiet=True)
