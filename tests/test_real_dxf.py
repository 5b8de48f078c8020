"""Every real DXF file in ../shared/dxf/ goes through preprocessing: ok, or a reasoned skip."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from config.process_config import ProcessConfig
from dataset.dxf_process import run

SHARED_DXF = Path(__file__).resolve().parents[2] / "shared" / "dxf"
FOLDERS = ["leadframe", "leadframe-dev", "thirdparty"]

pytestmark = pytest.mark.skipif(not SHARED_DXF.is_dir(), reason="../shared/dxf is not here")


def test_every_real_file_is_processed_or_skipped_with_a_reason(tmp_path):
    inputs = [str(SHARED_DXF / f) for f in FOLDERS if (SHARED_DXF / f).is_dir()]
    rows = run(ProcessConfig(input=inputs, output=str(tmp_path), workers=2, timeout=120))
    n_files = sum(1 for f in inputs for p in Path(f).rglob("*") if p.suffix.lower() == ".dxf")
    assert len(rows) == n_files
    by_status = Counter(r["status"] for r in rows)
    for row in rows:
        assert row["status"] in ("ok", "skipped", "failed")
        if row["status"] != "ok":
            assert row["reason"], row
            assert not row["reason"].startswith(("unexpected error", "timed out")), row
    # the lead-frame drawings are the realistic workload: all of them must encode
    lead = [r for r in rows if "/leadframe" in r["path"].replace("\\", "/")]
    lead_bad = [r for r in lead if r["status"] == "failed"]
    assert not lead_bad, lead_bad
    assert by_status["ok"] >= 0.9 * len(rows)
    assert len(list((tmp_path / "GF").glob("*.npz"))) == by_status["ok"]
