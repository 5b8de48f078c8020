"""Pictures of retrieval results: the query and its top-k matches side by side.

Drawn with ezdxf's drawing add-on on matplotlib (Agg backend, no display needed),
black lines on white. A drawing whose DXF source is missing or unreadable gets a
grey panel saying why instead of stopping the picture. Text in fonts the machine
lacks (e.g. Chinese without a CJK font) is drawn with placeholder glyphs; the
font warnings that causes are silenced.
"""
from __future__ import annotations

import logging
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


def _use_cjk_font() -> None:
    """Titles with Chinese names: put the first installed CJK font before matplotlib's default."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = [name for name in CJK_FONTS if name in installed]
    if found:
        plt.rcParams["font.sans-serif"] = found[:1] + list(plt.rcParams["font.sans-serif"])


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

    from dataset.dxf_read import open_dxf

    doc, _recovered = open_dxf(path)
    msp = doc.modelspace()
    cfg = Configuration(background_policy=BackgroundPolicy.WHITE, color_policy=ColorPolicy.BLACK)
    Frontend(RenderContext(doc), MatplotlibBackend(ax), config=cfg).draw_layout(msp, finalize=True)


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
    _use_cjk_font()
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


__all__ = ["Panel", "render_panels"]
