"""bench/make_bench_sets.py: the kicad split keeps every library folder on one side."""
from bench.make_bench_sets import split_by_folder


def test_split_by_folder_keeps_folders_whole_and_follows_the_fractions():
    names = [f"F{f:02d}__part{i}" for f in range(40) for i in range(1 + f % 5)]
    out = split_by_folder(names, [0.6, 0.2, 0.2], seed=0)
    assert sorted(sum(out.values(), [])) == sorted(names)
    side = {}
    for s, members in out.items():
        for n in members:
            assert side.setdefault(n.split("__")[0], s) == s  # one side per folder
    assert abs(len(out["train"]) / len(names) - 0.6) < 0.1
    assert out == split_by_folder(list(reversed(names)), [0.6, 0.2, 0.2], seed=0)  # order does not matter
    assert out != split_by_folder(names, [0.6, 0.2, 0.2], seed=1)
