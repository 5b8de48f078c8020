"""bench/quality.py: tables on synthetic embeddings with known mAP, the protocol's sets."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.quality import (
    FLOOR_TO_BEAT,
    Entry,
    _link_farm,
    extra_training,
    build_table,
    format_markdown,
    metrics_on,
    parse_checkpoints,
    protocol_sets,
)
from utils.ranking import retrieval_metrics

NAMES = ["a1", "a2", "b1", "b2"]
GROUPS = [["a1", "a2"], ["b1", "b2"]]


def _on_circle(degrees: list[float]) -> np.ndarray:
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1)


# a1 at 0°, a2 at 25°, b1 at 10°, b2 at 45°: the positive ranks 2nd, 3rd, 3rd, 2nd
WEAK = _on_circle([0.0, 25.0, 10.0, 45.0])
WEAK_MAP = (1 / 2 + 1 / 3 + 1 / 3 + 1 / 2) / 4
PERFECT = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])


def _m(emb: np.ndarray) -> dict:
    return retrieval_metrics(emb, NAMES, GROUPS)


def test_synthetic_embeddings_have_the_hand_computed_map():
    assert _m(WEAK)["mAP"] == pytest.approx(WEAK_MAP)
    assert _m(PERFECT)["mAP"] == pytest.approx(1.0)


def test_table_marks_the_strongest_non_random_floor_and_the_difference_to_it():
    entries = [
        Entry("random vectors", "floor", [_m(PERFECT)]),  # chance level never counts as a floor to beat
        Entry("weak floor", "floor", [_m(WEAK)]),
        Entry("strong floor", "floor", [_m(PERFECT)]),
        Entry("joint", "inductive", [_m(WEAK), _m(PERFECT)]),
    ]
    table = build_table(entries, n_boot=200)
    assert table["floor_to_beat"] == "strong floor"
    rows = {(r["label"], r["kind"]): r for r in table["rows"]}
    learned = rows[("joint", "inductive")]
    assert learned["mAP"] == pytest.approx((WEAK_MAP + 1.0) / 2)
    assert learned["mAP_seed_std"] == pytest.approx((1.0 - WEAK_MAP) / 2)
    assert learned["delta_vs_floor"] == pytest.approx((WEAK_MAP + 1.0) / 2 - 1.0)
    assert rows[("weak floor", "floor")]["delta_vs_floor"] == pytest.approx(WEAK_MAP - 1.0)
    assert [r["floor_to_beat"] for r in table["rows"]] == [False, False, True, False]
    lo, hi = learned["mAP_CI95"]
    assert lo <= learned["mAP"] <= hi
    md = format_markdown("report-revisions", table)
    marked = [line for line in md.splitlines() if f"**{FLOOR_TO_BEAT}**" in line]
    assert len(marked) == 1 and marked[0].startswith("| strong floor |")
    assert "(gallery 4 drawings, 4 queries)" in md


def test_table_without_floors_marks_nothing():
    table = build_table([Entry("joint", "transductive", [_m(WEAK)])], n_boot=50)
    assert table["floor_to_beat"] is None
    assert math.isnan(table["rows"][0]["delta_vs_floor"])
    assert f"**{FLOOR_TO_BEAT}**" not in format_markdown("x", table)


def test_metrics_on_judges_only_the_kept_drawings_in_their_order():
    names = ["zz_extra", "b2", "a1", "b1", "a2"]
    emb = np.concatenate([[[-1.0, -1.0]], WEAK[[3, 0, 2, 1]]])
    m = metrics_on(names, emb, NAMES, GROUPS)
    assert m["n_gallery"] == 4
    assert m["mAP"] == pytest.approx(WEAK_MAP)
    assert m["queries"] == NAMES


def _fake_protocol(tmp_path: Path) -> tuple[Path, Path]:
    rev = tmp_path / "rev"
    rev.mkdir()
    sources = {"train": ["T1", "T2"], "selection": ["S1", "S2"], "report": ["R1", "R2"]}
    groups = [[s] + [f"{s}__rev{k}" for k in range(2)] for split in sources.values() for s in split]
    (rev / "groups.json").write_text(json.dumps(groups), encoding="utf-8")
    (rev / "splits.json").write_text(json.dumps({"seed": 0, **sources}), encoding="utf-8")
    prep = tmp_path / "prep"
    for sub, ext in (("GF", ".npz"), ("DeepDXF", ".h5")):
        (prep / sub).mkdir(parents=True)
        for g in groups:
            for n in g:
                if n != "R2__rev1":  # one revision that preprocessing skipped
                    (prep / sub / f"{n}{ext}").write_bytes(b"x")
    return rev, prep


def test_protocol_sets_follow_the_source_splits(tmp_path):
    rev, prep = _fake_protocol(tmp_path)
    train, sets = protocol_sets(rev, prep, None, None, None)
    assert train == ["T1", "T1__rev0", "T1__rev1", "T2", "T2__rev0", "T2__rev1"]
    by = {s.name: s for s in sets}
    assert set(by) == {"selection-revisions", "report-revisions"}
    assert by["selection-revisions"].groups == [["S1", "S1__rev0", "S1__rev1"], ["S2", "S2__rev0", "S2__rev1"]]
    assert by["report-revisions"].groups[1] == ["R2", "R2__rev0"]
    assert "R2__rev1" not in by["report-revisions"].names
    assert not set(train) & set(by["selection-revisions"].names)
    assert not set(by["selection-revisions"].names) & set(by["report-revisions"].names)


def test_link_farm_points_at_the_preprocessed_files_and_is_reused(tmp_path):
    rev, prep = _fake_protocol(tmp_path)
    farm = _link_farm(tmp_path / "farm", ["S1", "S2"], {"S1": prep, "S2": prep})
    assert sorted(p.name for p in (farm / "DeepDXF").iterdir()) == ["S1.h5", "S2.h5"]
    assert (farm / "GF" / "S1.npz").resolve() == (prep / "GF" / "S1.npz").resolve()
    stamp = (farm / ".names").stat().st_mtime_ns
    _link_farm(tmp_path / "farm", ["S2", "S1"], {"S1": prep, "S2": prep})
    assert (farm / ".names").stat().st_mtime_ns == stamp
    _link_farm(tmp_path / "farm", ["S1"], {"S1": prep})
    assert sorted(p.name for p in (farm / "DeepDXF").iterdir()) == ["S1.h5"]


def test_searched_drawings_train_under_names_that_hide_their_group(tmp_path):
    from bench.quality import anonymous_names
    from dataset.names import group_of

    rev, prep = _fake_protocol(tmp_path)
    hidden = anonymous_names(["S1", "S1__rev0", "S1__rev1"])
    farm = _link_farm(tmp_path / "farm", ["S1", "S1__rev0", "S1__rev1", "T1"], {n: prep for n in ["S1", "S1__rev0", "S1__rev1", "T1"]}, hidden)
    links = sorted(p.stem for p in (farm / "GF").iterdir())
    assert "T1" in links and not any(n.startswith("S1") for n in links)
    assert len({group_of(n) for n in hidden.values()}) == 3  # each its own group: no label leaks into training
    assert (farm / "GF" / f"{hidden['S1__rev0']}.npz").resolve() == (prep / "GF" / "S1__rev0.npz").resolve()


def test_checkpoint_rows_are_checked(tmp_path):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    got = parse_checkpoints([f"inductive={ckpt}", f"inductive={ckpt}", f"transductive:report-revisions={ckpt}"])
    assert got == {"inductive": [ckpt, ckpt], "transductive:report-revisions": [ckpt]}
    with pytest.raises(ValueError, match="ROW=PATH"):
        parse_checkpoints([f"transductive={ckpt}"])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        parse_checkpoints([f"inductive={tmp_path / 'missing.pth'}"])


def test_quality_cli_writes_floor_tables_without_training(tmp_path, capsys):
    """End to end on the bundled sample generator: preprocessing in a subprocess,
    floors in-process, no model (``--no_train``), no exported floors."""
    from dataset.make_revisions import generate
    from bench.quality import main
    from dataset.make_sample_dxf import make_sample_corpus

    make_sample_corpus(tmp_path / "src", seed=0, n_revisions=1)
    generate([tmp_path / "src"], tmp_path / "rev", n_revisions=1, seed=0, quiet=True)
    out = tmp_path / "q"
    rc = main(["--revisions", str(tmp_path / "rev"), "--human", "", "--output", str(out), "--no_train",
               "--floors", "--n_boot", "50"])
    assert rc == 0
    result = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    assert set(result["sets"]) == {"selection-revisions", "report-revisions"}
    for table in result["sets"].values():
        assert table["floor_to_beat"] in {r["label"] for r in table["rows"] if r["kind"] == "floor"}
        assert not table["floor_to_beat"].startswith("random")
        assert all(r["kind"] == "floor" for r in table["rows"])
    md = (out / "quality.md").read_text(encoding="utf-8")
    assert md.count("**floor to beat**") == 2
    assert "### report-revisions" in capsys.readouterr().out


def test_train_distractors_join_the_revision_galleries_but_not_the_queries(tmp_path):
    rev, prep = _fake_protocol(tmp_path)
    train, sets = protocol_sets(rev, prep, None, None, None, train_distractors=True)
    sel = next(s for s in sets if s.name == "selection-revisions")
    assert set(train) <= set(sel.names) and len(sel.names) == len(train) + 6
    assert all(not n.startswith("T") for g in sel.groups for n in g)


def test_extra_training_takes_drawings_with_both_encodings_and_never_an_evaluation_drawing(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, names in ((one, ["x", "y", "q"]), (two, ["y", "z"])):
        (folder / "GF").mkdir(parents=True)
        (folder / "DeepDXF").mkdir()
        for n in names:
            (folder / "GF" / f"{n}.npz").write_bytes(b"")
            (folder / "DeepDXF" / f"{n}.h5").write_bytes(b"")
    (one / "GF" / "only_gf.npz").write_bytes(b"")
    got = extra_training([one, two], exclude={"q"})
    assert got == {"x": one, "y": one, "z": two}  # the first folder wins a repeated name
    with pytest.raises(FileNotFoundError, match="dxf_process"):
        extra_training([tmp_path / "missing"], exclude=set())


def test_verdict_needs_more_than_the_floor_interval_half_width():
    from bench.quality import format_verdict, verdict

    floor = {"label": "raw GF matrices", "kind": "floor", "mAP": 0.80, "mAP_CI95": [0.70, 0.90], "floor_to_beat": True}
    tie = {"label": "joint", "kind": "inductive", "mAP": 0.85, "mAP_CI95": [0.8, 0.9], "floor_to_beat": False}
    win = {"label": "joint", "kind": "inductive", "mAP": 0.95, "mAP_CI95": [0.9, 1.0], "floor_to_beat": False}
    v = verdict({"rows": [floor, tie]}, "joint")
    assert v["difference"] == pytest.approx(0.05) and v["half_width"] == pytest.approx(0.10) and not v["beats"]
    assert "does not beat the floor** (0.050 short" in format_verdict("report-revisions", v)
    assert verdict({"rows": [floor, win]}, "joint")["beats"]
    assert verdict({"rows": [floor, tie]}, "gf") is None
    assert "Paired" not in format_verdict("report-revisions", v)  # no per-query APs: no paired interval


def test_paired_interval_sees_a_small_gain_on_every_query():
    from bench.quality import format_verdict, verdict

    rng = np.random.default_rng(0)
    ap = rng.uniform(0.2, 1.0, 60)  # queries of very different difficulty: wide intervals
    floor = {"label": "floor", "kind": "floor", "mAP": ap.mean(), "mAP_CI95": [ap.mean() - 0.1, ap.mean() + 0.1],
             "floor_to_beat": True, "per_query_ap": list(ap)}
    gain = ap + rng.uniform(0.01, 0.03, 60)
    row = {"label": "joint", "kind": "inductive", "mAP": gain.mean(), "floor_to_beat": False, "per_query_ap": list(gain)}
    v = verdict({"rows": [floor, row]}, "joint")
    lo, hi = v["paired_CI95"]
    assert not v["beats"] and 0.01 < lo < gain.mean() - ap.mean() < hi < 0.03
    assert "better than the floor" in format_verdict("report-revisions", v)
    worse = dict(row, mAP=ap.mean() - 0.02, per_query_ap=list(ap - 0.02))
    assert "worse than the floor" in format_verdict("x", verdict({"rows": [floor, worse]}, "joint"))


def test_kinds_set_keeps_preprocessed_members_of_groups_of_two_or_more(tmp_path):
    from bench.learn_ablation import kinds_set
    from tests.synthetic import write_synthetic_joint_corpus

    names = write_synthetic_joint_corpus(tmp_path / "prep", 8, seed=0, max_len=20)
    folder = tmp_path / "kinds"
    folder.mkdir()
    groups = [names[:3], names[3:5] + ["not_preprocessed"], [names[5], "missing_too"], names[6:]]
    (folder / "groups.json").write_text(json.dumps(groups), encoding="utf-8")
    s = kinds_set(folder, tmp_path / "prep")
    assert s["name"] == "selection-kinds"
    assert s["groups"] == [names[:3], names[3:5], names[6:]]  # the lone preprocessed member's group is dropped
    assert s["names"] == sorted(names[:5] + names[6:])
    assert any(e.label.startswith("raw GF") for e in s["floors"]) and len(s["encs"]) == 7


def test_untrained_rows_are_the_checkpoints_networks_with_fresh_seeded_weights(tmp_path):
    from bench.learn_ablation import encodings_of, untrained_rows
    from config.cli import config_to_dict
    from config.joint_config import JointConfig
    from joint_train import build_joint, joint_state
    from tests.synthetic import write_synthetic_joint_corpus
    from utils.train.checkpoint import save_checkpoint

    names = write_synthetic_joint_corpus(tmp_path / "prep", 6, seed=1, max_len=20)
    cfg = JointConfig(GF_hidden=8, GF_proj_dim=8, GF_num_layers=1, DeepDXF_d_model=8, DeepDXF_heads=2,
                      DeepDXF_layers=1, DeepDXF_proj_dim=8, DeepDXF_size_dim=4, DeepDXF_chunk_len=16)
    obj, weighting = build_joint(cfg, 4)
    ckpt = save_checkpoint(tmp_path / "m.pth", "joint", config_to_dict(cfg), joint_state(obj, weighting))
    encs = encodings_of(names, tmp_path / "prep")
    a, b, c = untrained_rows(ckpt, encs, 0), untrained_rows(ckpt, encs, 0), untrained_rows(ckpt, encs, 1)
    assert set(a) == {"joint, untrained", "gf, untrained", "deepdxf, untrained"}
    g, d, j = a["gf, untrained"], a["deepdxf, untrained"], a["joint, untrained"]
    assert g.shape == (6, 10 * 8) and d.shape[0] == 6 and j.shape == (6, g.shape[1] + d.shape[1])
    assert np.allclose(np.linalg.norm(j, axis=1), math.sqrt(2), atol=1e-5)  # two unit halves
    assert np.array_equal(a["joint, untrained"], b["joint, untrained"])  # seeded
    assert not np.allclose(a["gf, untrained"], c["gf, untrained"])  # another seed: other weights


def test_ablation_pairs_each_variant_with_its_untrained_twin_and_the_base():
    from bench.learn_ablation import paired_differences

    def run(ap: np.ndarray) -> dict:
        return {"mAP": float(ap.mean()), "per_query_ap": list(ap), "n_queries": len(ap), "n_gallery": 9,
                "P@1": 0.0, "R@10": 0.0, "nDCG@10": 0.0, "MRR": 0.0}

    ap = np.random.default_rng(1).uniform(0.3, 0.9, 40)
    base = build_table([Entry("floor", "floor", [run(ap)]), Entry("gf", "inductive", [run(ap)]),
                        Entry("gf, untrained", "inductive", [run(ap - 0.01)])])
    variant = build_table([Entry("floor", "floor", [run(ap)]), Entry("gf", "inductive", [run(ap + 0.02), run(ap + 0.04)])])
    lines = paired_differences({"sel/base": base, "sel/v": variant})
    assert lines == ["- sel, base, gf: vs untrained +0.010 (+0.010 to +0.010)",
                     "- sel, v, gf: vs base +0.030 (+0.030 to +0.030)"]  # seeds averaged per query first


def test_cross_validated_selection_never_touches_the_report_split(tmp_path):
    from bench.learn_ablation import cv_folds

    rev, prep = _fake_protocol(tmp_path)
    folds = cv_folds(rev, prep, 2, seed=0, distractors=True, sources_only=False)
    assert len(folds) == 2
    judged = [g[0] for _, _, groups in folds for g in groups]
    assert sorted(judged) == ["S1", "S2", "T1", "T2"]  # every train and selection source judged once
    for fit, gallery, groups in folds:
        members = {n for g in groups for n in g}
        assert not members & set(fit) and not any(n.startswith("R") for n in fit + gallery)
        assert set(fit) <= set(gallery)  # the training drawings are the distractors
    fit, _, groups = cv_folds(rev, prep, 2, seed=0, distractors=False, sources_only=True)[0]
    assert all("__rev" not in n for n in fit)


def test_fold_metrics_join_different_queries_and_average_the_same_ones():
    from bench.learn_ablation import average_runs, concat_queries

    def run(ap: list[float], queries: list[str]) -> dict:
        per_query = {k: list(ap) for k in ("mAP", "P@1", "P@5", "R@10", "nDCG@10", "MRR")}
        return {"n_queries": len(ap), "n_gallery": 5, "missing": [], "queries": queries, "per_query_ap": list(ap),
                "per_query": per_query, **{k: float(np.mean(ap)) for k in per_query}}

    joined = concat_queries([run([1.0, 0.5], ["a", "b"]), run([0.0], ["c"])])
    assert joined["n_queries"] == 3 and joined["mAP"] == pytest.approx(0.5) and joined["queries"] == ["a", "b", "c"]
    same = average_runs([run([1.0, 0.5], ["a", "b"]), run([0.0, 0.5], ["a", "b"])])
    assert same["per_query_ap"] == [0.5, 0.5] and same["mAP"] == pytest.approx(0.5) and same["n_queries"] == 2


def test_cached_models_are_named_after_the_trainer_defaults(monkeypatch):
    from bench.quality import defaults_fingerprint
    from config import joint_config

    before = defaults_fingerprint()
    assert before == defaults_fingerprint()
    from dataclasses import dataclass

    @dataclass
    class Changed(joint_config.JointConfig):  # as a release that changes a default
        group_weight: float = 2.0

    monkeypatch.setattr(joint_config, "JointConfig", Changed)
    assert defaults_fingerprint() != before


def test_tables_with_groups_resample_whole_groups_in_every_interval():
    from bench.quality import Entry, build_table, format_markdown, format_verdict, verdict

    # 10 groups of 6 queries; the learned row gains +0.2 on 4 groups and loses 0.04 on the rest:
    # query by query that looks clearly better, over the 10 groups it does not
    groups = [[f"g{k}_{i}" for i in range(6)] for k in range(10)]
    queries = [n for g in groups for n in g]
    rng = np.random.default_rng(1)
    base = np.repeat(rng.uniform(0.3, 0.9, 10), 6)
    gain = np.repeat(np.where(np.arange(10) < 4, 0.2, -0.04), 6)

    def run(ap):
        return {"mAP": float(np.mean(ap)), "P@1": 0.5, "R@10": 0.5, "nDCG@10": 0.5, "MRR": 0.5, "n_queries": 60,
                "n_gallery": 60, "queries": queries, "per_query_ap": list(ap)}
    entries = [Entry("floor", "floor", [run(base)]), Entry("joint", "inductive", [run(base + gain)])]
    plain, grouped = build_table(entries, n_boot=2000), build_table(entries, n_boot=2000, groups=groups)
    assert plain["n_groups"] is None and grouped["n_groups"] == 10
    assert grouped["rows"][1]["query_groups"] == [k for k in range(10) for _ in range(6)]
    w = [t["rows"][0]["mAP_CI95"][1] - t["rows"][0]["mAP_CI95"][0] for t in (plain, grouped)]
    assert w[1] > 1.8 * w[0]  # the floor's own interval widens too
    v_plain, v_grouped = verdict(plain, "joint", n_boot=2000), verdict(grouped, "joint", n_boot=2000)
    assert v_plain["paired_CI95"][0] > 0 > v_grouped["paired_CI95"][0]
    assert "resampling their 10 groups" in format_verdict("s", v_grouped)
    assert "not distinguishable" in format_verdict("s", v_grouped) and "better than" in format_verdict("s", v_plain)
    assert "60 queries in 10 groups; intervals resample whole groups" in format_markdown("s", grouped)
    assert "groups" not in format_markdown("s", plain).splitlines()[0]
