"""Where the bench scripts find real drawings when no folder is given.

``$DXF_BENCH_DIR`` (default ``data/dxf``) holds three folders of DXF files::

    leadframe/       real lead-frame drawings (revision sources, distractors, timing)
    leadframe-dev/   labelled lead-frame drawings with groups.json (a report set)
    thirdparty/      drawings of other domains and producers

None of them ships with the toolkit (their licences are unknown): point
``DXF_BENCH_DIR`` at your own, or pass each script its folders.
"""
from __future__ import annotations

import os
from pathlib import Path

BENCH_DXF = Path(os.environ.get("DXF_BENCH_DIR", "data/dxf"))
LEADFRAME = BENCH_DXF / "leadframe"
LABELLED = BENCH_DXF / "leadframe-dev"
THIRDPARTY = BENCH_DXF / "thirdparty"
LABELLED_GROUPS = LABELLED / "groups.json"
