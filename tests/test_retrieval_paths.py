"""What a user gets is what is measured: every mode of SimDeepDXF.py compares the same
vectors, and the first-hour bugs of a gallery (Ctrl-C, preprocessed folders, two queries
at once, output folders, files rewritten with the same size) stay fixed."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import SimDeepDXF
from config.process_config import ProcessConfig
from dataset.dxf_process import run as preprocess
from tests.test_similarity_cli import ODD_NAMES, corpus, run_cli, write_drawing  # noqa: F401 (fixture)
from utils.retrieval.cache import EmbeddingCache
from utils.retrieval.store import EmbeddingStore

EMBEDDINGS = ("auto", "joint", "joint_floors", "gf", "deepdxf", "features", "layout", "layout_rot")


@pytest.fixture
def gallery(tmp_path) -> Path:
    g = tmp_path / "gallery"
    for k, name in enumerate(ODD_NAMES):
        write_drawing(g / "a" / f"{name}.dxf", n_lines=2 + 4 * k, n_circles=1 + 2 * k, shift=k)
    for k in range(6):
        write_drawing(g / "b" / f"图 {k}.dxf", n_lines=1 + 3 * k, n_circles=k % 3, shift=0.3 * k)
    return g


def _ranked_names(out: str) -> list[str]:
    return [m[1] for m in re.findall(r"^\s+(\d+)\s+-?[0-9.]+\s+(.+)$", out, flags=re.M)]


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_query_ranks_exactly_like_the_exported_vectors(corpus, gallery, tmp_path, capsys, embedding):  # noqa: F811
    """--query's top-k equals the cosine ranking of the --export vectors (query left out),
    for every embedding a user can choose."""
    args = ["--model_path", corpus["joint"], "--embedding", embedding, "--gallery", gallery,
            "--cache_dir", tmp_path / "cache"]
    code, out, err = run_cli(capsys, *args, "--export", tmp_path / "e.npz")
    assert code == 0, err
    with np.load(tmp_path / "e.npz") as z:
        names, emb = [str(n) for n in z["names"]], z["embeddings"].astype(np.float64)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for q in (gallery / "a" / f"{ODD_NAMES[1]}.dxf", gallery / "b" / "图 4.dxf"):
        code, out, err = run_cli(capsys, *args, "--query", q, "--topk", "5")
        assert code == 0, err
        qi = names.index(("a__" if q.parent.name == "a" else "b__") + q.stem)
        sims = unit @ unit[qi]
        sims[qi] = -np.inf
        want = [names[j] for j in np.argsort(-sims, kind="stable")[:5]]
        got = _ranked_names(out)
        assert got == want, (embedding, q.name)
        scores = [float(s) for s in re.findall(r"^\s+\d+\s+(-?[0-9.]+)\s+", out, flags=re.M)]
        np.testing.assert_allclose(scores, np.sort(sims)[::-1][:5], atol=2e-4)


def test_auto_prints_which_embedding_and_why(corpus, gallery, tmp_path, capsys):  # noqa: F811
    code, out, err = run_cli(capsys, "--model_path", corpus["joint"], "--gallery", gallery,
                             "--query", gallery / "b" / "图 1.dxf", "--cache_dir", tmp_path / "cache")
    assert code == 0, err
    line = out.splitlines()[0]
    assert line.startswith("embedding: features [hist") and "stores no choice" in line


def test_auto_without_a_stored_choice_searches_exactly_the_features_floor(corpus, gallery, tmp_path, capsys):  # noqa: F811
    """A joint checkpoint that stores no choice: ``auto`` is the default floor, the same vectors
    as ``--embedding features`` (no checkpoint), not the learned model."""
    vectors = {}
    for embedding, model in (("auto", ["--model_path", corpus["joint"]]), ("features", [])):
        code, out, err = run_cli(capsys, *model, "--embedding", embedding, "--gallery", gallery,
                                 "--cache_dir", tmp_path / f"cache-{embedding}", "--export", tmp_path / f"{embedding}.npz")
        assert code == 0, err
        with np.load(tmp_path / f"{embedding}.npz") as z:
            vectors[embedding] = dict(zip([str(n) for n in z["names"]], z["embeddings"].astype(np.float64)))
    assert vectors["auto"].keys() == vectors["features"].keys()
    for name, v in vectors["auto"].items():
        np.testing.assert_allclose(v / np.linalg.norm(v), vectors["features"][name]
                                   / np.linalg.norm(vectors["features"][name]), atol=1e-5)


def test_a_file_rewritten_with_the_same_size_is_embedded_again(corpus, gallery, tmp_path, capsys):  # noqa: F811
    """The cache compares size AND modification time: same byte length, new content and a
    new mtime means a new embedding."""
    args = ["--model_path", corpus["deepdxf"], "--gallery", gallery, "--cache_dir", tmp_path / "cache",
            "--export", tmp_path / "e.npz"]
    assert run_cli(capsys, *args)[0] == 0
    with np.load(tmp_path / "e.npz") as z:
        before = dict(zip([str(n) for n in z["names"]], z["embeddings"]))
    target = gallery / "b" / "图 2.dxf"
    data = bytearray(target.read_bytes())
    size = len(data)
    at = data.index(b"\n 11\n", data.index(b"ENTITIES")) + len(b"\n 11\n")  # a LINE's end point x
    data[at] = ord("9") if data[at] != ord("9") else ord("7")  # another drawing, the same byte length
    old_mtime = target.stat().st_mtime_ns
    target.write_bytes(data)
    os.utime(target, ns=(old_mtime + 5_000_000_000, old_mtime + 5_000_000_000))
    assert target.stat().st_size == size
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "(1 embedded now" in out
    with np.load(tmp_path / "e.npz") as z:
        after = dict(zip([str(n) for n in z["names"]], z["embeddings"]))
    assert not np.allclose(after["b__图 2"], before["b__图 2"])


def test_approximate_store_ranks_like_the_exact_one(tmp_path):
    """Above exact_below the store's inverted-file index proposes candidates that are
    re-scored exactly: the top-10 and their scores equal the exact search's."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 16))
    emb = (centres[rng.integers(0, 40, 3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32)
    store = EmbeddingStore(tmp_path / "store", 16, exact_below=100)
    store.add([f"h{i}" for i in range(len(emb))], [""] * len(emb), emb)
    queries = emb[::150] + 0.01
    exact_s, exact_r = store.search(queries, 10, exact=True)
    approx_s, approx_r = store.search(queries, 10, exact=False)
    assert store.ann_index().nlist > 1
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx_r, exact_r)])
    assert same >= 0.95
    rows = approx_r.ravel()  # every returned score is the exact cosine of its row
    vecs = store.vectors(rows).reshape(*approx_r.shape, 16).astype(np.float64)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    vn = vecs / np.linalg.norm(vecs, axis=2, keepdims=True)
    np.testing.assert_allclose(approx_s, np.einsum("qd,qkd->qk", qn, vn), atol=1e-4)
    assert np.all(np.diff(approx_s, axis=1) <= 1e-6)  # best first


