"""The search embedding is chosen per archive: training scores the learned embedding, every
floor and their fusions on the archive's own validation drawings, stores the best in the
checkpoint, and SimDeepDXF.py --embedding auto searches with exactly that, saying why."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import joint_main
import SimDeepDXF
from model.fusion import Block
from tests.test_joint_main import _argv, corpus  # noqa: F401 (fixture)
from utils.train.checkpoint import load_checkpoint
from model.floors import FLOOR_LABELS
from utils.train.embedding_choice import FLOOR_PRIOR, MIN_CHOICE_GROUPS, PICK_BOOTSTRAPS, Candidate, candidates, corrected_alpha, pick, score
from utils.retrieval.embedders import make_embedder


def _cand(name: str, per_query: list[float], floor: bool = False, n_blocks: int = 1) -> Candidate:
    return Candidate(name, [Block("joint")] * n_blocks, floor=floor,
                     metrics={"mAP": float(np.mean(per_query)), "per_query_ap": per_query})


def test_pick_keeps_the_floor_unless_a_learned_candidate_is_clearly_better():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.9, 60)
    floor = _cand("features", list(base), floor=True)
    weaker = _cand("layout", list(base - 0.1), floor=True)
    noisy = _cand("joint", list(base + rng.normal(0.005, 0.1, 60)))  # higher mean, within the noise
    clear = _cand("joint + layout x2", list(base + 0.03), n_blocks=2)  # better on every query
    best, strongest = pick([noisy, floor, weaker])
    assert strongest.name == "features" and best.name == "features"
    assert noisy.metrics["mAP"] > floor.metrics["mAP"]  # the rule, not the mean, kept the floor
    best, _ = pick([noisy, clear, floor, weaker])
    assert best.name == "joint + layout x2"
    level = _cand("features + layout x0.25", list(base + 0.001), floor=True, n_blocks=3)
    assert pick([level, floor])[0].name == "features"  # within the tie margin: the prior order
    richer = _cand("features + layout x0.5", list(base + 0.01), floor=True, n_blocks=3)
    assert pick([floor, richer])[0].name == "features + layout x0.5"  # beyond it: the higher mAP


def test_another_floor_replaces_the_default_only_beyond_the_noise():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.9, 25)
    default = _cand("features", list(base), floor=True)
    lucky = _cand("hist_std", list(np.clip(base + rng.normal(0.03, 0.15, 25), 0, 1)), floor=True)
    assert lucky.metrics["mAP"] > default.metrics["mAP"] + 0.01  # higher, on 25 noisy queries
    best, floor = pick([lucky, default])
    assert best.name == floor.name == "features"  # the default stays: its noise is not evidence
    clear = _cand("layout_rot", list(base + 0.15), floor=True)  # better on every query
    best, floor = pick([lucky, default, clear])
    assert best.name == floor.name == "layout_rot"
    learned = _cand("joint + layout_rot x1", list(base + 0.16))  # measured against the floor that won
    assert pick([lucky, default, clear, learned])[1].name == "layout_rot"


def test_queries_from_too_few_groups_keep_the_default_floor():
    from utils.train.embedding_choice import MIN_CHOICE_GROUPS, n_query_groups

    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.7, 60)

    def grouped(name, per_query, n_groups, floor=True):
        c = _cand(name, per_query, floor=floor)
        c.metrics["query_groups"] = np.arange(60) % n_groups
        return c
    for n_groups, want in ((MIN_CHOICE_GROUPS - 1, "features"), (MIN_CHOICE_GROUPS, "joint + layout_rot x1")):
        default = grouped("features", list(base), n_groups)
        clear = grouped("layout_rot", list(base + 0.2), n_groups)  # better on every query
        learned = grouped("joint + layout_rot x1", list(base + 0.3), n_groups, floor=False)
        assert n_query_groups(default) == n_groups
        best, floor = pick([default, clear, learned])
        assert best.name == want and floor.name == ("features" if want == "features" else "layout_rot")
    assert n_query_groups(_cand("features", [0.5] * 7, floor=True)) == 7  # no groups: each query alone


def test_the_reason_says_when_the_groups_were_too_few():
    from utils.train.embedding_choice import MIN_CHOICE_GROUPS, choose_from_parts

    rng = np.random.default_rng(4)
    for n_groups, said in ((MIN_CHOICE_GROUPS - 2, True), (MIN_CHOICE_GROUPS + 2, False)):
        names = [f"d{i}" for i in range(3 * n_groups + 20)]
        groups = [names[3 * g:3 * g + 3] for g in range(n_groups)]
        centres = np.repeat(rng.normal(0, 1, (n_groups, 12)), 3, axis=0)
        hist = np.vstack([centres + rng.normal(0, 0.3, centres.shape), rng.normal(0, 1, (20, 12))])
        parts = {"hist": hist, "gf_raw": rng.random((len(names), 210)), "layout": rng.random((len(names), 768)),
                 "layout_rot": rng.random((len(names), 120)), "joint": rng.normal(0, 1, (len(names), 8)),
                 "gf": rng.normal(0, 1, (len(names), 8)), "deepdxf": rng.normal(0, 1, (len(names), 8))}
        choice = choose_from_parts(parts, names, groups, "validation queries of this archive")
        assert f"{3 * n_groups} validation queries of this archive ({n_groups} groups)" in choice["why"]
        assert (f"fewer than {MIN_CHOICE_GROUPS} groups are too few" in choice["why"]) == said
        assert choice["n_groups"] == n_groups
        if said:
            assert choice["name"] == "features"


def test_a_saturated_validation_gets_the_first_floor_of_the_prior_not_the_first_listed():
    perfect = [1.0] * 20
    floors = [_cand(name, perfect, floor=True) for name in ("hist", "layout", "gf_raw", "features")]
    assert pick(floors)[0].name == "features"
    assert pick(floors[:3])[0].name == "gf_raw"


def test_a_learned_candidate_must_clear_an_interval_corrected_for_how_many_were_tried():
    from utils.ranking import paired_interval

    rng = np.random.default_rng(5)
    base = rng.uniform(0.3, 0.9, 200)
    floor = _cand("features", list(base), floor=True)
    lucky = _cand("deepdxf + features x1", list(base + 0.012 + rng.normal(0, 0.07, 200)))
    plain_lo = paired_interval(lucky.metrics["per_query_ap"], list(base))[0]
    strict_lo = paired_interval(lucky.metrics["per_query_ap"], list(base), n_boot=PICK_BOOTSTRAPS,
                                alpha=corrected_alpha(30))[0]
    assert plain_lo > 0 > strict_lo  # clears a plain 95 % interval, not the corrected one
    assert pick([lucky, floor])[0].name == "deepdxf + features x1"  # alone it was the only try
    others = [_cand(f"joint + x{k}", list(base - 0.05)) for k in range(29)]
    assert pick([lucky, floor, *others])[0].name == "features"  # the best of 30 tries: not enough
    assert corrected_alpha(30) == pytest.approx(0.05 / 30) and corrected_alpha(0) == 0.05


def test_candidates_are_scored_with_the_scored_drawings_own_statistics():
    """A z-scored floor block is scored as a search uses it: z-scored with the drawings it
    ranks (the gallery), whatever statistics it carries from the training archive."""
    from model.fusion import with_statistics_of

    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1, (6, 12))
    hist = np.repeat(centres, 3, axis=0) + rng.normal(0, 0.05, (18, 12))  # 6 groups of 3
    hist[:, 0] = rng.normal(0, 100, 18)  # one loud column that says nothing of the groups
    names = [f"d{i}" for i in range(18)]
    groups = [names[3 * g:3 * g + 3] for g in range(6)]
    far = Candidate("hist", [Block("hist", 1.0, np.full(12, -40.0), np.full(12, 1e-3))], floor=True)
    plain = Candidate("hist raw", [Block("hist")], floor=True)
    score([far, plain], {"hist": hist}, names, groups)
    own = with_statistics_of(far.blocks, {"hist": hist})[0]
    np.testing.assert_allclose(own.mean, hist.mean(0)) and np.testing.assert_allclose(own.std, hist.std(0))
    assert far.metrics["mAP"] > 0.95  # z-scored with the 18 drawings: the groups separate
    assert plain.metrics["mAP"] < 0.6  # unscaled, the loud column hides them
    assert with_statistics_of(far.blocks, None)[0].mean is None  # no gallery: L2 only


def test_candidates_mark_the_zscored_floors_with_statistics():
    rng = np.random.default_rng(0)
    parts = {"hist": rng.normal(3, 2, (50, 12)), "gf_raw": rng.random((50, 210)),
             "layout": rng.random((50, 768)), "layout_rot": rng.random((50, 120))}
    cands = {c.name: c for c in candidates(parts)}
    layout = cands["layout"].blocks[0]
    np.testing.assert_allclose(layout.mean, parts["layout"].mean(0))
    np.testing.assert_allclose(layout.std, parts["layout"].std(0))
    assert cands["gf_raw"].blocks[0].mean is None  # the raw GF floor as the tables print it
    assert {"joint", "gf", "deepdxf", "features", "layout_rot", "joint + layout_rot x4", "deepdxf + features x2"} <= set(cands)
    assert all(c.floor == (not any(b.name in ("joint", "gf", "deepdxf") for b in c.blocks)) for c in cands.values())


def test_training_stores_the_choice_and_auto_searches_with_it(corpus, tmp_path, capsys):  # noqa: F811
    summary = joint_main.main(_argv(corpus, "choice", "--epochs", "2", "--k_folds", "2"))
    choice = summary["search_embedding"]
    assert choice is not None and choice["n_queries"] >= 2
    scores = choice["scores"]
    floors = [n for n in scores if n in FLOOR_PRIOR]
    assert set(floors) == set(FLOOR_LABELS)  # every floor of the tables is a candidate, by the same name
    assert scores[choice["name"]] >= scores["features"]  # never below the default floor
    ckpt = load_checkpoint(corpus / "ckpt" / "choice" / "best_model.pth")
    stored = ckpt["search_embedding"]
    from utils.train.splits import Split

    train_idx, val_idx = Split.load(corpus / "logs" / "choice" / "split.json").folds[0]
    assert stored["n_drawings"] == len(train_idx) + len(val_idx)  # the training drawings rank as distractors
    assert stored["name"] == choice["name"] and stored["why"] == choice["why"]
    embedder = make_embedder(corpus / "ckpt" / "choice" / "best_model.pth")
    assert embedder.kind == choice["name"] and embedder.why.startswith(choice["why"])
    if embedder.learned:  # the stored blocks, with the training archive's statistics
        assert [b.to_dict() for b in embedder.blocks] == stored["blocks"]
    else:  # a floor was chosen: the same blocks, z-scored with the gallery instead
        assert embedder.why.endswith("z-scored with the gallery")
        assert [(b.name, b.weight) for b in embedder.blocks] == [(b["name"], b["weight"]) for b in stored["blocks"]]
    assert json.loads((corpus / "logs" / "choice" / "summary.json").read_text())["search_embedding"]["name"] \
        == choice["name"]
    capsys.readouterr()
    code = SimDeepDXF.main(["--model_path", str(corpus / "ckpt" / "choice" / "best_model.pth"), "--gallery",
                            str(corpus / "DeepDXF"), "--export", str(tmp_path / "e.npz"), "--cache_dir",
                            str(tmp_path / "cache")])
    first = capsys.readouterr().out.splitlines()[0]
    assert code == 0 and first.startswith(f"embedding: {choice['name']}") and choice["why"] in first


def test_without_groups_nothing_is_chosen_and_auto_says_so(corpus, capsys):  # noqa: F811
    summary = joint_main.main(_argv(corpus, "nochoice", "--epochs", "1", "--group_pattern", "^(.*)$",
                                    "--group_weight", "0"))
    assert summary["search_embedding"] is None
    embedder = make_embedder(corpus / "ckpt" / "nochoice" / "best_model.pth")
    assert embedder.kind == "features" and "stores no choice" in embedder.why
    assert [b.name for b in embedder.blocks] == ["hist", "gf_raw"] and not embedder.learned


def test_a_users_groups_file_is_chosen_on(corpus, tmp_path):  # noqa: F811
    """With every drawing its own group (no pieces, no revisions), only the user's groups
    give queries: the choice is made on them."""
    from dataset.archive import open_archive

    names = [open_archive(corpus).name(i) for i in range(len(open_archive(corpus)))]
    groups = [names[i:i + 3] for i in range(0, len(names) - 2, 3)]
    path = tmp_path / "groups.json"
    path.write_text(json.dumps(groups))
    summary = joint_main.main(_argv(corpus, "usergroups", "--epochs", "1", "--group_pattern", "^(.*)$",
                                    "--group_weight", "0", "--groups", str(path)))
    assert summary["search_embedding"] is not None and summary["search_embedding"]["n_queries"] >= 2


def test_user_groups_join_the_pattern_groups_for_the_group_term():
    from utils.train.val_retrieval import merge_groups

    labels = merge_groups(["a", "a", "b", "c", "c", "d"], [[0, 3], [5]])
    assert labels[0] == labels[1] == labels[3] == labels[4]  # a's and c's revisions follow them
    assert len({labels[0], labels[2], labels[5]}) == 3


def test_the_group_term_learns_the_users_groups(corpus, tmp_path):  # noqa: F811
    from config.cli import parse_config
    from config.joint_config import JointConfig
    import joint_train
    from tests.synthetic import joint_data
    from utils.train.val_retrieval import merge_groups

    cfg = parse_config(JointConfig, _argv(corpus, "g", "--group_pattern", "^(.*)$"))
    data, split = joint_data(cfg)
    everything = list(range(len(data.names)))

    def group_ids():  # the group term's label of every drawing, as a loader of all of them carries it
        return data._loader(split, everything, shuffle=False, seed=0).part_sampler.groups

    assert len(set(group_ids().tolist())) == len(data.names)  # every drawing alone
    pairs = [data.names[i:i + 2] for i in range(0, 8, 2)]
    (tmp_path / "g.json").write_text(json.dumps(pairs))
    cfg.groups = str(tmp_path / "g.json")
    found = joint_train.read_user_groups(cfg, data.names, type("Log", (), {"info": lambda self, m: None})())
    data.use_group_labels(merge_groups(split.groups, found))
    ids = group_ids()
    assert len(set(ids.tolist())) == len(data.names) - 4
    assert all(ids[data.names.index(a)] == ids[data.names.index(b)] for a, b in pairs)


def test_the_choice_resamples_whole_groups_of_queries():
    """Queries of one group succeed or fail together: a candidate better on most groups and
    worse on some clears a query-by-query interval but not one over groups."""
    from utils.ranking import paired_interval, query_clusters

    groups = [[f"g{k}_{j}" for j in range(20)] for k in range(20)]
    queries = [n for g in groups for n in g]
    clusters = query_clusters(queries, groups)
    assert clusters.tolist() == [k for k in range(20) for _ in range(20)]
    assert query_clusters(["g3_1", "nowhere", "other"], groups).tolist()[0] == 3
    assert len(set(query_clusters(["nowhere", "other"], groups).tolist())) == 2  # each its own
    # members matched as --groups matches them: a unique bare stem, an extension
    assert query_clusters(["lib__a", "lib__b", "c"], [["a.dxf", "b"], ["c", "a"]]).tolist() == [0, 0, 1]
    base = np.full(400, 0.5)
    gain = np.where(clusters < 14, 0.05, -0.08)  # +0.05 on 14 groups, -0.08 on 6
    assert paired_interval(base + gain, base)[0] > 0  # one by one: "clearly better"
    lo, hi = paired_interval(base + gain, base, clusters=clusters)
    assert lo < 0 < hi  # over groups: not
    floor = Candidate("features", [Block("hist")], floor=True,
                      metrics={"mAP": 0.5, "per_query_ap": list(base), "query_groups": clusters})
    lucky = Candidate("joint", [Block("joint")],
                      metrics={"mAP": float((base + gain).mean()), "per_query_ap": list(base + gain),
                               "query_groups": clusters})
    assert pick([lucky, floor])[0].name == "features"
    del lucky.metrics["query_groups"]
    assert pick([lucky, floor])[0].name == "joint"  # what the query-by-query rule did


def test_score_gives_each_candidate_the_group_of_each_query():
    rng = np.random.default_rng(2)
    names = [f"d{i}" for i in range(12)]
    groups = [names[0:3], names[3:6], names[6:9]]
    parts = {"hist": rng.random((12, 12)), "gf_raw": rng.random((12, 210))}
    cands = [Candidate("gf_raw", [Block("gf_raw")], floor=True), Candidate("hist", [Block("hist")], floor=True)]
    score(cands, parts, names, groups)
    for c in cands:
        assert c.metrics["query_groups"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_the_training_log_asks_for_more_validation_groups_only_when_they_were_too_few(monkeypatch):
    import utils.train.checkpoint as checkpoint
    import utils.train.embedding_choice as embedding_choice

    rng = np.random.default_rng(5)
    monkeypatch.setattr(checkpoint, "load_trained_models", lambda path, device: SimpleNamespace(gf=None, deepdxf=None))
    monkeypatch.setattr(embedding_choice, "store_choice", lambda paths, choice: None)
    for n_groups, said in ((MIN_CHOICE_GROUPS - 1, True), (MIN_CHOICE_GROUPS, False)):
        names = [f"d{i}" for i in range(2 * n_groups)]
        groups = [names[2 * g:2 * g + 2] for g in range(n_groups)]
        parts = {"hist": rng.random((len(names), 12)), "gf_raw": rng.random((len(names), 210)),
                 "layout": rng.random((len(names), 768)), "layout_rot": rng.random((len(names), 120)),
                 "joint": rng.normal(0, 1, (len(names), 8)), "gf": rng.normal(0, 1, (len(names), 8)),
                 "deepdxf": rng.normal(0, 1, (len(names), 8))}
        choice = embedding_choice.choose_from_parts(parts, names, groups, "validation queries of this archive")
        monkeypatch.setattr(embedding_choice, "choose_search_embedding", lambda *a, **k: choice)  # noqa: B023
        lines: list[str] = []
        kept = embedding_choice.choose_and_store("fold.pth", None, names, names, range(len(names)),
                                                 SimpleNamespace(info=lines.append), max_drawings=100, seed=0)
        assert kept["n_groups"] == n_groups
        assert any(f"the validation held {n_groups} group(s)" in line and "--k_folds 2" in line
                   for line in lines) == said
