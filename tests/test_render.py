"""utils/retrieval/render.py: the missing-CJK-font warning, dimension texts left out of strips,
robust extents of thumbnails and names wrapped at word boundaries."""
from __future__ import annotations

from pathlib import Path

import ezdxf
import pytest

from utils.retrieval import render


@pytest.fixture
def drawing(tmp_path) -> Path:
    doc = ezdxf.new(setup=True)
    msp = doc.modelspace()
    msp.add_line((0, 0), (10, 0))
    msp.add_linear_dim(base=(0, 3), p1=(0, 0), p2=(10, 0)).render()
    path = tmp_path / "引线框架 (1).dxf"
    doc.saveas(path)
    return path


def test_chinese_names_without_a_cjk_font_warn_once_naming_the_fix(drawing, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(render, "installed_cjk_font", lambda: None)
    render.warn_missing_cjk_font.cache_clear()
    panels = [render.Panel(str(drawing), "引线框架 (1)", "query"), render.Panel(None, "DFN 8L", "#1")]
    render.render_panels(panels, tmp_path / "a.png")
    render.render_panels(panels, tmp_path / "b.png")
    err = capsys.readouterr().err
    assert err.count("warning: no font with Chinese (CJK) glyphs") == 1
    assert "fonts-noto-cjk" in err
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_no_warning_with_a_cjk_font_or_without_chinese_names(drawing, tmp_path, capsys, monkeypatch):
    render.warn_missing_cjk_font.cache_clear()
    monkeypatch.setattr(render, "installed_cjk_font", lambda: None)
    render.render_panels([render.Panel(str(drawing), "QFN21LA(Cu) -508 Rev1_5", "query")], tmp_path / "a.png")
    monkeypatch.setattr(render, "installed_cjk_font", lambda: "DejaVu Sans")
    render.render_panels([render.Panel(str(drawing), "引线框架 (1)", "query")], tmp_path / "b.png")
    assert "CJK" not in capsys.readouterr().err


def test_dimension_text_is_left_out_of_the_strip(drawing):
    """ezdxf draws text as filled patches: the strip has the same lines as ezdxf's own
    drawing, and fewer patches (no "10" of the dimension)."""
    import matplotlib.pyplot as plt
    from ezdxf.addons.drawing import Frontend, RenderContext
    from ezdxf.addons.drawing.matplotlib import MatplotlibBackend

    doc = ezdxf.readfile(drawing)
    fig, (plain, strip) = plt.subplots(1, 2)
    Frontend(RenderContext(doc), MatplotlibBackend(plain)).draw_layout(doc.modelspace(), finalize=True)
    render._draw_dxf(strip, str(drawing))
    assert len(strip.lines) == len(plain.lines) > 0  # the line, the dimension and extension lines
    assert len(strip.patches) < len(plain.patches)
    plt.close(fig)


def _dark_span(png: Path) -> tuple[float, float]:
    """Fractions of the picture's width and height that hold drawn (dark) pixels."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(png)[..., :3].mean(axis=2)
    dark = img < 0.6
    cols, rows = np.flatnonzero(dark.any(axis=0)), np.flatnonzero(dark.any(axis=1))
    return (cols[-1] - cols[0] + 1) / img.shape[1], (rows[-1] - rows[0] + 1) / img.shape[0]


def _grid_drawing(path: Path, stray: bool, width: float = 100.0, height: float = 100.0) -> Path:
    doc = ezdxf.new()
    msp = doc.modelspace()
    for i in range(11):
        msp.add_line((i * width / 10, 0), (i * width / 10, height))
        msp.add_line((0, i * height / 10), (width, i * height / 10))
    if stray:
        msp.add_line((1e8, 1e8), (1e8 + 1, 1e8 + 1))
    doc.saveas(path)
    return path


def test_robust_extents_ignore_one_entity_far_away():
    import numpy as np

    boxes = np.array([[i, i, i + 10, i + 10] for i in range(40)] + [[1e8, 1e8, 1e8 + 1, 1e8 + 1]], dtype=float)
    x0, y0, x1, y1 = render.robust_extents(boxes)
    assert -5 < x0 <= 0 and 49 <= x1 < 55 and -5 < y0 <= 0 and 49 <= y1 < 55
    assert render.robust_extents(np.zeros((0, 4))) is None


def test_robust_extents_keep_a_frame_at_the_border_whole():
    """Entities near the core (a frame around the views) widen it; only far ones are cut."""
    import numpy as np

    boxes = np.array([[i, 0, i + 1, 1] for i in range(100)] + [[-20, -20, 120, 21]], dtype=float)
    x0, y0, x1, y1 = render.robust_extents(boxes)
    assert x0 <= -20 and x1 >= 120 and y0 <= -20 and y1 >= 21


def test_a_stray_entity_at_1e8_does_not_shrink_the_thumbnail_to_a_dot(tmp_path):
    with_stray = render.render_thumbnail(_grid_drawing(tmp_path / "stray.dxf", True), tmp_path / "a.png", 200)
    clean = render.render_thumbnail(_grid_drawing(tmp_path / "clean.dxf", False), tmp_path / "b.png", 200)
    for png in (with_stray, clean):
        w, h = _dark_span(png)
        assert w > 0.8 and h > 0.8, (png, w, h)


def test_a_landscape_sheet_gives_a_landscape_thumbnail_at_full_width(tmp_path):
    import matplotlib.image as mpimg

    png = render.render_thumbnail(_grid_drawing(tmp_path / "wide.dxf", False, 297, 210), tmp_path / "w.png", 300)
    h, w = mpimg.imread(png).shape[:2]
    assert w == 300 and 200 <= h <= 220
    assert _dark_span(png)[0] > 0.85


def test_names_wrap_at_spaces_underscores_and_hyphens():
    name = "QFN21LA(Cu) -508 Rev1_5_leadframe-outline"
    lines = render._wrap(name, 14).split("\n")
    assert all(len(line) <= 14 for line in lines)
    assert lines == ["QFN21LA(Cu) -", "508 Rev1_5_", "leadframe-", "outline"]
    assert "".join(lines).replace(" ", "") == name.replace(" ", "")
    assert render._wrap("short name", 28) == "short name"


def test_a_word_longer_than_a_line_is_cut():
    assert render._wrap("A" * 30 + "_b", 12).split("\n") == ["A" * 12, "A" * 12, "A" * 6 + "_b"]