def test_an_h5_gallery_leaves_the_query_out_by_content(corpus, tmp_path, capsys):  # noqa: F811
    """A preprocessed .h5 folder as the gallery, queried with one of its own files and with a
    copy of it elsewhere: neither returns the query itself at rank 1."""
    pre = corpus["root"] / "pre" / "DeepDXF"
    q = corpus["h5"][1]
    copy_dir = tmp_path / "elsewhere" / "DeepDXF"
    copy_dir.mkdir(parents=True)
    (tmp_path / "elsewhere" / "GF").mkdir()
    (copy_dir / q.name).write_bytes(q.read_bytes())
    twin = corpus["root"] / "pre" / "GF" / f"{q.stem}.npz"
    (tmp_path / "elsewhere" / "GF" / twin.name).write_bytes(twin.read_bytes())
    for query in (q, copy_dir / q.name):
        code, out, err = run_cli(capsys, "--model_path", corpus["gf"], "--gallery", pre, "--query", query,
                                 "--cache_dir", tmp_path / "cache")
        assert code == 0, err
        assert q.stem not in _ranked_names(out)
        assert "the query itself left out" in out and "from the no cache" not in out
        assert re.search(r"^top 2 of 2 drawings", out, flags=re.M)


def test_a_preprocessed_folder_is_reused_instead_of_parsing(corpus, gallery, tmp_path, capsys, monkeypatch):  # noqa: F811
    """After dataset/dxf_process.py encoded a folder, a gallery of the same DXF files reads
    those encodings (same name, size, mtime) and parses nothing; a file changed since is parsed."""
    preprocess(ProcessConfig(input=[str(gallery)], output=str(tmp_path / "data"), workers=1))
    changed = gallery / "b" / "图 3.dxf"
    write_drawing(changed, n_lines=17, n_circles=2)
    from dataset import encode

    parsed: list[str] = []
    original = encode.encode_drawing
    monkeypatch.setattr(encode, "encode_drawing", lambda path, *a, **k: parsed.append(Path(path).name)
                        or original(path, *a, **k))
    args = ["--model_path", corpus["deepdxf"], "--gallery", gallery, "--cache_dir", tmp_path / "cache",
            "--workers", "1", "--export", tmp_path / "e.npz"]
    code, out, err = run_cli(capsys, *args, "--encodings", tmp_path / "data")
    assert code == 0, err
    assert parsed == ["图 3.dxf"]  # only the file changed after preprocessing
    assert "(9 embedded now, 8 of them from preprocessed encodings" in out
    with np.load(tmp_path / "e.npz") as z:
        reused = dict(zip([str(n) for n in z["names"]], z["embeddings"]))
    parsed.clear()
    code, out, err = run_cli(capsys, *args[:-2], "--export", tmp_path / "f.npz", "--encodings", "none",
                             "--cache_dir", tmp_path / "other cache")
    assert code == 0, err and len(parsed) == 9
    with np.load(tmp_path / "f.npz") as z:
        fresh = dict(zip([str(n) for n in z["names"]], z["embeddings"]))
    for name in fresh:  # reading the preprocessed encodings gives the embeddings a parse gives
        np.testing.assert_allclose(reused[name], fresh[name], atol=1e-5)


