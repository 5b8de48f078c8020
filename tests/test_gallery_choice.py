"""SimDeepDXF.py --choose: the search embedding chosen for the gallery searched, on its groups."""
from __future__ import annotations

import json

import numpy as np
import pytest

import joint_main
import SimDeepDXF
from dataset.names import group_of
from model.floors import BLOCK_DIMS
from tests.test_joint_main import _argv, corpus  # noqa: F401 (fixture)
from utils.ranking import paired_interval, retrieval_metrics
from utils.train.checkpoint import load_checkpoint
from utils.train.embedding_choice import choose_from_parts


def _parts_with_signal_in(block: str, seed: int = 0) -> tuple[dict[str, np.ndarray], list[str], list[list[str]]]:
    """40 drawings in 10 groups of 4; only ``block`` tells the groups apart (the rest is noise)."""
    rng = np.random.default_rng(seed)
    names = [f"d{i}" for i in range(40)]
    group = np.repeat(np.arange(10), 4)
    dims = {**BLOCK_DIMS, "joint": 16, "gf": 8, "deepdxf": 8}
    parts = {n: rng.standard_normal((40, d)) for n, d in dims.items()}
    centers = rng.standard_normal((10, dims[block])) * 3
    parts[block] = centers[group] + 0.3 * rng.standard_normal((40, dims[block]))
    groups = [[names[i] for i in range(40) if group[i] == g] for g in range(10)]
    return parts, names, groups


@pytest.mark.parametrize("block", ["layout_rot", "hist", "joint"])
def test_the_choice_follows_what_tells_this_gallerys_groups_apart(block):
    parts, names, groups = _parts_with_signal_in(block)
    choice = choose_from_parts(parts, names, groups, "queries of g.json over this gallery")
    assert block in [b["name"] for b in choice["blocks"]]
    assert "queries of g.json over this gallery" in choice["why"]
    assert choice["scores"][choice["name"]] >= choice["scores"]["features"]  # never below the default floor


def _groups_file(root, path):
    from dataset.archive import open_archive

    archive = open_archive(root)
    by_group: dict[str, list[str]] = {}
    for i in range(len(archive)):
        by_group.setdefault(group_of(archive.name(i)), []).append(archive.name(i))
    groups = [g for g in by_group.values() if len(g) >= 2]
    path.write_text(json.dumps(groups), encoding="utf-8")
    return groups


