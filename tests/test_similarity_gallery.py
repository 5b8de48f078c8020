"""SimDeepDXF.py over a gallery: top-k, cache reuse and refresh, export, --groups, pictures."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import SimDeepDXF
from tests.test_similarity_cli import ODD_NAMES, corpus, run_cli, write_drawing  # noqa: F401 (fixture)
from utils.retrieval.embedders import floor_embedder, make_embedder
from utils.retrieval.encodings import load_drawing
from utils.retrieval.gallery import Gallery, evaluate_gallery


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """The default cache lives under $XDG_CACHE_HOME: keep it in the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "dxf-similarity"


def n_embedded(out: str) -> int:
    m = re.search(r"\((\d+) embedded now", out)
    assert m, out
    return int(m.group(1))


@pytest.fixture
def gallery(corpus, tmp_path) -> Path:  # noqa: F811
    """A gallery of DXF files in two folders (a copy: tests change files)."""
    g = tmp_path / "gallery"
    shutil.copytree(corpus["root"] / "dxf", g / "a")
    write_drawing(g / "b" / "sub folder" / "第二 (x).dxf", n_lines=9, n_circles=0)
    write_drawing(g / "b" / "QFN-like_rev2.dxf", n_lines=2, n_circles=1, shift=0.5)
    return g


def test_topk_table_ranks_and_leaves_the_query_out(corpus, gallery, capsys):  # noqa: F811
    q = gallery / "a" / f"{ODD_NAMES[0]}.dxf"
    code, out, err = run_cli(capsys, "--model_path", corpus["deepdxf"], "--gallery", gallery / "a", gallery / "b",
                             "--query", q, "--topk", "3")
    assert code == 0, err
    rows = re.findall(r"^\s+(\d+)\s+(-?[0-9.]+)\s+(.+)$", out, flags=re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert ODD_NAMES[0] not in [r[2] for r in rows]
    assert "the query itself left out" in out


def test_second_query_embeds_nothing_and_a_changed_file_is_re_embedded(corpus, gallery, capsys,  # noqa: F811
                                                                       user_cache):
    args = ["--model_path", corpus["gf"], "--gallery", gallery, "--export", gallery.parent / "e.npz"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert n_embedded(out) == 5
    assert not (gallery / ".embedding_cache").exists()  # never inside the archive unless asked
    assert len(list(user_cache.glob("gallery-*/cache.sqlite"))) == 1
    code, out, _ = run_cli(capsys, *args)
    assert n_embedded(out) == 0
    # a new query outside the gallery: only the query is embedded
    q = write_drawing(gallery.parent / "new query.dxf", n_lines=7)
    code, out, _ = run_cli(capsys, "--model_path", corpus["gf"], "--gallery", gallery, "--query", q)
    assert code == 0 and n_embedded(out) == 0  # the gallery line counts gallery drawings only
    with np.load(gallery.parent / "e.npz") as z:
        before = dict(zip(z["names"], z["embeddings"]))
    changed = gallery / "b" / "QFN-like_rev2.dxf"
    write_drawing(changed, n_lines=12, n_circles=5)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10_000_000_000))
    code, out, _ = run_cli(capsys, *args)
    assert n_embedded(out) == 1
    with np.load(gallery.parent / "e.npz") as z:
        after = dict(zip(z["names"], z["embeddings"]))
    assert not np.allclose(before["b__QFN-like_rev2"], after["b__QFN-like_rev2"])
    np.testing.assert_array_equal(before[f"a__{ODD_NAMES[1]}"], after[f"a__{ODD_NAMES[1]}"])
    # another model: its own cache entries
    code, out, _ = run_cli(capsys, "--model_path", corpus["deepdxf"], "--gallery", gallery,
                           "--export", gallery.parent / "d.npz")
    assert n_embedded(out) == 5


def test_touched_but_unchanged_file_is_not_re_embedded(corpus, gallery, capsys):  # noqa: F811
    args = ["--model_path", corpus["gf"], "--gallery", gallery, "--export", gallery.parent / "e.npz"]
    run_cli(capsys, *args)
    f = gallery / "a" / f"{ODD_NAMES[2]}.dxf"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 5_000_000_000))
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and n_embedded(out) == 0