def test_render_and_export_into_an_existing_folder(corpus, gallery, tmp_path, capsys):  # noqa: F811
    out_dir = tmp_path / "pics"
    out_dir.mkdir()
    q = gallery / "b" / "图 1.dxf"
    code, out, err = run_cli(capsys, "--model_path", corpus["gf"], "--gallery", gallery, "--query", q, "--topk", "2",
                             "--render", out_dir, "--export", out_dir, "--cache_dir", tmp_path / "cache")
    assert code == 0, err
    png = out_dir / "图 1-top2.png"
    assert png.is_file() and f"wrote {png}" in out
    assert not (tmp_path / "pics.png").exists()
    assert (out_dir / "embeddings.npz").is_file()


def test_an_unwritable_export_fails_before_any_work(corpus, gallery, tmp_path, capsys):  # noqa: F811
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    code, out, err = run_cli(capsys, "--model_path", corpus["gf"], "--gallery", gallery,
                             "--export", blocker / "sub" / "e.npz", "--cache_dir", tmp_path / "cache")
    assert code == 2 and "--export" in err
    assert "gallery:" not in out and not (tmp_path / "cache").exists()  # nothing was embedded


SLOW_SIM = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from dataset import encode
original = encode.encode_drawing
def slow(path, *a, **k):
    Path({marks!r}, Path(path).name + ".mark").write_text("")
    time.sleep({delay})
    return original(path, *a, **k)
