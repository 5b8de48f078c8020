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


def test_folders_groups_are_the_folders_and_their_halves_partition_them(tmp_path):
    import json

    from bench.make_bench_sets import main

    enc = tmp_path / "enc"
    names = ([f"elektro__fuse__f{i}" for i in range(3)] + [f"elektro__lamp__l{i}" for i in range(2)]
             + [f"plan__p{i}" for i in range(4)] + ["elektro__motor__alone", "top"]
             + [f"kin{k}__k{i}" for k in range(12) for i in range(2)])
    for sub, ext in (("DeepDXF", ".h5"), ("GF", ".npz")):
        (enc / sub).mkdir(parents=True)
        for n in names:
            (enc / sub / f"{n}{ext}").write_bytes(b"x")
    assert main(["folders", "--encodings", str(enc), "--name", "lib", "--output", str(tmp_path / "out")]) == 0
    dest = tmp_path / "out" / "lib"
    assert sorted(p.stem for p in (dest / "DeepDXF").glob("*.h5")) == sorted(names)  # every drawing is in the gallery
    groups = json.loads((dest / "groups.json").read_text())
    as_sets = sorted(sorted(g) for g in groups)
    assert sorted(["elektro__fuse__f0", "elektro__fuse__f1", "elektro__fuse__f2"]) in as_sets
    assert sorted(["plan__p0", "plan__p1", "plan__p2", "plan__p3"]) in as_sets  # a subfolder is its own group
    assert len(groups) == 15 and all(len(g) >= 2 for g in groups)  # the lone motor and the top drawing: no group
    a = json.loads((dest / "groups-a.json").read_text())
    b = json.loads((dest / "groups-b.json").read_text())
    assert a and b and sorted(sorted(g) for g in a + b) == as_sets  # the halves split the folders
