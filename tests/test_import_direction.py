"""Imports run one way (docs/architecture.md):

    dataset/formats.py  <-  config/  <-  model/  <-  dataset/loaders/  <-  utils/train/  <-  utils/ (retrieval)  <-  commands
    (and the rest of dataset/: reading, encoding, the archive, below dataset/loaders/)

Checked here, in fresh interpreters (what a module pulls in, transitively) and on the
source (what a module names):

* ``config/`` and ``model/`` pull in neither ``utils``, scikit-learn nor a command;
* ``config/`` and ``model/`` take nothing of ``dataset/`` but ``dataset/formats.py``,
  and ``model/`` does not load h5py (``config/`` no ezdxf either);
* no package module pulls in a command (the five scripts, ``dataset/dxf_process.py``,
  ``dataset/pack.py``, ``dataset/make_revisions.py``);
* ``utils/train/`` imports nothing of the retrieval side of ``utils/``;
* no cycle between the packages of the map;
* ``sys.path`` is edited only in ``tests/`` and ``bench/`` (the package is installed).
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("GF_main", "DeepDXF_train", "joint_main", "joint_train", "SimDeepDXF")
#: commands that live in dataset/ because users run them by that path
PACKAGE_COMMANDS = ("dataset.dxf_process", "dataset.pack", "dataset.make_revisions")
PACKAGES = ("config", "dataset", "model", "utils")
#: utils/train/val_retrieval.py still computes the retrieval check with utils/embedders.py and
#: utils/retrieval.py; the retrieval half moves it to model/floors.py and utils/ranking.py.
PENDING_RETRIEVAL_IMPORTS = {"utils.train.val_retrieval"}

_PROBE = r"""
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    before = set(sys.modules)
    importlib.import_module(name)
    found[name] = sorted(set(sys.modules) - before)
print(json.dumps(found))
"""


def _modules(package: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                  for p in (ROOT / package).rglob("*.py") if p.name != "__init__.py")


_PULLED: dict[tuple[str, ...], dict[str, list[str]]] = {}


def _pulled_in(modules: list[str]) -> dict[str, list[str]]:
    """Module -> the modules its import adds, all imported one after another in one fresh
    interpreter (a module pulled in by an earlier one counts for that one: the union is whole)."""
    key = tuple(modules)
    if key not in _PULLED:
        proc = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        _PULLED[key] = json.loads(proc.stdout)
    return _PULLED[key]


def _imports(path: Path) -> set[str]:
    """The modules a source file names in its import statements (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_config_and_model_import_neither_utils_nor_sklearn_nor_scripts():
    modules = _modules("config") + _modules("model")
    assert "model.GF_model" in modules and "config.joint_config" in modules
    bad = {name: [m for m in new if m == "utils" or m.startswith(("utils.", "sklearn")) or m in SCRIPTS][:5]
           for name, new in _pulled_in(modules).items()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_config_and_model_take_only_the_format_constants_of_dataset():
    allowed = {"dataset", "dataset.formats"}
    found = _pulled_in(_modules("config") + _modules("model"))
    bad = {name: [m for m in new if m.startswith("dataset.") and m not in allowed
                  or m.split(".")[0] in ("h5py", "ezdxf")][:5]
           for name, new in found.items()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_package_module_imports_a_command():
    commands = set(SCRIPTS) | set(PACKAGE_COMMANDS)
    modules = [m for p in PACKAGES for m in _modules(p) if m not in commands]
    for path in [ROOT / Path(*m.split(".")).with_suffix(".py") for m in modules]:
        named = _imports(path)
        assert not named & commands, f"{path.relative_to(ROOT)} imports {sorted(named & commands)}"


def test_training_infrastructure_does_not_import_retrieval():
    for path in sorted((ROOT / "utils" / "train").glob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        outside = {n for n in _imports(path)
                   if n.startswith("utils.") and not n.startswith(("utils.train", "utils.ranking"))}
        if module in PENDING_RETRIEVAL_IMPORTS:
            continue
        assert not outside, f"{module} imports {sorted(outside)} of the retrieval side"


def _node(module: str) -> str:
    """The package of the map a module belongs to."""
    parts = module.split(".")
    if module == "dataset.formats":
        return module
    if parts[0] in ("dataset", "model", "utils") and len(parts) > 2:
        return ".".join(parts[:2])  # dataset.loaders, model.layers, model.weighting, utils.train
    if parts[0] == "utils" and module != "utils.ranking":
        return "utils"
    return parts[0]


def test_no_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for package in PACKAGES:
        for module in _modules(package):
            src = _node(module)
            for named in _imports(ROOT / Path(*module.split(".")).with_suffix(".py")):
                if named.split(".")[0] in PACKAGES and _node(named) != src:
                    edges.setdefault(src, set()).add(_node(named))
    # utils.train.val_retrieval's pending imports aside (see PENDING_RETRIEVAL_IMPORTS)
    edges.get("utils.train", set()).discard("utils")
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, f"package cycle: {' -> '.join(path + [node, nxt])}"
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert edges["model"] <= {"config", "dataset.formats", "model.layers", "model.weighting"}


def test_sys_path_is_edited_only_in_tests_and_bench():
    edits = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "bench") or rel.parts[0].startswith("."):
            continue
        if "sys.path" in path.read_text(encoding="utf-8"):
            edits.append(str(rel))
    assert edits == []
