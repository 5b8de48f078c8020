"""Imports run one way: dataset -> config -> model -> utils -> scripts.

Each module of ``config/`` and ``model/`` is imported in a fresh interpreter, and
the test fails if that pulls in ``utils``, scikit-learn or a top-level script.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("GF_main", "DeepDXF_train", "joint_main", "joint_train", "SimDeepDXF")

_PROBE = r"""
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    before = set(sys.modules)
    importlib.import_module(name)
    new = set(sys.modules) - before
    bad = sorted(m for m in new if m == "utils" or m.startswith(("utils.", "sklearn")) or m in %r)
    if bad:
        found[name] = bad[:5]
print(json.dumps(found))
""" % (SCRIPTS,)


def _modules(package: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                  for p in (ROOT / package).rglob("*.py") if p.name != "__init__.py")


def test_config_and_model_import_neither_utils_nor_sklearn_nor_scripts():
    modules = _modules("config") + _modules("model")
    assert "model.GF_model" in modules and "config.joint_config" in modules
    proc = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {}