encode.encode_drawing = slow
import SimDeepDXF
sys.exit(SimDeepDXF.main(sys.argv[1:]))
"""


def _slow_sim(tmp_path: Path, marks: Path, delay: float) -> Path:
    script = tmp_path / f"slow_sim_{delay}.py"
    script.write_text(SLOW_SIM.format(root=str(Path(SimDeepDXF.__file__).parent), marks=str(marks), delay=delay))
    return script


def _many_drawings(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """A flat gallery of ``n`` small drawings, and an empty folder for the parse marks."""
    gallery = tmp_path / "many"
    for k in range(n):
        write_drawing(gallery / f"图 {k}.dxf", n_lines=1 + k, n_circles=k % 3)
    marks = tmp_path / "marks"
    marks.mkdir()
    return gallery, marks


def _popen(script: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.skipif(not Path("/proc").is_dir() or os.name != "posix", reason="needs POSIX signals")
def test_ctrl_c_keeps_the_learned_embeddings_and_the_rerun_parses_only_the_rest(corpus, tmp_path):  # noqa: F811
    gallery, marks = _many_drawings(tmp_path, 12)
    args = ["--model_path", str(corpus["gf"]), "--gallery", str(gallery), "--export", str(tmp_path / "e.npz"),
            "--cache_dir", str(tmp_path / "cache"), "--workers", "1"]
    proc = _popen(_slow_sim(tmp_path, marks, 0.3), args)
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    kept = int(re.search(r"interrupted: the (\d+) drawings embedded in this run are kept", err).group(1))
    assert kept >= 4  # every drawing encoded before Ctrl-C (one worker: 4 finished when the 5th starts)
    parsed_before = {p.name for p in marks.iterdir()}
    for p in marks.iterdir():
        p.unlink()
    rerun = subprocess.run([sys.executable, str(_slow_sim(tmp_path, marks, 0.0)), *args], capture_output=True,
                           text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert rerun.returncode == 0, rerun.stderr
    assert f"({12 - kept} embedded now; {kept} from the cache" in rerun.stdout
    parsed_again = {p.name for p in marks.iterdir()}
    assert len(parsed_again) == 12 - kept  # nothing kept is parsed again
    assert len(parsed_before & parsed_again) <= 1  # at most the one cut off mid-parse


@pytest.mark.skipif(os.name != "posix", reason="advisory file locks (fcntl)")
def test_two_queries_at_once_on_one_cache_embed_the_gallery_once(corpus, tmp_path):  # noqa: F811
    gallery, marks = _many_drawings(tmp_path, 8)
    script = _slow_sim(tmp_path, marks, 0.2)
    procs = [_popen(script, ["--model_path", str(corpus["gf"]), "--gallery", str(gallery), "--query",
                             str(gallery / f"图 {i}.dxf"), "--cache_dir", str(tmp_path / "cache"), "--workers", "1"])
             for i in (0, 5)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    embedded = sorted(int(re.search(r"\((\d+) embedded now", o[0]).group(1)) for o in outs)
    assert embedded == [0, 8]  # one built the gallery, the other waited and found it done
    assert any("waiting for another process" in o[1] for o in outs)
    # every drawing parsed once for the gallery, plus each query once (the queries are parsed up front)
    assert len(list(marks.iterdir())) == 8
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.db.execute("SELECT COUNT(*) FROM encodings").fetchone()[0] == 8


def test_a_stored_floor_choice_is_standardized_with_the_gallery(corpus, gallery, tmp_path, capsys):  # noqa: F811
    """When training chose a floor (no learned block), ``auto`` searches it z-scored with the
    gallery, as ``--embedding features`` does, not with the training archive's statistics."""
    import shutil

    from model.floors import BLOCK_DIMS
    from model.fusion import Block
    from utils.train.embedding_choice import store_choice

    ckpt = tmp_path / "floor_choice.pth"
    shutil.copyfile(corpus["joint"], ckpt)
    rng = np.random.default_rng(0)
    far = [Block(b, 1.0, rng.normal(50, 1, BLOCK_DIMS[b]), np.full(BLOCK_DIMS[b], 0.01))  # another archive's
           for b in ("hist", "gf_raw")]
    store_choice([ckpt], {"name": "features", "blocks": [b.to_dict() for b in far], "why": "the strongest floor"})
    common = ["--gallery", gallery, "--cache_dir", tmp_path / "cache", "--query", gallery / "b" / "图 4.dxf",
              "--topk", "6"]
    code, auto_out, err = run_cli(capsys, "--model_path", ckpt, *common)
    assert code == 0, err
    assert auto_out.splitlines()[0].startswith("embedding: features") and "z-scored with the gallery" in auto_out
    code, floor_out, err = run_cli(capsys, "--embedding", "features", *common)
    assert code == 0, err
    assert _ranked_names(auto_out) == _ranked_names(floor_out)
    scores = re.compile(r"^\s+\d+\s+(-?[0-9.]+)\s+", flags=re.M)
    assert scores.findall(auto_out) == scores.findall(floor_out)


