"""dataset.dxf_read.find_drawings: the one folder walk of preprocessing and galleries."""
from __future__ import annotations

from pathlib import Path

import pytest

from dataset.dxf_process import find_dxf_files
from dataset.dxf_read import find_drawings
from utils.retrieval.gallery import GalleryError, collect_files


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("0\nSECTION\n")
    return path


def test_names_follow_the_folders_and_hidden_entries_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    touch(root / "b.dxf")
    touch(root / "sub dir" / "引线框架 [A].DXF")
    touch(root / "sub dir" / "deeper" / "c.dxf")
    touch(root / ".git" / "hidden.dxf")
    touch(root / "._resource fork.dxf")
    touch(root / "notes.txt")
    single = touch(tmp_path / "elsewhere" / "single.dxf")
    files, clashes = find_drawings([root, single])
    # a folder's files come before its subfolders' (os.walk order, sorted within a folder)
    assert [name for _, name in files] == ["b", "sub dir__引线框架 [A]", "sub dir__deeper__c", "single"]
    assert all(path.is_file() for path, _ in files) and clashes == []


def test_a_name_seen_three_times_gets_three_distinct_names(tmp_path: Path) -> None:
    roots = [tmp_path / p / "lf" for p in ("one", "two", "three")]
    for r in roots:
        touch(r / "x.dxf")
    files, clashes = find_drawings(roots)
    assert [name for _, name in files] == ["x", "lf__x", "lf__x#2"]
    assert clashes == ["x", "x"]


def test_h5_files_keep_their_stem_and_suffixes_filter(tmp_path: Path) -> None:
    root = tmp_path / "prep"
    touch(root / "DeepDXF" / "a__b.h5")
    touch(root / "DeepDXF" / "c.dxf")
    files, _ = find_drawings([root], (".dxf", ".h5"), stem_named=(".h5",))
    assert sorted(name for _, name in files) == ["DeepDXF__c", "a__b"]
    assert [name for _, name in find_drawings([root])[0]] == ["DeepDXF__c"]


def test_a_missing_entry_is_an_error_in_both_callers(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        find_drawings([tmp_path / "nowhere"])
    assert info.value.filename == str(tmp_path / "nowhere")
    with pytest.raises(GalleryError, match="gallery folder not found: .*nowhere"):
        collect_files([tmp_path / "nowhere"])


def test_preprocessing_and_galleries_name_a_folder_the_same_way(tmp_path: Path) -> None:
    for p in ("a/x.dxf", "b/x.dxf", "a/y.DXF", "b/.hidden.dxf"):
        touch(tmp_path / "in" / p)
    roots = [str(tmp_path / "in" / "a"), str(tmp_path / "in" / "b")]
    assert find_dxf_files(roots) == collect_files(roots)
