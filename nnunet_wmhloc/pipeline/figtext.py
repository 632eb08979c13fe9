"""Figures drawn at the width the report shows them, so their text has the size it was given.

save_figure sets the figure's width to the page width it is shown at (CSS px, 96 per inch: a 9 pt label is
then 9 pt on the page), draws it, and records in the PNG's text chunks the smallest font size of its visible
text (MIN_FONT_KEY, pt) and the CSS width it is drawn for (WIDTH_KEY, px). The report shows each PNG at that
width; a browser test compares both with the width the page really gives the image."""
from __future__ import annotations

from pathlib import Path

CSS_DPI = 96          # CSS px per inch
DPI = 2 * CSS_DPI     # PNG pixels: twice the CSS width (sharp on high-density screens)
MIN_FONT_PT = 9.0     # the smallest text a figure may hold at its displayed width
MIN_FONT_KEY = "wmhloc:min_font_pt"
WIDTH_KEY = "wmhloc:css_width_px"
PAGE_PX = 1100        # the report's content width (report.CSS: max-width 1150px, 1em padding each side)
HALF_PX = 520         # a figure shown beside another (.fig: max-width 48%)


def min_font_pt(fig) -> float:
    """Smallest font size (pt) of the visible, non-empty text of a drawn figure."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and t.get_figure() is not None]
    return float(min(sizes)) if sizes else float("inf")


def save_figure(fig, path: Path, width_px: int = PAGE_PX, svg: bool = False) -> dict:
    """Save `fig` as a PNG (and an SVG beside it when `svg`) drawn `width_px` CSS px wide (its height kept);
    returns {"width_px", "min_font_pt"} as recorded in the PNG."""
    import matplotlib.pyplot as plt

    h = fig.get_size_inches()[1]
    fig.set_size_inches(width_px / CSS_DPI, h)
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("tight")  # everything inside the width (no bbox cropping: the width is the page's)
    fig.canvas.draw()  # tick labels exist only once drawn
    info = {"width_px": int(width_px), "min_font_pt": min_font_pt(fig)}
    meta = {MIN_FONT_KEY: f"{info['min_font_pt']:.2f}", WIDTH_KEY: str(info["width_px"])}
    path = Path(path)
    fig.savefig(path.with_suffix(".png"), dpi=DPI, metadata=meta)
    if svg:
        fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return info


def read_figure_info(png: Path) -> dict:
    """What save_figure recorded in `png` ({} for a PNG it did not write)."""
    from PIL import Image

    with Image.open(png) as im:
        text = dict(getattr(im, "text", {}) or {})
    if MIN_FONT_KEY not in text or WIDTH_KEY not in text:
        return {}
    return {"width_px": int(text[WIDTH_KEY]), "min_font_pt": float(text[MIN_FONT_KEY])}
