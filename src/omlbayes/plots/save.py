"""Saving figures with their texts: every PNG carries the texts drawn in it as metadata.

So a test (or a reader) can check what a figure says (its title, caption, labels, the
interval and threshold it names) without reading pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

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
    """``fig.savefig`` as PNG at ``DPI`` with the figure's texts in the metadata."""
    metadata = {TEXT_KEY: "\n".join(figure_texts(fig))}
    fig.savefig(target, format="png", dpi=savefig.pop("dpi", DPI), metadata=metadata, **savefig)


def png_texts(source: Path | str | bytes) -> str:
    """The texts saved in a PNG (a file or its bytes) by :func:`save_png` ("" when none)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return str(image.text.get(TEXT_KEY, "")) if hasattr(image, "text") else ""
