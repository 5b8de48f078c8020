"""Pictures of retrieval results: the query and its top-k matches side by side.

Drawn with ezdxf's drawing add-on on matplotlib (Agg backend, no display needed),
black lines on white. A drawing whose DXF source is missing or unreadable gets a
grey panel saying why instead of stopping the picture. Dimension texts are left out
(at strip size they are unreadable smudges over the drawing); dimension lines stay.
Names and drawing texts with Chinese characters need a font with CJK glyphs (the
drawing's own fonts, such as ``txt.shx``, are rarely installed: texts of a drawing with
Chinese text are drawn with the first CJK font found); without one they show as boxes,
and one warning says how to install such a font. Thumbnails (:func:`render_thumbnail`)
frame the drawing's :func:`robust_extents`, so a stray entity far away does not shrink
it to a dot.
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
# (and axes._base about the limits a frame at equal scale widens)
for _name in ("ezdxf", "matplotlib.font_manager", "matplotlib.texmanager", "fontTools", "matplotlib.axes._base"):
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


@functools.lru_cache(maxsize=1)
def ezdxf_cjk_font():
    """The ``FontFace`` of an installed font with CJK glyphs that ezdxf's drawing add-on
    can draw text with (None: none installed). ezdxf keeps its own list of the system's
    fonts; a list made before such a font was installed is rebuilt once."""
    from ezdxf.fonts import fonts

    def find():
        for family in CJK_FONTS:
            face = fonts.find_best_match(family=family)
            if face is not None and face.family.casefold() == family.casefold():
                return face
        return None

    face = find()
    if face is None:
        try:
            fonts.build_system_font_cache()
        except OSError as err:  # an unwritable cache folder: the list in memory was still rebuilt
            print(f"warning: cannot save ezdxf's font list: {err}", file=sys.stderr)
        # ezdxf remembers the failed look-ups of the old list (ezdxf 1.x; no public way to forget them)
        getattr(fonts.font_manager, "_match_cache", {}).clear()
        face = find()
    return face


def _has_cjk_text(layout) -> bool:
    """True when a TEXT or MTEXT of ``layout`` holds Chinese (CJK) characters."""
    for e in layout.query("TEXT MTEXT"):
        text = e.text if e.dxftype() == "MTEXT" else e.dxf.get("text", "")
        if has_cjk(text or ""):
            return True
    return False


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


def robust_extents(boxes: np.ndarray, lo: float = 1.0, hi: float = 99.0, margin: float = 0.04
                   ) -> Optional[tuple[float, float, float, float]]:
    """The part of a drawing worth showing: ``(xmin, ymin, xmax, ymax)`` from entity
    ``boxes: [n, 4]`` (``xmin, ymin, xmax, ymax`` each).

    The core runs from the ``lo``-th percentile of the boxes' left (bottom) edges to the
    ``hi``-th of their right (top) edges, so that one stray entity far away (a point left
    at 1e8) does not shrink the drawing to a dot; it then grows to every entity lying
    within half the core's larger side of it (a frame or
    title block at the border stays whole), plus ``margin`` of its size on each side.
    Entities beyond are drawn but cut off. None without a finite box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(axis=1)]
    if not len(boxes):
        return None
    # "higher"/"lower": the extreme box is outside the core of any drawing of 2 to 101 boxes
    x0, y0 = (float(np.percentile(boxes[:, c], lo, method="higher")) for c in (0, 1))
    x1, y1 = (float(np.percentile(boxes[:, c], hi, method="lower")) for c in (2, 3))
    if x1 < x0 or y1 < y0:  # too few boxes to tell a stray one: all of them
        x0, y0, x1, y1 = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
    reach = max(x1 - x0, y1 - y0) / 2
    near = ((boxes[:, 0] >= x0 - reach) & (boxes[:, 2] <= x1 + reach)
            & (boxes[:, 1] >= y0 - reach) & (boxes[:, 3] <= y1 + reach))
    if near.any():
        x0, y0 = min(x0, boxes[near, 0].min()), min(y0, boxes[near, 1].min())
        x1, y1 = max(x1, boxes[near, 2].max()), max(y1, boxes[near, 3].max())
    pad = margin * max(x1 - x0, y1 - y0) or 1.0
    return float(x0 - pad), float(y0 - pad), float(x1 + pad), float(y1 + pad)


