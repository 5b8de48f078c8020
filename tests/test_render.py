"""utils/render.py: the missing-CJK-font warning and dimension texts left out of strips."""
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
