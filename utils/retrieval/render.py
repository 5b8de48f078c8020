"""Pictures of retrieval results: the query and its top-k matches side by side.

Drawn with ezdxf's drawing add-on on matplotlib (Agg backend, no display needed),
black lines on white. A drawing whose DXF source is missing or unreadable gets a
grey panel saying why instead of stopping the picture. Dimension texts are left out
(at strip size they are unreadable smudges over the drawing); dimension lines stay.
Names with Chinese characters need a font with CJK glyphs: without one they show as
boxes, and one warning says how to install such a font.
"""
from __future__ import annotations

import functools
import logging
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# ezdxf's font manager and matplotlib's font fallback are chatty about missing glyphs
for _name in ("ezdxf", "matplotlib.font_manager", "matplotlib.texmanager", "fontTools"):
    logging.getLogger(_name).setLevel(logging.ERROR)


CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "AR PL UMing CN")


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")


def has_cjk(text: str) -> bool:
    """True when ``text`` holds Chinese (or Japanese/Korean) characters."""
    return bool(_CJK.search(text))


def installed_cjk_font() -> Optional[str]:
    """The first font of :data:`CJK_FONTS` that matplotlib knows, or None."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


@functools.lru_cache(maxsize=1)
def warn_missing_cjk_font() -> None:
    """Say once per process that Chinese names will show as boxes, and how to fix it."""
    print("warning: no font with Chinese (CJK) glyphs is installed: Chinese characters in the picture's "
          "names show as empty boxes. Install one, e.g. `sudo apt install fonts-noto-cjk` (Debian/Ubuntu) or "
          "any font with CJK glyphs (Noto Sans CJK, Source Han Sans, WenQuanYi, SimHei), then remove "
          "matplotlib's font cache (~/.cache/matplotlib)", file=sys.stderr)


def _use_cjk_font(titles: Sequence[str]) -> None:
    """Titles with Chinese names: put the first installed CJK font before matplotlib's
    default, or warn (once) that there is none."""
    if not any(has_cjk(t) for t in titles):
        return
    font = installed_cjk_font()
    if font is None:
        warn_missing_cjk_font()
    elif font not in plt.rcParams["font.sans-serif"][:1]:
        plt.rcParams["font.sans-serif"] = [font] + list(plt.rcParams["font.sans-serif"])


@dataclass
class Panel:
    """One drawing to show: its DXF source (None: not available), title and caption."""

    source: Optional[str]
    title: str
    caption: str = ""


def _draw_dxf(ax, path: str) -> None:
    """Draw the modelspace of a DXF file into ``ax`` (raises on unreadable files)."""
    from ezdxf.addons.drawing import Frontend, RenderContext
    from ezdxf.addons.drawing.config import BackgroundPolicy, ColorPolicy, Configuration
    from ezdxf.addons.drawing.matplotlib import MatplotlibBackend
    from ezdxf.entities import Dimension

    from dataset.dxf_read import open_dxf

    class StripFrontend(Frontend):
        """Draws a DIMENSION's lines and arrows but not its text."""

        def draw_composite_entity(self, entity, properties) -> None:
            if isinstance(entity, Dimension):
                self.draw_entities(e for e in entity.virtual_entities() if e.dxftype() not in ("TEXT", "MTEXT"))
                return
            super().draw_composite_entity(entity, properties)

    doc, _recovered = open_dxf(path)
    msp = doc.modelspace()
    cfg = Configuration(background_policy=BackgroundPolicy.WHITE, color_policy=ColorPolicy.BLACK)
    StripFrontend(RenderContext(doc), MatplotlibBackend(ax), config=cfg).draw_layout(msp, finalize=True)


def _wrap(text: str, width: int = 28) -> str:
    """Break a long name into lines of at most ``width`` characters."""
    return "\n".join(text[i:i + width] for i in range(0, len(text), width)) or " "


def render_panels(panels: Sequence[Panel], out_path: str | Path, panel_size: float = 3.6, dpi: int = 90,
                  suptitle: str = "") -> Path:
    """Draw ``panels`` in one row and save a PNG.

    Args:
        panels: the query first, then its matches.
        out_path: the PNG to write (parent folders are created).
        panel_size: inches per panel.
        dpi: resolution (keeps a 5-panel picture well under 500 KB).
        suptitle: a line above the panels.
    Returns:
        the path written.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    n = max(len(panels), 1)
    _use_cjk_font([p.title for p in panels])
    fig, axes = plt.subplots(1, n, figsize=(panel_size * n, panel_size), squeeze=False)
    aspects = []  # width / height of each drawn drawing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs, tight_layout hints
        for ax, panel in zip(axes[0], panels):
            problem = ""
            if panel.source is None:
                problem = "no DXF source"
            elif not Path(panel.source).is_file():
                problem = f"DXF source not found:\n{_wrap(panel.source, 36)}"
            else:
                try:
                    _draw_dxf(ax, panel.source)
                    x0, x1 = ax.get_xlim()
                    y0, y1 = ax.get_ylim()
                    if x1 > x0 and y1 > y0:
                        aspects.append((x1 - x0) / (y1 - y0))
                except Exception as err:  # a picture must not stop on one bad drawing: say why in its panel
                    ax.cla()
                    problem = f"cannot draw:\n{type(err).__name__}"
            ax.axis("on")
            ax.set_adjustable("datalim")
            if problem:
                ax.set_facecolor("#eeeeee")
                ax.text(0.5, 0.5, problem, ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("#bbbbbb")
            title = _wrap(panel.title) + (f"\n{panel.caption}" if panel.caption else "")
            ax.set_title(title, fontsize=9)
        # panels shaped like the typical drawing (landscape sheets stay landscape)
        aspect = float(np.clip(np.median(aspects), 0.5, 2.5)) if aspects else 1.0
        fig.set_size_inches(panel_size * n, panel_size / aspect + 1.0 + (0.3 if suptitle else 0.0))
        if suptitle:
            fig.suptitle(suptitle, fontsize=10)
        fig.tight_layout()
        fig.savefig(out_path, dpi=dpi, facecolor="white")
    plt.close(fig)
    return out_path


__all__ = ["Panel", "render_panels", "has_cjk", "installed_cjk_font", "warn_missing_cjk_font"]
