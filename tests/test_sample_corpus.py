"""The bundled sample corpus (dataset/make_sample_dxf.py): count, names, content, determinism."""
from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path

import ezdxf
import pytest
from ezdxf.math import Vec3

from dataset.make_sample_dxf import FAMILIES, FAMILY_PATTERN, family_of, main, make_sample_corpus

DEEPDXF_TYPES = {"LINE", "CIRCLE", "ARC", "LWPOLYLINE", "TEXT", "MTEXT", "HATCH", "DIMENSION",
                 "LEADER", "INSERT", "SPLINE", "SOLID"}
N_REV = 6


def _round(v: object) -> object:
    if isinstance(v, Vec3):
        return tuple(round(c, 6) for c in v)
    if isinstance(v, float):
        return round(v, 6)
    return v


def modelspace_signature(path: Path) -> list[tuple]:
    """(type, handle, sorted attribs with rounded coordinates, polyline points) per entity."""
    doc = ezdxf.readfile(path)
    rows = []
    for e in doc.modelspace():
        attribs = tuple(sorted((k, _round(v)) for k, v in e.dxf.all_existing_dxf_attribs().items()))
        points = ()
        if e.dxftype() == "LWPOLYLINE":
            points = tuple(tuple(round(c, 6) for c in p) for p in e.get_points("xyb"))
        rows.append((e.dxftype(), e.dxf.handle, attribs, points))
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_sample_corpus(tmp_path_factory.mktemp("sample") / "DXF", seed=0, n_revisions=N_REV)


@pytest.fixture(scope="module")
def type_counts(corpus: list[Path]) -> dict[str, Counter]:
    """Entity-type counts of every drawing, read back with ezdxf.readfile."""
    return {p.stem: Counter(e.dxftype() for e in ezdxf.readfile(p).modelspace()) for p in corpus}


def test_corpus_has_one_file_per_family_and_revision(corpus: list[Path]) -> None:
    assert len(corpus) == len(FAMILIES) * N_REV == 60
    assert sorted(corpus) == sorted(corpus[0].parent.glob("*.dxf"))
    assert all(p.is_file() and p.stat().st_size > 0 for p in corpus)


def test_families_are_recoverable_from_file_names(corpus: list[Path]) -> None:
    by_family = Counter(family_of(p.stem) for p in corpus)
    assert set(by_family) == {f.name for f in FAMILIES}
    assert set(by_family.values()) == {N_REV}
    assert all(re.search(FAMILY_PATTERN, p.stem) for p in corpus)
    # Odd names on purpose: spaces, brackets, Chinese characters.
    assert any(" " in p.name and re.search(r"[\u4e00-\u9fff]", p.name) for p in corpus)
    assert any("(" in p.name for p in corpus)


def test_family_of_strips_only_a_trailing_revision() -> None:
    assert family_of("QFN-a_rev3") == "QFN-a"
    assert family_of("DFN-b 双排_rev12") == "DFN-b 双排"
    assert family_of("BGA-like (基板)_rev0") == "BGA-like (基板)"
    assert family_of("a_rev1_b") == "a_rev1_b"


def test_every_drawing_opens_and_has_a_realistic_size(type_counts: dict[str, Counter]) -> None:
    sizes = [sum(c.values()) for c in type_counts.values()]
    assert len(sizes) == 60
    assert min(sizes) >= 50
    assert 100 <= statistics.median(sizes) <= 1500
    assert sum(s >= 2000 for s in sizes) >= 2  # long sequences are exercised
    assert max(sizes) <= 5000
    assert 15_000 <= sum(sizes) <= 40_000


def test_entity_types_cover_every_deepdxf_type(type_counts: dict[str, Counter]) -> None:
    seen = set().union(*type_counts.values())
    assert DEEPDXF_TYPES <= seen
    assert {"POINT", "ELLIPSE"} <= seen  # unsupported types the encoders must drop
    # Every drawing holds the common mix, not only the corpus as a whole.
    common = {"LINE", "CIRCLE", "LWPOLYLINE", "TEXT", "MTEXT", "HATCH", "DIMENSION", "LEADER"}
    assert all(common <= set(c) for c in type_counts.values())
    assert sum("SPLINE" in c for c in type_counts.values()) >= 30
    assert sum("SOLID" in c for c in type_counts.values()) >= 20


def test_chinese_text_and_title_block_survive_the_round_trip(corpus: list[Path]) -> None:
    doc = ezdxf.readfile(corpus[0])
    texts = [e.dxf.text for e in doc.modelspace().query("TEXT")]
    mtexts = [e.text for e in doc.modelspace().query("MTEXT")]
    assert any("引线框架" in t for t in texts)
    assert any("技术要求" in t for t in mtexts)


def test_revisions_of_a_family_differ_but_stay_alike(corpus: list[Path],
                                                     type_counts: dict[str, Counter]) -> None:
    rev0, rev1 = (p for p in corpus if family_of(p.stem) == "QFN-a" and p.stem[-1] in "01")
    assert modelspace_signature(rev0) != modelspace_signature(rev1)
    a, b = type_counts[rev0.stem], type_counts[rev1.stem]
    assert set(a) - {"SOLID", "SPLINE", "ELLIPSE"} == set(b) - {"SOLID", "SPLINE", "ELLIPSE"}
    assert abs(sum(a.values()) - sum(b.values())) < 0.3 * sum(a.values())


def test_same_seed_gives_the_same_drawings(corpus: list[Path], tmp_path: Path) -> None:
    again = make_sample_corpus(tmp_path / "again", seed=0, n_revisions=1)
    first = {p.name: p for p in corpus}
    assert len(again) == len(FAMILIES)
    for p in again:
        assert modelspace_signature(p) == modelspace_signature(first[p.name])
        assert p.read_bytes() == first[p.name].read_bytes()


def test_another_seed_gives_other_drawings(corpus: list[Path], tmp_path: Path) -> None:
    other = make_sample_corpus(tmp_path / "other", seed=1, n_revisions=1)
    first = {p.name: p for p in corpus}
    assert [p.name for p in other] == [f"{f.name}_rev0.dxf" for f in FAMILIES]
    changed = sum(modelspace_signature(p) != modelspace_signature(first[p.name]) for p in other)
    assert changed == len(other)


def test_saving_leaves_ezdxf_options_as_they_were(tmp_path: Path) -> None:
    before = ezdxf.options.write_fixed_meta_data_for_testing
    make_sample_corpus(tmp_path, seed=0, n_revisions=1)
    assert ezdxf.options.write_fixed_meta_data_for_testing == before


def test_command_line_writes_the_folder_and_says_so(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    main(["--output", str(tmp_path / "cli"), "--per_family", "1", "--seed", "3"])
    assert len(list((tmp_path / "cli").glob("*_rev0.dxf"))) == len(FAMILIES)
    out = capsys.readouterr().out
    assert "wrote 10 drawings" in out and str(tmp_path / "cli") in out