def test_choose_writes_a_checkpoint_whose_search_scores_what_was_measured(corpus, tmp_path, capsys):  # noqa: F811
    joint_main.main(_argv(corpus, "for_choose", "--epochs", "1"))
    model = corpus / "ckpt" / "for_choose" / "best_model.pth"
    before = load_checkpoint(model)["search_embedding"]
    groups = _groups_file(corpus, tmp_path / "groups.json")
    out = tmp_path / "chosen" / "archive.pth"
    common = ["--gallery", str(corpus / "DeepDXF"), "--cache_dir", str(tmp_path / "cache")]
    capsys.readouterr()
    code = SimDeepDXF.main(["--model_path", str(model), *common, "--groups", str(tmp_path / "groups.json"),
                            "--choose", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and f"wrote {out}" in text
    stored = load_checkpoint(out)["search_embedding"]
    assert stored["chosen_on"]["groups"] == str(tmp_path / "groups.json")
    assert "queries of groups.json over this gallery" in stored["why"]
    assert load_checkpoint(model)["search_embedding"] == before  # the trained checkpoint is left as it was
    # the copy holds the same weights: its learned rows are the cached ones, not computed again
    from utils.retrieval.embedders import make_embedder, weights_identity
    from utils.train.checkpoint import load_trained_models

    assert make_embedder(out, "joint").identity == make_embedder(model, "joint").identity
    trained = load_trained_models(model, "cpu")
    same = weights_identity(trained)
    next(trained.deepdxf.parameters()).data[0] += 1e-3  # one changed weight: another identity
    assert weights_identity(trained) != same
    # searching with the written checkpoint compares exactly the vectors the choice scored
    code = SimDeepDXF.main(["--model_path", str(out), *common, "--export", str(tmp_path / "e.npz")])
    first = capsys.readouterr().out.splitlines()[0]
    assert code == 0 and first.startswith(f"embedding: {stored['name']}") and "over this gallery" in first
    exported = np.load(tmp_path / "e.npz")
    names = [str(n) for n in exported["names"]]
    measured = retrieval_metrics(exported["embeddings"], names, groups)["mAP"]
    assert measured == pytest.approx(stored["scores"][stored["name"]], abs=1e-4)


def test_choose_usage_errors(corpus, tmp_path, capsys):  # noqa: F811
    gallery = ["--gallery", str(corpus / "DeepDXF"), "--cache_dir", str(tmp_path / "cache")]
    assert SimDeepDXF.main([*gallery, "--choose", str(tmp_path / "x.pth")]) == 2
    assert "--choose needs --gallery DIR and --groups" in capsys.readouterr().err
    (tmp_path / "g.json").write_text(json.dumps([["nowhere_a", "nowhere_b"]]), encoding="utf-8")
    assert SimDeepDXF.main([*gallery, "--groups", str(tmp_path / "g.json"), "--choose", str(tmp_path / "x.pth"),
                            "--query", str(next((corpus / "DeepDXF").glob("*.h5")))]) == 2
    assert "writes a checkpoint and stops" in capsys.readouterr().err
    joint_main.main(_argv(corpus, "for_choose_err", "--epochs", "1"))
    model = corpus / "ckpt" / "for_choose_err" / "best_model.pth"
    assert SimDeepDXF.main(["--model_path", str(model), *gallery, "--groups", str(tmp_path / "g.json"),
                            "--choose", str(tmp_path / "x.pth")]) == 2
    assert "g.json has two drawings in the gallery: nothing to choose on" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_gallery_choice_bench_chooses_on_one_half_and_judges_the_other(corpus, tmp_path):  # noqa: F811
    from bench import gallery_choice

    joint_main.main(_argv(corpus, "for_bench", "--epochs", "1"))
    model = corpus / "ckpt" / "for_bench" / "best_model.pth"
    groups = _groups_file(corpus, tmp_path / "groups.json")
    out = tmp_path / "bench"
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "DeepDXF").symlink_to(corpus / "DeepDXF")
    (folder / "GF").symlink_to(corpus / "GF")
    assert gallery_choice.main(["--models", str(model), "--set", "tiny", str(folder), str(tmp_path / "groups.json"),
                                "--splits", "2", "--output", str(out)]) == 0
    rows = json.loads((out / "gallery_choice.json").read_text())["tiny"]
    assert len(rows) == 2
    for r in rows:  # half of the groups are judged (their members are the queries)
        assert 0 < r["n_queries"] < sum(len(g) for g in groups)
        assert r["floor_mAP"] >= r["table_floor_mAP"] - 1e-9  # hindsight is the best floor of the judged half
    line = next(ln for ln in (out / "gallery_choice.md").read_text().splitlines() if ln.startswith("| tiny |"))
    mean_chosen = np.mean([r["chosen_mAP"] for r in rows])
    assert f"{mean_chosen:.3f}" in line


def test_choice_files_keep_every_group_member_and_sample_the_rest(tmp_path):
    from pathlib import Path

    from utils.retrieval.choice import choice_files

    files = [(Path(f"/g/d{i}.h5"), f"d{i}") for i in range(100)]
    groups = [["d3", "d97"], ["d50", "d51", "missing"]]
    small = choice_files(files, groups, max_drawings=100)
    assert small == files  # a gallery within the cap is used whole
    sub = choice_files(files, groups, max_drawings=10, seed=1)
    names = [n for _, n in sub]
    assert len(sub) == 10 and {"d3", "d97", "d50", "d51"} <= set(names)
    assert names == sorted(names, key=lambda n: int(n[1:]))  # the gallery's order
    assert choice_files(files, groups, max_drawings=10, seed=1) == sub  # seeded
    assert choice_files(files, groups, max_drawings=10, seed=2) != sub
    assert len(choice_files(files, groups, max_drawings=2)) == 4  # the members are all kept


def test_archive_quality_tables_resample_the_sets_groups(corpus, tmp_path):  # noqa: F811
    from bench.archive_quality import evaluate_set

    joint_main.main(_argv(corpus, "for_tables", "--epochs", "1"))
    groups = _groups_file(corpus, tmp_path / "groups.json")
    result = evaluate_set("tiny", corpus, tmp_path / "groups.json", {0: corpus / "ckpt" / "for_tables" / "best_model.pth"},
                          ["auto"], tmp_path / "cache")
    assert result["table"]["n_groups"] == len(groups)
    assert f"in {len(groups)} groups; intervals resample whole groups" in result["text"]
    assert f"resampling their {len(groups)} groups" in result["text"]


def test_the_gf_part_fused_with_the_counts_is_a_candidate_when_each_tells_half_the_groups_apart():
    rng = np.random.default_rng(2)
    names = [f"d{i}" for i in range(60)]
    group = np.repeat(np.arange(15), 4)
    dims = {**BLOCK_DIMS, "joint": 16, "gf": 8, "deepdxf": 8}
    parts = {n: rng.standard_normal((60, d)) for n, d in dims.items()}
    coarse = rng.standard_normal((3, BLOCK_DIMS["hist"])) * 3  # the counts tell 3 families apart
    parts["hist"] = coarse[group // 5] + 0.3 * rng.standard_normal((60, BLOCK_DIMS["hist"]))
    parts["gf_raw"] = np.repeat(parts["gf_raw"][:1], 60, 0) + 0.01 * rng.standard_normal((60, BLOCK_DIMS["gf_raw"]))
    fine = rng.standard_normal((5, 8)) * 3  # the learned GF part tells 5 members of a family apart
    parts["gf"] = fine[group % 5] + 0.3 * rng.standard_normal((60, 8))
    groups = [[names[i] for i in range(60) if group[i] == g] for g in range(15)]
    choice = choose_from_parts(parts, names, groups, "q")
    assert choice["name"].startswith("gf + ") and {"gf", "hist"} <= {b["name"] for b in choice["blocks"]}
    assert choice["scores"][choice["name"]] > max(choice["scores"]["gf"], choice["scores"]["features"]) + 0.2


def test_gallery_choice_splits_count_as_clearly_better_only_over_their_groups():
    from bench.gallery_choice import paired_over_groups

    # 10 groups of 5 queries; the chosen embedding gains 0.5 on every query of 3 groups, 0 elsewhere
    groups = [[f"g{g}_{k}" for k in range(5)] for g in range(10)]
    queries = [n for g in groups for n in g]
    gain = np.array([0.5 if int(n[1:].split("_")[0]) < 3 else 0.0 for n in queries])
    floor = {"queries": queries, "per_query_ap": np.full(len(queries), 0.4)}
    chosen = {"queries": queries, "per_query_ap": 0.4 + gain}
    query_level = paired_interval(chosen["per_query_ap"], floor["per_query_ap"])
    assert query_level[0] > 0  # one query at a time, the gain looks clear
    lo, hi = paired_over_groups(chosen, floor, groups)
    assert lo <= 0.0 < hi and hi > query_level[1]  # over its 10 groups it is not (a draw may miss all 3)
