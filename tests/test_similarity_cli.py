"""SimDeepDXF.py pair mode and its error messages (tiny untrained models, tiny DXF files).

Helpers here are shared with ``test_similarity_gallery.py``.
"""
from __future__ import annotations

import re
from pathlib import Path

import ezdxf
import numpy as np
import pytest
import torch

from config.DeepDXF_config import DeepDXFConfig
from config.GF_config import GFConfig
from config.cli import config_to_dict
from config.process_config import ProcessConfig
from dataset.dxf_process import run as preprocess
from model.DeepDXF_model import build_deepdxf_model
from model.GF_model import build_gf_model
from utils.train.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

import SimDeepDXF

ODD_NAMES = ["QFN21LA(Cu) -508 Rev1_5", "引线框架 [A] (2)", "DFN 8L_rev1"]


def write_drawing(path: Path, n_lines: int = 3, n_circles: int = 1, text: str = "引线框架", shift: float = 0.0) -> Path:
    """A small DXF drawing; the counts make drawings tell apart."""
    doc = ezdxf.new()
    msp = doc.modelspace()
    for i in range(n_lines):
        msp.add_line((shift + i, 0), (shift + i + 5, 3 + i))
    for i in range(n_circles):
        msp.add_circle((2 * i + shift, 1), 1 + 0.5 * i)
    msp.add_arc((1, 1), 2, 0, 90)
    msp.add_text(text, height=1, dxfattribs={"insert": (1, 1)})
    msp.add_lwpolyline([(0, 0), (4, 0), (4, 4)], close=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.saveas(path)
    return path


def make_corpus(folder: Path) -> list[Path]:
    """Three drawings with odd names (spaces, brackets, Chinese)."""
    return [write_drawing(folder / f"{name}.dxf", n_lines=2 + 4 * k, n_circles=1 + 2 * k, shift=k)
            for k, name in enumerate(ODD_NAMES)]


def gf_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = GFConfig(GF_hidden=8, GF_num_layers=1, GF_proj_dim=8)
    return save_checkpoint(path, "GF", config_to_dict(cfg), {"model": build_gf_model(cfg).state_dict()})


def deepdxf_config() -> DeepDXFConfig:
    return DeepDXFConfig(DeepDXF_chunk_len=16, DeepDXF_d_model=16, DeepDXF_heads=2, DeepDXF_layers=1,
                         DeepDXF_proj_dim=8)


def deepdxf_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = deepdxf_config()
    return save_checkpoint(path, "DeepDXF", config_to_dict(cfg), {"model": build_deepdxf_model(cfg).state_dict()})


def joint_checkpoint(path: Path) -> Path:
    """A joint checkpoint by the joint contract: flat config, state 'gf' and 'deepdxf'."""
    torch.manual_seed(0)
    gcfg, dcfg = GFConfig(GF_hidden=8, GF_num_layers=1, GF_proj_dim=8), deepdxf_config()
    config = {**config_to_dict(gcfg), **config_to_dict(dcfg)}
    state = {"gf": build_gf_model(gcfg).state_dict(), "deepdxf": build_deepdxf_model(dcfg).state_dict()}
    return save_checkpoint(path, "joint", config, state)


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch) -> None:
    """Caches (of references, galleries) go to the test's folder, not ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = SimDeepDXF.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def similarity_of(out: str) -> float:
    m = re.search(r"(cosine similarity|euclidean distance): (-?[0-9.]+)", out)
    assert m, out
    return float(m.group(2))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """DXF files, their preprocessed .h5/.npz twins, and three tiny checkpoints."""
    root = tmp_path_factory.mktemp("sim")
    dxf = make_corpus(root / "dxf")
    preprocess(ProcessConfig(input=[str(root / "dxf")], output=str(root / "pre"), workers=1))
    ck = root / "ckpt"
    return {
        "root": root, "dxf": dxf,
        "h5": [root / "pre" / "DeepDXF" / f"{p.stem}.h5" for p in dxf],
        "gf": gf_checkpoint(ck / "gf.pth"), "deepdxf": deepdxf_checkpoint(ck / "dd.pth"),
        "joint": joint_checkpoint(ck / "joint.pth"),
    }


@pytest.mark.parametrize("kind", ["gf", "deepdxf", "joint"])
def test_pair_mode_same_drawing_dxf_and_h5_is_identical(corpus, capsys, kind):
    """A .dxf encoded on the fly and its preprocessed .h5 (+ GF twin) embed identically."""
    code, out, err = run_cli(capsys, "--model_path", corpus[kind], "--file1", corpus["dxf"][1],
                             "--file2", corpus["h5"][1])
    assert code == 0, err
    assert similarity_of(out) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["gf", "deepdxf", "joint"])
def test_pair_mode_different_drawings_score_below_one(corpus, capsys, kind):
    code, out, err = run_cli(capsys, "--model_path", corpus[kind], "--file1", corpus["dxf"][0],
                             "--file2", corpus["h5"][2])
    assert code == 0, err
    assert -1.0 <= similarity_of(out) < 0.99999


def test_euclidean_distance_of_a_drawing_with_itself_is_zero(corpus, capsys):
    code, out, _ = run_cli(capsys, "--model_path", corpus["deepdxf"], "--file1", corpus["dxf"][0],
                           "--file2", corpus["dxf"][0], "--method", "euclidean")
    assert code == 0 and "euclidean distance" in out
    assert similarity_of(out) == pytest.approx(0.0, abs=1e-4)


def test_joint_embedding_is_two_equal_blocks_of_the_unit_parts(corpus):
    from utils.retrieval.embedders import make_embedder
    from utils.retrieval.encodings import load_drawing

    enc = load_drawing(corpus["dxf"][0])
    joint = make_embedder(corpus["joint"], "joint").embed([enc])
    gf = make_embedder(corpus["joint"], "gf").embed([enc])
    dd = make_embedder(corpus["joint"], "deepdxf").embed([enc])
    assert joint.shape[1] == gf.shape[1] + dd.shape[1]
    half = 1 / np.sqrt(2)  # [L2(gf) | L2(deepdxf)] as one unit vector: both parts weigh the same
    assert np.linalg.norm(joint[0, :gf.shape[1]]) == pytest.approx(half, abs=1e-5)
    assert np.linalg.norm(joint[0, gf.shape[1]:]) == pytest.approx(half, abs=1e-5)
    np.testing.assert_allclose(joint[0, :gf.shape[1]], half * gf[0] / np.linalg.norm(gf[0]), atol=1e-6)
    np.testing.assert_allclose(joint[0, gf.shape[1]:], half * dd[0] / np.linalg.norm(dd[0]), atol=1e-6)


def test_features_embedding_needs_no_checkpoint(corpus, capsys, tmp_path):
    code, out, err = run_cli(capsys, "--model_path", tmp_path / "none.pth", "--embedding", "features",
                             "--file1", corpus["dxf"][0], "--file2", corpus["h5"][0])
    assert code == 0, err
    assert similarity_of(out) == pytest.approx(1.0, abs=1e-6)


def test_h5_without_gf_twin_works_for_deepdxf_but_not_gf(corpus, capsys, tmp_path):
    lone = tmp_path / "lone" / "DeepDXF" / "单独 (1).h5"
    lone.parent.mkdir(parents=True)
    lone.write_bytes(corpus["h5"][0].read_bytes())
    code, out, err = run_cli(capsys, "--model_path", corpus["deepdxf"], "--file1", lone, "--file2", corpus["dxf"][0])
    assert code == 0, err
    assert similarity_of(out) == pytest.approx(1.0, abs=1e-5)
    code, out, err = run_cli(capsys, "--model_path", corpus["gf"], "--file1", lone, "--file2", corpus["dxf"][0])
    assert code == 1
    assert "单独 (1).h5" in err and "no GF twin" in err and "GF/单独 (1).npz" in err


# ------------------------------------------------------------------ errors
def _one_error_line(code: int, err: str, expected_code: int, *needles: str) -> None:
    assert code == expected_code
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_checkpoint_says_how_to_get_one(corpus, capsys, tmp_path):
    code, _, err = run_cli(capsys, "--model_path", tmp_path / "nope.pth", "--file1", corpus["dxf"][0],
                           "--file2", corpus["dxf"][1])
    _one_error_line(code, err, 2, "no checkpoint at", "nope.pth", "--embedding features")


def test_checkpoint_of_another_format_version(corpus, capsys, tmp_path):
    old = torch.load(corpus["gf"], weights_only=True)
    old["format_version"] = CHECKPOINT_FORMAT + 1
    torch.save(old, tmp_path / "old.pth")
    code, _, err = run_cli(capsys, "--model_path", tmp_path / "old.pth", "--file1", corpus["dxf"][0],
                           "--file2", corpus["dxf"][1])
    _one_error_line(code, err, 2, "format_version", "retrain")


def test_foreign_file_as_checkpoint(corpus, capsys, tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    code, _, err = run_cli(capsys, "--model_path", tmp_path / "notes.pth", "--file1", corpus["dxf"][0],
                           "--file2", corpus["dxf"][1])
    _one_error_line(code, err, 2, "not a checkpoint of this toolkit")


def test_embedding_the_checkpoint_does_not_hold(corpus, capsys):
    code, _, err = run_cli(capsys, "--model_path", corpus["deepdxf"], "--embedding", "gf",
                           "--file1", corpus["dxf"][0], "--file2", corpus["dxf"][1])
    _one_error_line(code, err, 2, "DeepDXF checkpoint", "cannot give a gf embedding")


def test_unreadable_and_missing_drawings_are_named(corpus, capsys, tmp_path):
    bad = tmp_path / "坏 文件 (1).dxf"
    bad.write_text("this is not a drawing\n")
    code, _, err = run_cli(capsys, "--model_path", corpus["gf"], "--file1", bad, "--file2", corpus["dxf"][0])
    _one_error_line(code, err, 1, "坏 文件 (1).dxf", "not a DXF file")
    code, _, err = run_cli(capsys, "--model_path", corpus["gf"], "--file1", corpus["dxf"][0],
                           "--file2", tmp_path / "missing.h5")
    _one_error_line(code, err, 1, "missing.h5", "file not found")
    fake_h5 = tmp_path / "fake.h5"
    fake_h5.write_bytes(b"not hdf5")
    code, _, err = run_cli(capsys, "--model_path", corpus["deepdxf"], "--file1", fake_h5, "--file2", corpus["dxf"][0])
    _one_error_line(code, err, 1, "fake.h5", "HDF5")
    txt = tmp_path / "drawing.txt"
    txt.write_text("x")
    code, _, err = run_cli(capsys, "--model_path", corpus["deepdxf"], "--file1", txt, "--file2", corpus["dxf"][0])
    _one_error_line(code, err, 1, "drawing.txt", "unsupported file type")


@pytest.mark.parametrize("args, needle", [
    (["--query", "x.dxf"], "--query needs --gallery"),
    (["--export", "x.npz"], "--export needs --gallery"),
    (["--file1", "a.dxf"], "needs both --file1 and --file2"),
    (["--gallery", "GALLERY"], "--gallery needs --query"),
    (["--gallery", "GALLERY", "--query", "Q", "--topk", "0"], "--topk must be at least 1"),
    (["--gallery", "GALLERY", "--groups", "nope.json"], "no groups file"),
    (["--gallery", "EMPTY", "--export", "x.npz"], "empty gallery"),
    (["--gallery", "NOWHERE", "--export", "x.npz"], "gallery folder not found"),
])
def test_usage_errors(corpus, capsys, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    subst = {"GALLERY": str(corpus["root"] / "dxf"), "Q": str(corpus["dxf"][0]),
             "EMPTY": str(tmp_path / "empty"), "NOWHERE": str(tmp_path / "nowhere")}
    args = [subst.get(a, a) for a in args]
    code, _, err = run_cli(capsys, "--embedding", "features", "--cache_dir", tmp_path / "cache", *args)
    _one_error_line(code, err, 2, needle)


def test_unusable_device_is_one_clear_error(corpus, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    code, _, err = run_cli(capsys, "--model_path", corpus["gf"], "--device", "cuda", "--file1", corpus["dxf"][0],
                           "--file2", corpus["dxf"][1])
    _one_error_line(code, err, 2, "no CUDA GPU", "--device cpu")


REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "dxf" / "leadframe-dev"


@pytest.mark.skipif(not REAL_DEV.is_dir(), reason="real drawings in ../shared/dxf not present")
def test_pair_mode_on_real_drawings_with_full_width_brackets(capsys, tmp_path):
    """Two real lead-frame drawings of one group (names with spaces, brackets, full-width brackets)."""
    a = REAL_DEV / "DFN6TLCT(NiPdAu)（321） -551 Rev1_1.dxf"
    b = REAL_DEV / "DFN7LA(Cu) -507 Rev1_2.dxf"
    if not (a.is_file() and b.is_file()):
        pytest.skip("expected real drawings not present")
    code, out, err = run_cli(capsys, "--embedding", "features", "--file1", a, "--file2", b)
    assert code == 0, err
    assert 0.0 < similarity_of(out) <= 1.0


# ------------------------------------------------------- pair-mode reference
REF_LINE = re.compile(r"^  reference: (\d+) drawings of (.+) \((.+)\)$", re.M)
PCT_LINE = re.compile(r"^  (this embedding|non-learned features): (?:cosine similarity (-?[0-9.]+); )?"
                      r"file2 is more similar to file1 than (\d+)% of them$", re.M)


@pytest.fixture
def reference(tmp_path) -> Path:
    """Six drawings unlike each other."""
    for k in range(6):
        write_drawing(tmp_path / "ref" / f"参考 {k}.dxf", n_lines=1 + 3 * k, n_circles=k % 3, shift=2 * k)
    return tmp_path / "ref"


def test_pair_mode_places_the_score_among_a_reference(corpus, capsys, tmp_path, reference, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    twin = tmp_path / "copy of file1.dxf"
    twin.write_bytes(corpus["dxf"][0].read_bytes())
    code, out, err = run_cli(capsys, "--model_path", corpus["gf"], "--file1", corpus["dxf"][0], "--file2", twin,
                             "--reference", reference)
    assert code == 0, err
    assert similarity_of(out) == pytest.approx(1.0, abs=1e-5)
    m = REF_LINE.search(out)
    assert m and m.group(1) == "6" and m.group(2) == str(reference) and m.group(3) == "--reference"
    pcts = {kind: (sim, int(pct)) for kind, sim, pct in PCT_LINE.findall(out)}
    assert pcts["this embedding"][1] == 100  # an identical drawing beats every reference drawing
    assert pcts["non-learned features"] == ("1.000", 100)


def test_pair_mode_leaves_the_pair_itself_out_of_the_reference(corpus, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    code, out, err = run_cli(capsys, "--embedding", "layout", "--file1", corpus["dxf"][0], "--file2", corpus["dxf"][1],
                             "--reference", corpus["root"] / "dxf")
    assert code == 0, err
    m = REF_LINE.search(out)
    assert m and m.group(1) == "1"  # 3 drawings, less file1 and file2
    assert PCT_LINE.search(out).group(3) in ("0", "100")


def test_pair_mode_defaults_to_the_models_training_data(corpus, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    torch.manual_seed(0)
    cfg = GFConfig(GF_hidden=8, GF_num_layers=1, GF_proj_dim=8, data_dir=str(corpus["root"] / "pre"))
    ckpt = save_checkpoint(tmp_path / "trained.pth", "GF", config_to_dict(cfg), {"model": build_gf_model(cfg).state_dict()})
    code, out, err = run_cli(capsys, "--model_path", ckpt, "--file1", corpus["dxf"][0], "--file2", corpus["dxf"][2])
    assert code == 0, err
    m = REF_LINE.search(out)
    assert m and m.group(2) == str(corpus["root"] / "pre" / "DeepDXF") and m.group(3) == "the model's training data"


def test_pair_mode_says_when_there_is_no_reference(corpus, capsys):
    code, out, err = run_cli(capsys, "--model_path", corpus["deepdxf"], "--file1", corpus["dxf"][0],
                             "--file2", corpus["dxf"][1], "--reference", "none")
    assert code == 0, err
    assert "  reference: none (--reference none): the number alone says little" in out
    assert not PCT_LINE.search(out)


def test_a_folder_as_file1_is_called_a_folder(corpus, capsys):
    code, _, err = run_cli(capsys, "--model_path", corpus["gf"], "--file1", corpus["root"] / "dxf",
                           "--file2", corpus["dxf"][0])
    _one_error_line(code, err, 2, "is a folder, not a drawing", "--gallery")
    assert "file not found" not in err