def test_a_stored_fusion_z_scores_its_floors_with_the_gallery(corpus, gallery, tmp_path, capsys):  # noqa: F811
    """A chosen ``joint + features`` searches ``[L2(joint) | the features floor z-scored with the
    gallery]``: exactly the --export vectors of ``--embedding joint`` beside those of
    ``--embedding features``, whatever statistics training stored; --query ranks by them."""
    import shutil

    from model.floors import BLOCK_DIMS
    from model.fusion import Block
    from utils.train.embedding_choice import store_choice

    ckpt = tmp_path / "fused_choice.pth"
    shutil.copyfile(corpus["joint"], ckpt)
    rng = np.random.default_rng(1)
    blocks = [Block("joint")] + [Block(b, 1.0, rng.normal(50, 1, BLOCK_DIMS[b]), np.full(BLOCK_DIMS[b], 0.01))
                                 for b in ("hist", "gf_raw")]
    store_choice([ckpt], {"name": "joint + features x1", "blocks": [b.to_dict() for b in blocks], "why": "best"})
    common = ["--gallery", gallery, "--cache_dir", tmp_path / "cache"]
    vectors = {}
    for label, extra in (("auto", ["--model_path", ckpt]), ("joint", ["--model_path", ckpt, "--embedding", "joint"]),
                         ("features", ["--embedding", "features"])):
        code, out, err = run_cli(capsys, *extra, *common, "--export", tmp_path / f"{label}.npz")
        assert code == 0, err
        with np.load(tmp_path / f"{label}.npz") as z:
            vectors[label] = (list(z["names"]), z["embeddings"].astype(np.float64))
    names = vectors["auto"][0]
    assert vectors["joint"][0] == names == vectors["features"][0]
    want = np.concatenate([vectors["joint"][1], vectors["features"][1]], axis=1)
    np.testing.assert_allclose(vectors["auto"][1], want, atol=1e-5)
    q = gallery / "a" / f"{ODD_NAMES[2]}.dxf"
    code, out, err = run_cli(capsys, "--model_path", ckpt, *common, "--query", q, "--topk", "5")
    assert code == 0, err
    unit = want / np.linalg.norm(want, axis=1, keepdims=True)
    qi = names.index("a__" + q.stem)
    sims = unit @ unit[qi]
    sims[qi] = -np.inf
    assert _ranked_names(out) == [names[j] for j in np.argsort(-sims, kind="stable")[:5]]


def test_groups_appends_the_features_to_a_fused_choice_from_its_raw_rows(corpus, gallery, tmp_path, capsys):  # noqa: F811
    """``--groups`` with a chosen ``joint + features``: its "+ standardized features blocks"
    row is ``[L2(the searched vectors) | the features floor z-scored with the gallery]``
    (built from the raw rows, not from already-finalized vectors)."""
    import json
    import shutil

    from model.floors import BLOCK_DIMS
    from model.fusion import Block
    from utils.ranking import retrieval_metrics
    from utils.train.embedding_choice import store_choice

    ckpt = tmp_path / "fused.pth"
    shutil.copyfile(corpus["joint"], ckpt)
    blocks = [Block("joint")] + [Block(b, 1.0, np.zeros(BLOCK_DIMS[b]), np.ones(BLOCK_DIMS[b])) for b in ("hist", "gf_raw")]
    store_choice([ckpt], {"name": "joint + features x1", "blocks": [b.to_dict() for b in blocks], "why": "best"})
    common = ["--gallery", gallery, "--cache_dir", tmp_path / "cache"]
    vecs = {}
    for label, extra in (("auto", ["--model_path", ckpt]), ("features", ["--embedding", "features"])):
        code, out, err = run_cli(capsys, *extra, *common, "--export", tmp_path / f"{label}.npz")
        assert code == 0, err
        with np.load(tmp_path / f"{label}.npz") as z:
            vecs[label] = ([str(n) for n in z["names"]], z["embeddings"].astype(np.float64))
    names = vecs["auto"][0]
    groups = [names[0:3], names[3:6]]
    (tmp_path / "g.json").write_text(json.dumps(groups, ensure_ascii=False), encoding="utf-8")
    code, out, err = run_cli(capsys, "--model_path", ckpt, *common, "--groups", tmp_path / "g.json", "--n_boot", "20")
    assert code == 0, err
    auto = vecs["auto"][1] / np.linalg.norm(vecs["auto"][1], axis=1, keepdims=True)
    want = retrieval_metrics(np.concatenate([auto, vecs["features"][1]], axis=1), names, groups)["mAP"]
    row = next(ln for ln in out.splitlines() if "+ standardized features blocks" in ln and ln.startswith("|"))
    assert float(row.split("|")[2]) == pytest.approx(want, abs=1e-3)
