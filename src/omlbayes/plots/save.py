"""Saving figures with their texts: every PNG carries the texts drawn in it as metadata.

So a test (or a reader) can check what a figure says (its title, caption, labels, the
interval and threshold it names) without reading pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

DPI = 150
TEXT_KEY = "omlbayes_texts"


def figure_texts(fig: Figure) -> list[str]:
    """Every non-empty text of ``fig`` (titles, captions, tick labels, legend entries)."""
    fig.draw_without_rendering()  # resolves tick labels
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_visible()]
    return [t for t in dict.fromkeys(texts) if t.strip()]


def save_png(fig: Figure, target: Path | str | BinaryIO, **savefig: object) -> None:
    """``fig.savefig`` as PNG at ``DPI`` with the figure's texts in the metadata.

    At the figure's own resolution with no other savefig options the figure is drawn once
    and its pixels written as savefig would write them (the same bytes): collecting the
    texts needs a draw, and a second one for savefig would nearly double the cost of the
    hundreds of school figures of a large run.
    """
    dpi = savefig.pop("dpi", DPI)
    if savefig or dpi != fig.dpi or not _plain_savefig_settings():
        metadata = {TEXT_KEY: "\n".join(figure_texts(fig))}
        fig.savefig(target, format="png", dpi=dpi, metadata=metadata, **savefig)
        return
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # resolves tick labels and the layout, as savefig's draw would
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_visible()]
    metadata = {TEXT_KEY: "\n".join(t for t in dict.fromkeys(texts) if t.strip())}
    mpl.image.imsave(
        target, canvas.buffer_rgba(), format="png", origin="upper", dpi=fig.dpi, metadata=metadata
    )


def _plain_savefig_settings() -> bool:
    """savefig's settings leave the drawn canvas as it is (no transparency, no forced
    colours, no tight box), so the one-draw path writes what savefig would."""
    rc = mpl.rcParams
    return (
        rc["savefig.facecolor"] == "auto"
        and rc["savefig.edgecolor"] == "auto"
        and not rc["savefig.transparent"]
        and rc["savefig.bbox"] in (None, "standard")
    )


def png_texts(source: Path | str | bytes) -> str:
    """The texts saved in a PNG (a file or its bytes) by :func:`save_png` ("" when none)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return str(image.text.get(TEXT_KEY, "")) if hasattr(image, "text") else ""