def test_export_holds_names_and_float32_embeddings(corpus, gallery, capsys):  # noqa: F811
    out_npz = gallery.parent / "out" / "emb.npz"
    code, out, err = run_cli(capsys, "--model_path", corpus["joint"], "--embedding", "joint", "--gallery", gallery,
                             "--export", out_npz)
    assert code == 0, err
    with np.load(out_npz) as z:
        names, emb = [str(n) for n in z["names"]], z["embeddings"]
    # names by the one naming rule: the path below the gallery folder, "/" -> "__"
    assert sorted(names) == sorted([f"a__{n}" for n in ODD_NAMES] + ["b__sub folder__第二 (x)", "b__QFN-like_rev2"])
    assert emb.dtype == np.float32 and emb.shape[0] == 5
    embedder = make_embedder(corpus["joint"], "joint")
    i = names.index("b__sub folder__第二 (x)")
    direct = embedder.embed([load_drawing(gallery / "b" / "sub folder" / "第二 (x).dxf")])[0]
    np.testing.assert_allclose(emb[i], direct, atol=1e-5)


def test_bad_gallery_file_is_skipped_with_a_warning(corpus, gallery, capsys):  # noqa: F811
    (gallery / "b" / "broken [1].dxf").write_text("garbage\n")
    (gallery / "b" / "empty.dxf").write_bytes(b"")
    args = ["--model_path", corpus["gf"], "--gallery", gallery, "--export", gallery.parent / "e.npz"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0
    assert "skipped" in err and "broken [1].dxf" in err and "not a DXF file" in err
    assert "empty.dxf" in err and "empty file" in err
    assert "5 drawings" in out
    code, out, err = run_cli(capsys, *args)  # remembered: warned again, not parsed again
    assert "broken [1].dxf" in err and n_embedded(out) == 0


def test_features_gallery_matches_the_standardized_floor(corpus, gallery, capsys):  # noqa: F811
    from model.floors import histogram_embedding, raw_gf_embedding
    from tests.reference import standardized_blocks

    out_npz = gallery.parent / "f.npz"
    code, _, err = run_cli(capsys, "--embedding", "features", "--gallery", gallery, "--export", out_npz)
    assert code == 0, err
    with np.load(out_npz) as z:
        names, emb = [str(n) for n in z["names"]], z["embeddings"]
    paths = [str(p) for p in np.load(out_npz)["paths"]]
    encs = [load_drawing(p) for p in paths]
    hist = histogram_embedding(np.stack([e.type_counts for e in encs]))
    raw = raw_gf_embedding(np.stack([e.gf_features for e in encs]), np.stack([e.gf_adjacency for e in encs]))
    np.testing.assert_allclose(emb, standardized_blocks([hist, raw]), atol=1e-5)
    assert len(names) == 5


def test_groups_prints_model_and_floors(corpus, gallery, capsys):  # noqa: F811
    groups = gallery.parent / "groups.json"
    groups.write_text(json.dumps([[f"{ODD_NAMES[0]}.dxf", "QFN-like_rev2"], [ODD_NAMES[1], "第二 (x)", "absent"]],
                                 ensure_ascii=False), encoding="utf-8")
    code, out, err = run_cli(capsys, "--model_path", corpus["gf"], "--gallery", gallery, "--groups", groups,
                             "--n_boot", "50")
    assert code == 0, err
    for label in ("gf model", "+ standardized features blocks", "random vectors", "floor: entity-type histogram", "floor: raw GF matrices",
                  "floor: standardized histogram + raw GF", "floor: layout: entity types on an 8x8 grid",
                  "floor: layout, rotation-robust"):
        assert label in out
    assert "queries: 4" in out
    best = re.search(r"^the floor to beat: (.+) \(mAP ([0-9.]+)\)$", out, flags=re.M)
    assert best, out
    floor_maps = {ln.split("|")[1].strip(): float(ln.split("|")[2]) for ln in out.splitlines()
                  if ln.startswith("| floor: ") and "n/a" not in ln}
    assert float(best.group(2)) == pytest.approx(max(floor_maps.values()), abs=1e-3)
    assert "floor: " + best.group(1) in floor_maps
    assert re.search(r"^gf model \(.+\): (beats the floor to beat by \+|does NOT beat the floor to beat)", out, flags=re.M)
    assert "| mAP | 95% CI (mAP) | P@1 | P@5 | R@10 | nDCG@10 | MRR |" in out
    assert "absent" in err  # a group member that is not in the gallery is named
    assert "add --choose OUT.pth" in out  # a learned embedding: how to search with the best for this gallery
    assert "paired over the same queries, resampling their 2 groups" in out  # whole groups, not queries


def test_metrics_table_against_a_hand_computed_ranking():
    """Four drawings; group {a, b}. Query a ranks c, b, d: AP 1/2, P@1 0, RR 1/2,
    nDCG@10 1/log2(3). Query b ranks a, c, d: AP 1, P@1 1, RR 1, nDCG 1. Both: P@5 1/5, R@10 1."""
    ang = np.deg2rad([0.0, 25.8, -20.0, 180.0])
    emb = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    g = Gallery.from_arrays(["a", "b", "c", "d"], [Path(n) for n in "abcd"], floor_embedder("layout"),
                            emb.astype(np.float32), {"type_counts": np.ones((4, 12), dtype=np.int64),
                                                     "has_gf": np.zeros(4, bool)})
    table = evaluate_gallery(g, [("toy", emb)], [["a", "b"]], "cosine", n_boot=20, seed=0)
    row = next(line for line in table.splitlines() if line.startswith("| toy |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    ndcg = (1 / np.log2(3) + 1) / 2
    assert cells[1] == "0.750"  # mAP
    assert cells[3:] == ["0.500", "0.200", "1.000", f"{ndcg:.3f}", "0.750"]  # P@1 P@5 R@10 nDCG@10 MRR
    assert "n/a" in table  # raw GF floors cannot be computed without GF matrices


def test_render_writes_a_small_png(corpus, gallery, capsys, tmp_path):  # noqa: F811
    png = tmp_path / "pics" / "top.png"
    code, out, err = run_cli(capsys, "--model_path", corpus["deepdxf"], "--gallery", gallery,
                             "--query", gallery / "a" / f"{ODD_NAMES[1]}.dxf", "--topk", "2", "--render", png)
    assert code == 0, err
    assert png.is_file() and 1_000 < png.stat().st_size < 500_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_only_gallery_caches_elsewhere(corpus, gallery, capsys, tmp_path, user_cache):  # noqa: F811
    ro = gallery / "a"
    ro.chmod(0o555)
    try:
        code, out, err = run_cli(capsys, "--embedding", "features", "--gallery", ro, "--export", tmp_path / "e.npz")
    finally:
        ro.chmod(0o755)
    assert code == 0, err
    assert str(user_cache) in out
    assert not (ro / ".embedding_cache").exists()
    assert any(user_cache.iterdir())


def test_cache_dir_flag_puts_the_cache_where_asked_and_no_cache_writes_nothing(corpus, gallery, capsys,  # noqa: F811
                                                                                 tmp_path, user_cache):
    args = ["--embedding", "layout", "--gallery", gallery, "--export", tmp_path / "e.npz"]
    code, out, err = run_cli(capsys, *args, "--cache_dir", gallery / ".embedding_cache")
    assert code == 0, err
    assert (gallery / ".embedding_cache" / "cache.sqlite").is_file()
    code, out, err = run_cli(capsys, *args, "--no-cache")
    assert code == 0 and "--no-cache: nothing is kept after this run" in out and n_embedded(out) == 5
    assert "from the" not in out
    assert not user_cache.exists()


def test_append_features_adds_three_unit_blocks(corpus, gallery, capsys):  # noqa: F811
    out_npz = gallery.parent / "plus.npz"
    code, _, err = run_cli(capsys, "--model_path", corpus["gf"], "--gallery", gallery, "--export", out_npz,
                           "--append_features")
    assert code == 0, err
    with np.load(out_npz) as z:
        emb = z["embeddings"]
    d = emb.shape[1] - 222
    norms = [np.linalg.norm(emb[:, :d], axis=1), np.linalg.norm(emb[:, d:d + 12], axis=1),
             np.linalg.norm(emb[:, d + 12:], axis=1)]
    for n in norms:
        np.testing.assert_allclose(n, 1.0, atol=1e-5)
    code, out, err = run_cli(capsys, "--model_path", corpus["gf"], "--gallery", gallery, "--append_features",
                             "--query", gallery / "a" / f"{ODD_NAMES[0]}.dxf", "--topk", "2")
    assert code == 0, err
    assert len(re.findall(r"^\s+\d+\s+-?[0-9.]+\s+", out, flags=re.M)) == 2


def test_a_file_that_takes_too_long_is_skipped_and_tried_again_later(corpus, gallery, capsys, monkeypatch):  # noqa: F811
    from dataset import encode

    slow_name = "QFN-like_rev2.dxf"
    original = encode.encode_drawing

    def slow(path, *a, **k):
        if Path(path).name == slow_name:
            time.sleep(3)
        return original(path, *a, **k)

    monkeypatch.setattr(encode, "encode_drawing", slow)  # utils.embedders imports it at call time
    args = ["--embedding", "features", "--gallery", gallery, "--export", gallery.parent / "e.npz", "--workers", "1"]
    code, out, err = run_cli(capsys, *args, "--timeout", "1")
    assert code == 0, err
    assert slow_name in err and "timed out after 1 s" in err
    assert "4 drawings" in out
    monkeypatch.setattr(encode, "encode_drawing", original)
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "5 drawings" in out and n_embedded(out) == 1


def test_missing_or_unreadable_query_is_reported_before_the_gallery_is_embedded(corpus, gallery, capsys,  # noqa: F811
                                                                                 tmp_path, user_cache):
    code, out, err = run_cli(capsys, "--embedding", "features", "--gallery", gallery, "--query", tmp_path / "nope.dxf")
    assert code == 2 and "nope.dxf" in err and "file not found" in err
    assert "gallery:" not in out and not user_cache.exists()
    bad = tmp_path / "坏 查询 (1).dxf"
    bad.write_text("not a drawing\n")
    code, out, err = run_cli(capsys, "--embedding", "features", "--gallery", gallery, "--query", bad)
    assert code == 1 and "坏 查询 (1).dxf" in err and "not a DXF file" in err
    assert "gallery:" not in out and not user_cache.exists()
    code, out, err = run_cli(capsys, "--embedding", "features", "--gallery", gallery, "--query", gallery / "a")
    assert code == 2 and "is a folder" in err and not user_cache.exists()


@pytest.mark.parametrize("kind", ["layout", "layout_rot"])
def test_layout_embeddings_retrieve_without_a_checkpoint(corpus, gallery, capsys, tmp_path, kind):  # noqa: F811
    q = gallery / "a" / f"{ODD_NAMES[1]}.dxf"
    code, out, err = run_cli(capsys, "--embedding", kind, "--model_path", tmp_path / "none.pth", "--gallery", gallery,
                             "--query", q, "--topk", "4", "--export", tmp_path / "e.npz")
    assert code == 0, err
    assert len(re.findall(r"^\s+\d+\s+-?[0-9.]+\s+", out, flags=re.M)) == 4
    with np.load(tmp_path / "e.npz") as z:
        emb = z["embeddings"]
    assert emb.shape == (5, 768 if kind == "layout" else 120)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


SLOW_RUN = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from dataset import encode
original = encode.encode_drawing
def slow(path, *a, **k):
    Path({marks!r}, Path(path).name + ".mark").write_text("")
    time.sleep(0.4)
    return original(path, *a, **k)
encode.encode_drawing = slow
import SimDeepDXF
sys.exit(SimDeepDXF.main(sys.argv[1:]))
"""


def _processes_with(token: str) -> list[int]:
    """Ids of live processes whose command line holds ``token``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if token in (d / "cmdline").read_bytes().decode("utf-8", "replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir() or os.name != "posix", reason="needs /proc and POSIX signals")
def test_ctrl_c_stops_the_gallery_within_seconds_and_keeps_what_was_cached(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    gallery = tmp_path / "many"
    for k in range(16):
        write_drawing(gallery / f"图 {k}.dxf", n_lines=1 + k, n_circles=k % 3)
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "slow_sim.py"
    script.write_text(SLOW_RUN.format(root=str(Path(SimDeepDXF.__file__).parent), marks=str(marks)))
    cache = tmp_path / "cache"
    args = ["--embedding", "features", "--gallery", str(gallery), "--export", str(tmp_path / "e.npz"),
            "--cache_dir", str(cache), "--workers", "2"]
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        deadline = time.monotonic() + 60
        # 2 workers: when the 6th file starts, at least 4 have finished (each worker takes one at a time)
        while len(list(marks.iterdir())) < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=15)
        stopped_after = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert stopped_after < 10
    assert "interrupted:" in err and "kept in the cache" in err
    time.sleep(0.5)
    assert _processes_with(str(script)) == []  # no worker left behind
    code, out, err = run_cli(capsys, "--embedding", "features", "--gallery", gallery, "--export",
                             tmp_path / "e.npz", "--cache_dir", cache)
    assert code == 0, err
    m = re.search(r"\((\d+) embedded now[^;]*; (\d+) from the", out)
    assert int(m.group(2)) >= 3 and int(m.group(1)) + int(m.group(2)) == 16