def _frame(ax, extents: Optional[tuple[float, float, float, float]]) -> None:
    """Show ``extents`` in ``ax`` at equal scale (the axes' shape decides what is added)."""
    if extents is None:
        return
    x0, y0, x1, y1 = extents
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="datalim")


def _draw_dxf(ax, path: str) -> Optional[tuple[float, float, float, float]]:
    """Draw the modelspace of a DXF file into ``ax`` and frame its :func:`robust_extents`
    (returned; None when no entity has a box). Raises on unreadable files."""
    from ezdxf.addons.drawing import Frontend, RenderContext
    from ezdxf.addons.drawing.config import BackgroundPolicy, ColorPolicy, Configuration
    from ezdxf.addons.drawing.matplotlib import MatplotlibBackend
    from ezdxf.entities import Dimension

    from dataset.dxf_read import modelspace_boxes, open_dxf

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
    ctx = RenderContext(doc)
    if _has_cjk_text(msp):  # the drawing's own fonts (txt.shx, ...) are rarely installed: draw with a CJK font
        face = ezdxf_cjk_font()
        if face is None:
            warn_missing_cjk_font()
        else:
            ctx.fonts = {style: face for style in ctx.fonts}
    StripFrontend(ctx, MatplotlibBackend(ax), config=cfg).draw_layout(msp, finalize=True)
    extents = robust_extents(modelspace_boxes(doc))
    _frame(ax, extents)
    return extents


_BREAK = re.compile(r"[^ _\-]*[ _\-]*")  # a word with the separators (space, _, -) that follow it


def _wrap(text: str, width: int = 28) -> str:
    """Break a long name into lines of at most ``width`` characters, after a space, ``_``
    or ``-`` where there is one (a word longer than ``width`` is cut)."""
    lines: list[str] = []
    line = ""
    for word in (w for w in _BREAK.findall(text) if w):
        while len(word) > width:  # a word too long for any line
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if len(line) + len(word.rstrip(" ")) > width and line:
            lines.append(line)
            line = ""
        line += word
    lines.append(line)
    return "\n".join(ln.rstrip(" ") for ln in lines if ln.strip()) or " "


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
                    extents = _draw_dxf(ax, panel.source)
                    if extents is not None:
                        aspects.append((extents[2] - extents[0]) / (extents[3] - extents[1]))
                except Exception as err:  # a picture must not stop on one bad drawing: say why in its panel
                    ax.cla()
                    problem = f"cannot draw:\n{type(err).__name__}"
            ax.axis("on")
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


def render_thumbnail(source: str | Path, out_path: str | Path, size_px: int = 320) -> Path:
    """Draw one drawing, without a title, into a PNG whose longer side is ``size_px``.

    The picture is shaped like the drawing's :func:`robust_extents` (a landscape sheet
    stays landscape at full width; the shape is clipped to 1:2.5 either way). Uses no
    pyplot state, so several threads may render at once. The PNG is written under a
    temporary name and moved into place, so a reader never sees half a file.

    Raises:
        DrawingError, OSError, ...: the DXF cannot be read or drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dataset.files import atomic_write

    dpi = 100
    fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs
        extents = _draw_dxf(ax, str(source))
        aspect = 1.0 if extents is None else float(np.clip(
            (extents[2] - extents[0]) / max(extents[3] - extents[1], 1e-12), 0.4, 2.5))
        width, height = (size_px, size_px / aspect) if aspect >= 1 else (size_px * aspect, size_px)
        fig.set_size_inches(width / dpi, height / dpi)
        _frame(ax, extents)
        ax.set_axis_off()
        return atomic_write(out_path, lambda tmp: fig.savefig(tmp, dpi=dpi, facecolor="white", format="png"))


__all__ = ["Panel", "render_panels", "render_thumbnail", "robust_extents", "has_cjk", "installed_cjk_font",
           "warn_missing_cjk_font", "ezdxf_cjk_font"]
